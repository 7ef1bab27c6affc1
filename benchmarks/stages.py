"""Where the time of a full analysis goes: wall time and peak RSS after each stage, in one process.

python benchmarks/stages.py benchmarks/data/moe_decode_op_x400.sqlite
"""

import resource
import sys
import time

t0 = time.perf_counter()
from nsysparse.analyses.context import AnalysisContext  # noqa: E402
from nsysparse.analyses.gaps import gap_report  # noqa: E402
from nsysparse.analyses.layers import layer_report  # noqa: E402
from nsysparse.analyses.ops import op_summary  # noqa: E402
from nsysparse.analyses.steps import step_table  # noqa: E402
from nsysparse.trace import open_trace  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


print(f"{'start-up':10s} {time.perf_counter() - t0:6.2f} s  peak {rss_mb():6.0f} MB")
with open_trace(sys.argv[1]) as t:
    ctx = AnalysisContext(t)
    for name, fn in (
        ("load", lambda: t.prefetch("kernels", "api", "memcpy", "memset", "nvtx")),
        ("map", lambda: ctx.mapping),
        ("ops", lambda: op_summary(ctx, by_kind=True)),
        ("steps", lambda: step_table(ctx)),
        ("layers", lambda: layer_report(ctx)),
        ("gaps", lambda: gap_report(ctx)),
    ):
        a = time.perf_counter()
        fn()
        print(f"{name:10s} {time.perf_counter() - a:6.2f} s  peak {rss_mb():6.0f} MB")
print(f"{'total':10s} {time.perf_counter() - t0:6.2f} s  peak {rss_mb():6.0f} MB")
