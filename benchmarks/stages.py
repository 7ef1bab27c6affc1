"""Where the time of a full analysis goes: a stage profile in one process.

    python benchmarks/stages.py benchmarks/data/moe_decode_op_x400.sqlite [--report] [--no-cache] [--repeat N]

Top-level stages (start-up, load, map, ops, steps, layers, gaps, and with --report the report's collection and
rendering) are timed in sequence, with the peak RSS after each. Inside them, the functions below are
wrapped and their cumulative time printed (a sub-stage's time is part of its stage's): reading each table,
the kernel ↔ launch join, the NVTX tree, naming, steps, layers, gap windows, bubbles, their classification.
With --repeat N the whole profile runs N times in fresh processes and the median of each line is printed.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

T0 = time.perf_counter()

SUB: dict[str, float] = defaultdict(float)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def wrap(owner: Any, attr: str, label: str, key: Callable[..., str] | None = None) -> None:
    """Replace owner.attr with a timer that adds its wall time to SUB[label] (per `key(*args)` when given)."""
    fn = getattr(owner, attr)

    def timed(*args: Any, **kw: Any) -> Any:
        a = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            SUB[label + (key(*args, **kw) if key else "")] += time.perf_counter() - a

    setattr(owner, attr, timed)


def instrument() -> None:
    from nsysparse.analyses import gaps as G
    from nsysparse.structure import mapping as M
    from nsysparse.trace import tables as TB
    from nsysparse.trace import trace as TR

    wrap(TB, "load", "  read ", key=lambda trace, kind, *a, **k: kind)
    wrap(TB, "nvtx", "  read nvtx")
    wrap(TR.Trace, "launches", "  join kernels ↔ launches")
    wrap(TR.Trace, "launches_of", "  join memcpy/memset ↔ launches")
    for attr, label in (
        ("classify_names", "  classify kernel names (rules)"),
        ("_NvtxAttribution", "  NVTX tree + attribution"),
        ("_find_steps", "  steps (NVTX or inferred)"),
        ("_find_layers", "  layers (templates / repeats)"),
        ("_nvtx_op_codes", "  naming: NVTX op ranges"),
        ("_gpu_ops_with_steps", "  GPU ops with steps"),
        ("_step_table", "  step table"),
        ("_layer_table", "  layer table"),
    ):
        wrap(M, attr, label)
    for attr, label in (
        ("_api_coverage", "  API coverage per thread"),
        ("_inter_step_gaps", "  inter-step gap windows"),
        ("_bubbles", "  bubble windows"),
        ("_classify", "  classify windows"),
        ("_in_step", "  in-step arrays"),
        ("_comm_coverage", "  collective coverage"),
        ("_largest_bubbles", "  largest bubbles"),
        ("_cause_table", "  cause table"),
        ("_host_nvtx", "  host NVTX at gaps"),
        ("_device_table", "  device table"),
    ):
        wrap(G, attr, label)


def profile(path: str, report: bool) -> list[tuple[str, float, float]]:
    from nsysparse import allocator
    from nsysparse.analyses.context import AnalysisContext
    from nsysparse.analyses.gaps import gap_report
    from nsysparse.analyses.layers import layer_report
    from nsysparse.analyses.ops import op_summary
    from nsysparse.analyses.steps import step_table
    from nsysparse.trace import open_trace

    allocator.tune()  # as the CLI does for its process
    instrument()
    rows = [("start-up", time.perf_counter() - T0, rss_mb())]
    with open_trace(path) as t:
        ctx = AnalysisContext(t)
        stages: list[tuple[str, Callable[[], object]]] = [
            ("load", lambda: t.prefetch("kernels", "api", "memcpy", "memset", "nvtx")),
            ("map", lambda: ctx.mapping),
            ("ops", lambda: op_summary(ctx, by_kind=True)),
            ("steps", lambda: step_table(ctx)),
            ("layers", lambda: layer_report(ctx)),
            ("gaps", lambda: gap_report(ctx)),
        ]
        if report:
            from nsysparse.report.collect import ReportInputs, collect
            from nsysparse.report.html import render

            box: dict[str, Any] = {}
            stages.append(("report: collect", lambda: box.setdefault("d", collect(ctx, ReportInputs()))))
            stages.append(("report: render", lambda: render(box["d"])))
        for name, fn in stages:
            before = dict(SUB)
            a = time.perf_counter()
            fn()
            rows.append((name, time.perf_counter() - a, rss_mb()))
            for label in SUB:
                if SUB[label] != before.get(label, 0.0):
                    rows.append((label, SUB[label] - before.get(label, 0.0), float("nan")))
    rows.append(("total", time.perf_counter() - T0, rss_mb()))
    return rows


def main() -> int:
    args = sys.argv[1:]
    report = "--report" in args
    repeat = int(args[args.index("--repeat") + 1]) if "--repeat" in args else 1
    if "--no-cache" in args:
        os.environ["NSYSPARSE_NO_CACHE"] = "1"
    path = next(a for a in args if not a.startswith("--") and not a.isdigit())
    if repeat == 1 or os.environ.get("_STAGES_CHILD"):
        rows = profile(path, report)
        for name, s, mb in rows:
            peak = f"peak {mb:6.0f} MB" if mb == mb else ""
            print(f"{name:36s} {s:6.2f} s  {peak}")
        return 0
    runs: list[list[tuple[str, float, float]]] = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, __file__, *args],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"_STAGES_CHILD": "1"},
            check=True,
        ).stdout
        rows = []
        for line in out.splitlines():
            name, rest = line[:36].rstrip(), line[36:].split()
            rows.append((name, float(rest[0]), float(rest[3]) if len(rest) > 3 else float("nan")))
        runs.append(rows)
    print(f"median of {repeat} runs")
    for i, (name, _, _) in enumerate(runs[0]):
        s = statistics.median(r[i][1] for r in runs if i < len(r))
        mbs = [r[i][2] for r in runs if i < len(r) and r[i][2] == r[i][2]]
        peak = f"peak {statistics.median(mbs):6.0f} MB" if mbs else ""
        print(f"{name:36s} {s:6.2f} s  {peak}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
