"""`compare`: two traces, keyed on logical ops, step time and gaps, with a verdict for CI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from nsysparse.cli.app import cli
from nsysparse.cli.models import MODEL_HELP, resolve_workload, workload_options
from nsysparse.cli.options import emit, load, output_options
from nsysparse.cli.render import Result
from nsysparse.cli.structure import analysis_context, mapping_options
from nsysparse.errors import NsysparseError, RegressionFound
from nsysparse.models.config import load_model

if TYPE_CHECKING:  # imported when a command runs (pandas, DuckDB, plotly), never for --help or a usage error
    pass


class NotComparable(NsysparseError):
    """The two traces cannot be judged against each other (exit code 1)."""


@cli.command(epilog="Exit codes: 0 neutral or improvement, 3 the step time regressed, 1 not comparable, nothing judged, or an error.")
@click.argument("base", metavar="BASE", type=click.Path(dir_okay=True, readable=False, path_type=str))
@click.argument("new", metavar="NEW", type=click.Path(dir_okay=True, readable=False, path_type=str))
@click.option("--threshold", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Smallest change that counts, % of base.")
@click.option("--min-us", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Smallest change that counts, µs.")
@click.option("--min-steps", type=click.IntRange(min=1), default=3, show_default=True, help="Fewer steps than this in either trace: not comparable.")
@click.option("--force", is_flag=True, help="Judge even when the traces are not comparable (different GPU or structure).")
@click.option("--top-kernels", type=click.IntRange(min=0), default=10, show_default=True, help="Top kernels listed (informational, not judged).")
@click.option("--model", "model_arg", default=None, help="Add TFLOP/s per GPU rows (informational). " + MODEL_HELP)
@workload_options
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True, help="GPUs a step is spread over (for the TFLOP/s rows).")
@mapping_options
@output_options(("table", "csv", "json", "markdown"))
@click.pass_context
def compare(
    ctx: click.Context,
    base: str,
    new: str,
    threshold: float,
    min_us: float,
    min_steps: int,
    force: bool,
    top_kernels: int,
    model_arg: str | None,
    phase: str | None,
    batch: int | None,
    seq: int | None,
    kv_len: int | None,
    causal: str,
    gpus: int,
    rules: tuple[str, ...],
    step_pattern: str,
    layer_pattern: str,
    nvtx_mode: str,
    device: int | None,
    fmt: str,
    out: str | None,
) -> None:
    """Compare NEW against BASE: step wall/period, gaps, one layer of each kind, every (layer kind, op),
    and the top kernels; per key base, new, Δ µs, Δ %, noise from the per-step spread, and a verdict.

    For CI: `nsysparse compare base.sqlite new.sqlite -f markdown -o comment.md` exits 3 on a regression."""
    from nsysparse.analyses.compare import compare_profiles, profile
    from nsysparse.models.flops import step_flops
    from nsysparse.rules import load_rules

    flops = None
    if model_arg:
        lm = load_model(model_arg)
        flops = step_flops(lm.spec, resolve_workload(lm, phase, batch, seq, kv_len, causal, "train"))
    profiles = []
    notes: list[str] = []
    rule_set = load_rules(rules or None)  # one rule set for both traces
    for path in (base, new):
        with load(path) as t:
            ac = analysis_context(t, rules, step_pattern, layer_pattern, nvtx_mode, device, rule_set)
            profiles.append(profile(ac, top_kernels=top_kernels, flops_per_step=flops, gpus=gpus))
            notes += [f"{Path(path).name}: {n}" for n in ac.notes]
    c = compare_profiles(profiles[0], profiles[1], threshold_pct=threshold, min_us=min_us, min_steps=min_steps, force=force)
    counts = c.table["verdict"].value_counts()
    row = c.step_row
    step_text = (
        "-"
        if row is None
        else f"{row['key']} {row['base_us']:.1f} → {row['new_us']:.1f} µs ({row['delta_us']:+.1f} µs, {row['delta_pct']:+.1f} %, noise {row['noise_us']:.1f} µs)"
    )
    causes = c.causes
    meta = {
        "verdict": c.verdict.upper() + (f" ({'; '.join(c.reasons)})" if c.reasons else ""),
        "step time": step_text + ("" if c.judged else " (not judged)"),
        "causes": ", ".join(f"{r.section} {r.key} {r.delta_us:+.1f} µs ({r.verdict})" for r in causes.head(5).itertuples())
        + (f" and {len(causes) - 5} more" if len(causes) > 5 else "")
        or "none",
        "judged keys": f"{int(counts.get('regression', 0))} regression(s), {int(counts.get('improvement', 0))} improvement(s), {int(counts.get('neutral', 0))} neutral",
        "base": f"{Path(base).name}: {c.base.gpu}, {c.base.steps} steps ({c.base.step_source})",
        "new": f"{Path(new).name}: {c.new.gpu}, {c.new.steps} steps ({c.new.step_source})",
        "rule": f"|Δ| > max({threshold:g} % of base, {min_us:g} µs, 3 standard errors)",
    }
    changed = c.table[c.table["verdict"].isin(["regression", "improvement"])]
    frames = {"all keys": c.table} if fmt == "csv" else {"changes": changed, "all keys": c.table}
    all_notes = list(dict.fromkeys(c.notes + notes))
    emit(ctx, Result(frames=frames, meta=meta, payload=c.payload() if fmt == "json" else None, notes=all_notes, title="nsysparse compare"), fmt, out)
    if not c.judged:
        raise NotComparable(f"{base} vs {new}: not comparable: {'; '.join(c.reasons)}", "Use --force to judge anyway" if c.step_key is not None else None)
    if c.verdict == "regression" and row is not None:
        slower = causes[causes["verdict"] == "regression"]
        why = ", ".join(f"{r.section} {r.key} {r.delta_us:+.1f} µs" for r in slower.head(3).itertuples()) or "no single key beyond its noise"
        raise RegressionFound(f"step {row['key']} {row['delta_us']:+.1f} µs ({row['delta_pct']:+.1f} %) beyond threshold and noise; causes: {why}")
