"""Per-kernel-name statistics: the numbers of `nsys stats -r cuda_gpu_kern_sum`, in microseconds.

Sorted as nsys sorts them: total time descending, then instances, then name. `share_pct` is the
kernel's share of summed kernel time (not of wall time).
"""

from __future__ import annotations

import pandas as pd

from nsysparse.analyses.context import AnalysisContext
from nsysparse.columns import Column
from nsysparse.trace import LAUNCH_COLUMNS, NAME_COLUMNS

COLUMNS = (
    Column("name", "str", "kernel name (demangled by default; --name short|mangled)"),
    Column("count", "int", "instances"),
    Column("total_us", "float", "summed duration"),
    Column("mean_us", "float", "mean duration"),
    Column("median_us", "float", "median duration (mean of the two middle values for an even count)"),
    Column("min_us", "float", "shortest instance"),
    Column("max_us", "float", "longest instance"),
    Column("stddev_us", "float", "sample standard deviation (0 for one instance)"),
    Column("share_pct", "float", "share of summed kernel time"),
)
LAUNCH_DOC = (
    Column("grid", "str", "grid dimensions x,y,z (with --by-launch-config)"),
    Column("block", "str", "block dimensions x,y,z (with --by-launch-config)"),
)


def kernel_summary(ctx: AnalysisContext, name: str = "demangled", by_launch_config: bool = False) -> pd.DataFrame:
    """One row per kernel name (and grid/block when `by_launch_config`) on the selected device(s). Columns: see COLUMNS."""
    stats = ctx.trace.kernel_stats(name=name, by_launch_config=by_launch_config, device_id=ctx.device_id)
    if len(stats) == 0:
        ctx.trace.require_rows("kernels", "kernel statistics")
        ctx.require_device()
    key = NAME_COLUMNS[name] if NAME_COLUMNS[name] in stats else "name"
    out = pd.DataFrame({"name": stats[key].astype(object).fillna("").astype(str)})
    if by_launch_config:
        out["grid"] = stats[list(LAUNCH_COLUMNS[:3])].astype(str).agg(",".join, axis=1)
        out["block"] = stats[list(LAUNCH_COLUMNS[3:])].astype(str).agg(",".join, axis=1)
    out["count"] = stats["count"].to_numpy()
    for col in ("total", "mean", "median", "min", "max", "stddev"):
        out[f"{col}_us"] = stats[f"{col}_ns"].to_numpy(dtype=float) / 1e3
    total = out["total_us"].sum()
    out["share_pct"] = out["total_us"] / total * 100.0 if total else 0.0
    out = out.sort_values(["total_us", "count", "name"], ascending=[False, True, True], kind="stable")
    return out.reset_index(drop=True)
