"""Start-up: `nsysparse --help` imports no pandas, DuckDB or plotly, and lists the commands as they describe
themselves (the group's static table of modules and help texts must follow the commands)."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from nsysparse.cli import cli
from nsysparse.cli.app import COMMANDS, SHORT_HELP

HEAVY = ("pandas", "duckdb", "plotly", "numpy")


def _run(args: list[str]) -> tuple[set[str], object]:
    """The heavy modules imported by `nsysparse ARGS` in a fresh process, and its exit code."""
    code = (
        "import sys\n"
        "from nsysparse.cli import main\n"
        f"sys.argv = ['nsysparse', *{args!r}]\n"
        "code = 0\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        f"sys.stderr.write('MODULES:' + ','.join(m for m in {HEAVY!r} if m in sys.modules) + '\\n')\n"
        "sys.stderr.write(f'CODE:{code}\\n')\n"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr.splitlines()
    line = next(x for x in err if x.startswith("MODULES:"))
    exit_code = next(x for x in err if x.startswith("CODE:"))[len("CODE:") :]
    return set(filter(None, line[len("MODULES:") :].split(","))), exit_code


def _modules_after(args: list[str]) -> set[str]:
    return _run(args)[0]


def test_help_imports_nothing_heavy() -> None:
    assert _modules_after(["--help"]) == set()
    assert _modules_after(["--version"]) == set()
    assert _modules_after(["no-such-command"]) == set()


def test_a_command_still_loads_pandas_when_it_runs(tmp_path) -> None:
    missing = tmp_path / "missing.sqlite"
    assert "pandas" in _modules_after(["kernels", str(missing)])  # it ran (and failed on the file): the analysis was imported


# every command but `generate`, whose options are built from the workload generator's tables (nsysparse.workload.config),
# and those whose --help lists the phases of the FLOP model (--phase: models.flops.PHASES, defined once there)
LIGHT = sorted(set(COMMANDS) - {"generate", "mfu", "predict", "simdiff", "compare", "report"})


@pytest.mark.parametrize("name", LIGHT)
def test_subcommand_help_imports_nothing_heavy(name: str) -> None:
    mods, code = _run([name, "--help"])
    assert mods == set() and code == "0", (mods, code)


def test_usage_errors_import_nothing_heavy() -> None:
    for args in (["ops"], ["layers"], ["ops", "--no-such-option", "t.sqlite"], ["layers", "--nvtx", "bad", "t.sqlite"], ["mfu", "t.sqlite"]):
        mods, code = _run(args)
        assert mods == set() and code == "2", (args, mods, code)


def test_constants_spelled_in_the_cli_agree() -> None:
    from nsysparse.cli import structure as cli_structure
    from nsysparse.structure.mapping import NVTX_MODES

    assert cli_structure.NVTX_MODES == NVTX_MODES


def test_static_table_follows_the_commands() -> None:
    ctx = click.Context(cli)
    names = cli.list_commands(ctx)
    assert sorted(names) == sorted(COMMANDS) == sorted(SHORT_HELP)
    for name in names:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None and cmd.callback is not None
        assert cmd.callback.__module__ == COMMANDS[name], name
        first = " ".join((cmd.help or "").split("\n\n")[0].split())
        assert SHORT_HELP[name] == first, name


def test_help_lists_every_command_as_before() -> None:
    """The lazy listing (a fresh process, no command imported) names every command with the start of its own help."""
    out = subprocess.run([sys.executable, "-m", "nsysparse", "--help"], capture_output=True, text=True, check=True).stdout
    rows = out.split("Commands:")[1].strip().splitlines()
    listed = {}
    for row in rows:
        name, _, text = row.strip().partition(" ")
        listed[name] = " ".join(text.split())
    ctx = click.Context(cli)
    assert sorted(listed) == sorted(cli.list_commands(ctx))
    for name, text in listed.items():
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        own = " ".join((cmd.help or "").split())
        assert text and own.startswith(text.removesuffix("...").rstrip(" ,.;:")), (name, text)
