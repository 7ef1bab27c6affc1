"""Shared test fixtures: the trace builder, public-trace lookup, and a CLI runner that checks hygiene."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from nsysbuilder import TraceBuilder

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
PUBLIC = Path(os.environ.get("NSYSPARSE_SHARED", ROOT.parent / "shared")) / "traces" / "public"

# Strings planted by the builder in environment/host fields; no command may print them.
SECRETS = ("hunter2", "secret-host", "alice-secret", "API_TOKEN", "nsysparse-scrubbed")


def public_trace(relpath: str) -> Path:
    p = PUBLIC / relpath
    if not p.exists():
        pytest.skip(f"public trace {relpath} not available (../shared/traces/public absent)")
    return p


# Golden files written or removed by this session's --update-golden run (tests/test_golden.py), reported at the end.
GOLDEN_CHANGED = pytest.StashKey[list[str]]()


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite tests/golden/ from the current code instead of comparing with it (then review the diff).",
    )


def pytest_configure(config):
    config.stash[GOLDEN_CHANGED] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not config.getoption("--update-golden"):
        return
    changed = config.stash.get(GOLDEN_CHANGED, [])
    terminalreporter.section("golden files")
    if changed:
        terminalreporter.write_line(f"{len(changed)} golden file(s) changed:")
        for p in changed:
            terminalreporter.write_line(f"  {p}")
    else:
        terminalreporter.write_line("golden files unchanged")


FIXTURE_NAMES = sorted(p.name for p in FIXTURES.iterdir() if (p / "trace.sqlite").exists()) if FIXTURES.exists() else []


def pytest_collection_modifyitems(config, items):
    """GPU tests run only where torch sees a CUDA device."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU (marked gpu)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def fixture_trace(name: str) -> Path:
    p = FIXTURES / name / "trace.sqlite"
    if not p.exists():
        pytest.skip(f"fixture {name} not present")
    return p


@pytest.fixture
def builder():
    def make(era: str = "2024.5", **kw) -> TraceBuilder:
        return TraceBuilder(era, **kw)

    return make


@pytest.fixture
def run():
    """Invoke the CLI; returns the Result. Asserts no traceback and no leaked secrets on any output."""
    from nsysparse.cli import cli

    runner = CliRunner()

    def invoke(*args: str, expect: int | None = 0):
        res = runner.invoke(cli, [str(a) for a in args], catch_exceptions=True)
        text = res.output  # stdout and stderr as a terminal would show them
        assert "Traceback" not in text, text
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise res.exception
        for s in SECRETS:
            assert s not in text, f"secret {s!r} leaked: {text[:500]}"
        if expect is not None:
            assert res.exit_code == expect, f"exit {res.exit_code} != {expect}: {text[-2000:]}"
        return res

    return invoke
