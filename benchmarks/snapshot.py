"""Every frame a full analysis produces, saved, and two saves compared: the check that a speed-up changed nothing.

    python benchmarks/snapshot.py save TRACE OUT.pkl      # mapping frames, ops, steps, layers, gaps, notes
    python benchmarks/snapshot.py compare A.pkl B.pkl     # exit 1 and name the first frame that differs

Run `save` with the code before a change and after it (e.g. from two checkouts with PYTHONPATH), then
`compare`: frames must be equal exactly (values, dtypes, column order, index), notes identical.
"""

from __future__ import annotations

import pickle
import sys
from dataclasses import fields, is_dataclass
from typing import Any

import pandas as pd


def frames(trace_path: str) -> dict[str, Any]:
    from nsysparse.analyses.gaps import gap_report
    from nsysparse.analyses.layers import layer_report
    from nsysparse.analyses.ops import op_summary
    from nsysparse.analyses.steps import step_table
    from nsysparse.cli.structure import analysis_context
    from nsysparse.structure.mapping import DEFAULT_LAYER_PATTERN
    from nsysparse.structure.steps import DEFAULT_STEP_PATTERN
    from nsysparse.trace import open_trace

    out: dict[str, Any] = {}
    with open_trace(trace_path) as t:
        ctx = analysis_context(t, (), DEFAULT_STEP_PATTERN, DEFAULT_LAYER_PATTERN, "auto", None)
        m = ctx.full_mapping
        for f in fields(m) if is_dataclass(m) else ():
            v = getattr(m, f.name)
            if isinstance(v, pd.DataFrame | pd.Series | list | tuple | str | int | float):
                out[f"mapping.{f.name}"] = v
        out["mapping.op_instances"] = m.op_instances
        out["ops"] = op_summary(ctx, by_kind=True)
        out["steps"] = step_table(ctx)
        for name, report in (("layers", layer_report(ctx)), ("gaps", gap_report(ctx))):
            for f in fields(report):
                out[f"{name}.{f.name}"] = getattr(report, f.name)
        out["notes"] = list(ctx.notes)
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    problems = [f"{k}: only in one save" for k in sorted(set(a) ^ set(b))]
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        try:
            if isinstance(x, pd.DataFrame):
                pd.testing.assert_frame_equal(x, y, check_exact=True)
            elif isinstance(x, pd.Series):
                pd.testing.assert_series_equal(x, y, check_exact=True)
            elif x != y:
                problems.append(f"{k}: {x!r} != {y!r}")
        except AssertionError as e:
            problems.append(f"{k}: {str(e).splitlines()[0:6]}")
    return problems


def main() -> int:
    cmd, *args = sys.argv[1:]
    if cmd == "save":
        from nsysparse import allocator

        allocator.tune()  # as the CLI does for its process
        with open(args[1], "wb") as fh:
            pickle.dump(frames(args[0]), fh)
        return 0
    if cmd == "compare":
        with open(args[0], "rb") as fa, open(args[1], "rb") as fb:
            problems = compare(pickle.load(fa), pickle.load(fb))
        for p in problems:
            print(p)
        print("equal" if not problems else f"{len(problems)} differ")
        return 1 if problems else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
