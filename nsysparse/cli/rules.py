"""`rules list | check | test`: inspect the rule packs, their coverage of a trace, and their tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from nsysparse.cli.app import cli
from nsysparse.cli.options import emit, load, output_options, trace_argument
from nsysparse.cli.render import Result
from nsysparse.errors import NsysparseError
from nsysparse.resources import data_dir

if TYPE_CHECKING:  # imported when a command runs (pandas, DuckDB, plotly), never for --help or a usage error
    pass

rules_option = click.option(
    "--rules", "rules", multiple=True, type=click.Path(exists=True), help="Rule pack file or folder (repeatable); default: the bundled packs."
)


@cli.group(name="rules")
def rules_group() -> None:
    """Kernel → op rule packs (TOML under rules/; format in rules/README.md)."""


@rules_group.command(name="list")
@rules_option
@output_options(("table", "csv", "json"))
@click.pass_context
def rules_list(ctx: click.Context, rules: tuple[str, ...], fmt: str, out: str | None) -> None:
    """List class rules and layer templates, pack by pack."""
    import pandas as pd

    from nsysparse.rules import load_rules

    rs = load_rules(rules or None)
    cls = pd.DataFrame(
        [
            {
                "id": r.id,
                "pack": r.pack,
                "class": r.cls,
                "priority": r.priority,
                "short": r.short.pattern if r.short else "",
                "name": r.name.pattern if r.name else "",
            }
            for r in rs.classes
        ]
    )
    tpl = pd.DataFrame([{"id": t.id, "pack": t.pack, "role": t.role, "kind": t.kind, "ops": " ".join(s.op for s in t.slots)} for t in rs.templates])
    emit(
        ctx, Result(frames={"class rules": cls, "templates": tpl}, meta={"packs": ", ".join(rs.packs), "digest": rs.digest}, title="nsysparse rules"), fmt, out
    )


@rules_group.command(name="check")
@trace_argument()
@rules_option
@click.option("--max-unclassified", type=click.FloatRange(0, 100), default=None, help="Exit 1 when more than this % of kernel time is unclassified (for CI).")
@click.option("--limit", type=click.IntRange(min=1), default=30, show_default=True, help="Unclassified kernels to list.")
@output_options(("table", "csv", "json"))
@click.pass_context
def rules_check(ctx: click.Context, trace: str, rules: tuple[str, ...], max_unclassified: float | None, limit: int, fmt: str, out: str | None) -> None:
    """Kernels of TRACE that no rule classifies, by share of kernel time, and time per class."""
    from nsysparse.analyses.context import AnalysisContext
    from nsysparse.analyses.coverage import rule_coverage

    with load(trace) as t:
        ac = AnalysisContext(t, rule_paths=rules)
        rs = ac.rules
        unmatched, per_class, classified = rule_coverage(ac)
        share = (1 - classified) * 100
        result = Result(
            frames={"unclassified kernels": unmatched.head(limit), "kernel time per class": per_class},
            meta={"classified": f"{classified * 100:.2f} % of kernel time", "packs": ", ".join(rs.packs)},
            title="nsysparse rules check",
        )
        emit(ctx, result, fmt, out, t)
    if max_unclassified is not None and share > max_unclassified:
        raise NsysparseError(
            f"{share:.2f} % of kernel time is unclassified, above --max-unclassified {max_unclassified:g}", "Add rules for the kernels listed above"
        )


def default_names_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "fixtures" / "kernels"


@rules_group.command(name="test")
@rules_option
@click.option(
    "--names",
    "names_dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Folder of <pack>.tsv kernel-name lists (default: fixtures/kernels of the source tree).",
)
@output_options(("table", "csv", "json"))
@click.pass_context
def rules_test(ctx: click.Context, rules: tuple[str, ...], names_dir: str | None, fmt: str, out: str | None) -> None:
    """Validate the packs (schema, regexes, ids) and test each against its list of real kernel names:
    expected classes, rule examples, and no dead rules. Exit 1 on any failure."""
    import pandas as pd

    from nsysparse.rules import load_rules
    from nsysparse.rules.check import test_packs

    rs = load_rules(rules or None)
    folder = Path(names_dir) if names_dir else default_names_dir()
    if not folder.is_dir():
        raise NsysparseError(f"{folder}: no kernel-name lists here", "Pass --names DIR with <pack>.tsv files")
    res = test_packs(rs, folder)
    df = pd.DataFrame(
        [{"pack": r.pack, "rules": r.rules, "templates": r.templates, "names": r.names, "failures": len(r.failures), "dead_rules": len(r.dead)} for r in res]
    )
    problems = [f for r in res for f in r.failures] + [f"dead rule {d} (matches no listed kernel name)" for r in res for d in r.dead]
    emit(
        ctx,
        Result(
            frames={"packs": df},
            meta={"rules folder": str(data_dir("rules")) if not rules else ", ".join(rules), "names": str(folder)},
            notes=problems[:50],
            title="nsysparse rules test",
        ),
        fmt,
        out,
    )
    if problems:
        raise NsysparseError(f"{len(problems)} rule test failure(s); the first: {problems[0]}")
