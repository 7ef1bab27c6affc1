"""Golden outputs: every fixture's `ops`, `layers`, `steps` and `gaps` tables, compared with a tolerance.

The files under tests/golden/<fixture>/ are what the commands write with their default options (see
tests/golden/README.md). `pytest --update-golden` rewrites them instead of comparing; the diff is then reviewed
like any other change.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURE_NAMES, FIXTURES, GOLDEN_CHANGED

from nsysparse.analyses.gaps import gap_report
from nsysparse.analyses.layers import layer_report
from nsysparse.analyses.ops import op_summary
from nsysparse.analyses.steps import step_table
from nsysparse.cli import cli
from nsysparse.cli.render import Result, write
from nsysparse.cli.structure import analysis_context
from nsysparse.trace import open_trace

GOLDEN = Path(__file__).parent / "golden"
RTOL, ATOL = 1e-6, 1e-3
MAX_DIFFS = 20

# Per command, the golden files it owns. The first CSV of each command is exactly what `-f csv` prints.
FILES = {
    "ops": ("ops.csv",),
    "layers": ("layer_ops.csv", "layers.csv", "reconciliation.csv", "layer_unmapped.csv", "layers.json"),
    "steps": ("steps.csv",),
    "gaps": ("gaps.csv", "gap_devices.csv", "gap_causes.csv", "gap_bubbles.csv", "gap_bubble_steps.csv", "gaps.json"),
}
ALL_FILES = tuple(f for files in FILES.values() for f in files)
# JSON keys whose record lists are already stored as CSV files.
LAYER_TABLE_KEYS = ("ops", "layer_totals", "reconciliation", "top_unmapped")
GAP_TABLE_KEYS = ("devices", "gaps", "causes", "largest_bubbles", "bubbles_per_step")


# ---- generation: the library calls the commands make, with the commands' own default options ----------------


def cli_default(command: str, param: str) -> Any:
    """The value the command gives this option when it is not passed (click resolves it, as on a command line)."""
    with cli.get_command(None, command).make_context(command, ["TRACE"]) as ctx:
        return ctx.params[param]


def csv_text(df: pd.DataFrame) -> str:
    """The CSV text `-f csv` prints for this frame (the same writer the commands use)."""
    return _render(Result(frames={"table": df}), "csv")


def json_text(payload: dict[str, Any]) -> str:
    return _render(Result(payload=payload), "json")


def _render(result: Result, fmt: str) -> str:
    buf = io.StringIO()
    with redirect_stdout(buf):
        write(result, fmt, None)
    return buf.getvalue()


def generate(name: str) -> dict[str, Any]:
    """Map the fixture once and render every golden file; also the full JSON payloads, for the CLI check."""
    with open_trace(str(FIXTURES / name / "trace.sqlite")) as t:
        args = {p: cli_default("ops", p) for p in ("rules", "step_pattern", "layer_pattern", "nvtx_mode")}
        ctx = analysis_context(t, **args, device=None)
        ops = op_summary(ctx).drop(columns=["layer_kind"])
        lr = layer_report(ctx, top_unmapped=cli_default("layers", "top_unmapped"))
        steps = step_table(ctx)
        gr = gap_report(ctx, min_bubble_us=cli_default("gaps", "min_bubble_us"), top=cli_default("gaps", "top"))
        notes = ctx.notes
    layers_payload, gaps_payload = lr.payload(), gr.payload()
    layers_rest = {k: v for k, v in layers_payload.items() if k not in LAYER_TABLE_KEYS} | {"notes": notes}
    gaps_rest = {k: v for k, v in gaps_payload.items() if k not in GAP_TABLE_KEYS}
    files = {
        "ops.csv": csv_text(ops),
        "layer_ops.csv": csv_text(lr.ops),
        "layers.csv": csv_text(lr.kinds),
        "reconciliation.csv": csv_text(lr.reconciliation),
        "layer_unmapped.csv": csv_text(lr.unmapped),
        "layers.json": json_text(layers_rest),
        "steps.csv": csv_text(steps),
        "gaps.csv": csv_text(gr.gaps),
        "gap_devices.csv": csv_text(gr.devices),
        "gap_causes.csv": csv_text(gr.causes),
        "gap_bubbles.csv": csv_text(gr.bubbles),
        "gap_bubble_steps.csv": csv_text(gr.bubble_steps),
        "gaps.json": json_text(gaps_rest),
    }
    assert set(files) == set(ALL_FILES)
    return {"files": files, "json": {"layers": json_text(layers_payload), "gaps": json_text(gaps_payload)}}


@pytest.fixture(scope="session")
def outputs() -> Callable[[str], dict[str, Any]]:
    """Each fixture is mapped once per session, however many of its files are checked."""
    cache: dict[str, dict[str, Any]] = {}

    def get(name: str) -> dict[str, Any]:
        if name not in cache:
            cache[name] = generate(name)
        return cache[name]

    return get


# ---- comparison ------------------------------------------------------------------------------------------------


def _numeric(values: pd.Series) -> pd.Series | None:
    """Float values of a column of CSV strings (empty -> NaN), or None if any cell is not a number."""
    nums = pd.to_numeric(values.replace("", np.nan), errors="coerce")
    return None if (nums.isna() & (values != "")).any() else nums.astype(float)


def _read_csv(text: str) -> pd.DataFrame:
    if not text.strip():
        return pd.DataFrame()
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


def delta(x: float, y: float) -> str:
    return f" (Δ {y - x:+.6g})" if math.isfinite(x) and math.isfinite(y) else ""


def diff_csv(expected: str, actual: str) -> list[str]:
    """Readable differences: columns, row keys (string columns, exact) and numeric cells beyond the tolerance."""
    exp, act = _read_csv(expected), _read_csv(actual)
    if list(exp.columns) != list(act.columns):
        missing = [c for c in exp.columns if c not in act.columns]
        added = [c for c in act.columns if c not in exp.columns]
        return [f"columns differ: expected {list(exp.columns)}, got {list(act.columns)} (missing {missing}, added {added})"]
    numeric = {}
    for c in exp.columns:
        e, a = _numeric(exp[c]), _numeric(act[c])
        if e is not None and a is not None:
            numeric[c] = (e.to_numpy(), a.to_numpy())
    # A row is named by its string columns (compared exactly) and its integer columns (step, device_id, ...).
    integer = [c for c in numeric if not exp[c].str.contains(r"[.eEn]").any()]
    keys = [c for c in exp.columns if c not in numeric or c in integer]

    def key(df: pd.DataFrame, i: int) -> str:
        return ", ".join(f"{c}={df.at[i, c]}" if c in integer else f"{c}={df.at[i, c]!r}" for c in keys) or f"row {i}"

    if len(exp) != len(act):
        ek = Counter(key(exp, i) for i in range(len(exp)))
        ak = Counter(key(act, i) for i in range(len(act)))
        out = [f"row count differs: expected {len(exp)}, got {len(act)}"]
        out += [f"  only expected: {k}" for k in (ek - ak)]
        out += [f"  only actual:   {k}" for k in (ak - ek)]
        return out
    out = []
    for i in range(len(exp)):
        for c in exp.columns:
            e, a = exp.at[i, c], act.at[i, c]
            if c in numeric:
                x, y = numeric[c][0][i], numeric[c][1][i]
                if not ((math.isnan(x) and math.isnan(y)) or np.isclose(y, x, rtol=RTOL, atol=ATOL)):
                    out.append(f"row {i} [{key(exp, i)}] {c}: expected {e or '(empty)'}, got {a or '(empty)'}{delta(x, y)}")
            elif e != a:
                out.append(f"row {i} [{key(exp, i)}] {c}: expected {e!r}, got {a!r}")
    return out


def diff_json(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Same structure, exact strings/bools/nulls, numbers within the tolerance."""
    number = (int, float)
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{path}: key {k!r} missing" for k in expected if k not in actual]
        out += [f"{path}: key {k!r} added" for k in actual if k not in expected]
        for k in expected:
            if k in actual:
                out += diff_json(expected[k], actual[k], f"{path}.{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: expected {len(expected)} items, got {len(actual)}: expected {expected!r}, got {actual!r}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in diff_json(e, a, f"{path}[{i}]")]
    if isinstance(expected, number) and isinstance(actual, number) and not isinstance(expected, bool) and not isinstance(actual, bool):
        return [] if math.isclose(actual, expected, rel_tol=RTOL, abs_tol=ATOL) else [f"{path}: expected {expected!r}, got {actual!r}"]
    return [] if expected == actual and type(expected) is type(actual) else [f"{path}: expected {expected!r}, got {actual!r}"]


def differences(filename: str, expected: str, actual: str) -> list[str]:
    if filename.endswith(".json"):
        return diff_json(json.loads(expected), json.loads(actual))
    return diff_csv(expected, actual)


# ---- tests -----------------------------------------------------------------------------------------------------

CASES = [pytest.param(name, f, id=f"{name}/{f}") for name in FIXTURE_NAMES for f in ALL_FILES]


@pytest.mark.parametrize(("name", "filename"), CASES)
def test_golden(name: str, filename: str, outputs, request) -> None:
    actual = outputs(name)["files"][filename]
    path = GOLDEN / name / filename
    if request.config.getoption("--update-golden"):
        if not path.exists() or path.read_text(encoding="utf-8") != actual:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual, encoding="utf-8")
            request.config.stash[GOLDEN_CHANGED].append(str(path.relative_to(GOLDEN.parent.parent)))
        return
    assert path.exists(), f"{path} missing: run pytest tests/test_golden.py --update-golden and review the new file"
    diffs = differences(filename, path.read_text(encoding="utf-8"), actual)
    if diffs:
        shown = "\n".join(diffs[:MAX_DIFFS]) + (f"\n... and {len(diffs) - MAX_DIFFS} more" if len(diffs) > MAX_DIFFS else "")
        pytest.fail(
            f"{name}/{filename} differs from {path} ({len(diffs)} difference(s)):\n{shown}\n"
            "If the change is intended, run pytest tests/test_golden.py --update-golden and review the diff.",
            pytrace=False,
        )


def test_no_stale_golden(request) -> None:
    """Every golden folder belongs to a fixture and holds exactly the expected files (--update-golden prunes)."""
    stale = [p for p in sorted(GOLDEN.glob("*/*")) if p.parent.name not in FIXTURE_NAMES or p.name not in ALL_FILES]
    stale += [p for p in sorted(GOLDEN.iterdir()) if p.is_dir() and p.name not in FIXTURE_NAMES]
    if request.config.getoption("--update-golden"):
        for p in sorted(set(stale), key=lambda p: len(p.parts), reverse=True):
            if p.is_dir():
                p.rmdir()
            else:
                p.unlink()
            request.config.stash[GOLDEN_CHANGED].append(f"{p.relative_to(GOLDEN.parent.parent)} (removed)")
        return
    assert not stale, f"golden files without a fixture or outside the expected set: {[str(p) for p in stale]}"


# One fixture through the real commands: the generator above makes the same calls the CLI makes, so the
# golden CSVs are byte for byte what `-f csv` prints (and the JSON what `-f json` prints, less the tables).
CLI_FIXTURE = "moe_decode_nonvtx"
CLI_CASES = [("ops", "ops.csv"), ("layers", "layer_ops.csv"), ("steps", "steps.csv"), ("gaps", "gaps.csv"), ("layers", "json"), ("gaps", "json")]


@pytest.mark.parametrize(("command", "what"), CLI_CASES, ids=[f"{c}-{w}" for c, w in CLI_CASES])
def test_golden_matches_cli(command: str, what: str, outputs, run) -> None:
    if CLI_FIXTURE not in FIXTURE_NAMES:
        pytest.skip(f"fixture {CLI_FIXTURE} not present")
    out = outputs(CLI_FIXTURE)
    fmt = "json" if what == "json" else "csv"
    printed = run(command, FIXTURES / CLI_FIXTURE / "trace.sqlite", "-f", fmt).stdout
    if what == "json":
        assert json.loads(printed) == json.loads(out["json"][command])
    else:
        assert printed == out["files"][what]
