"""Per-kernel-name statistics: the numbers of `nsys stats -r cuda_gpu_kern_sum`, in microseconds.

Sorted as nsys sorts them: total time descending, then instances, then name. `share_pct` is the
kernel's share of summed kernel time (not of wall time).

When the kernels are already in memory (the report maps the trace first), the statistics come from that
frame, grouped on the name codes, instead of another scan of the export by SQL: the same rows (valid, with
known timestamps) and the same definitions.
"""

from __future__ import annotations

import numpy as np
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


def kernel_summary(ctx: AnalysisContext, name: str = "demangled", by_launch_config: bool = False, from_frame: bool = False) -> pd.DataFrame:
    """One row per kernel name (and grid/block when `by_launch_config`) on the selected device(s). Columns: see COLUMNS.
    `from_frame`: from the kernel frame even when it is not loaded yet (the report: its numbers then do not depend
    on whether the mapping came from the cache)."""
    in_memory = (from_frame or ctx.trace.is_loaded("kernels")) and name in ("demangled", "short") and not by_launch_config
    stats = (
        _frame_stats(ctx, NAME_COLUMNS[name]) if in_memory else ctx.trace.kernel_stats(name=name, by_launch_config=by_launch_config, device_id=ctx.device_id)
    )
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


def _frame_stats(ctx: AnalysisContext, name_col: str) -> pd.DataFrame:
    """`Trace.kernel_stats` of the loaded kernel frame: per name, count, total/mean/median/min/max/sample stddev ns
    (median: the mean of the two middle values for an even count; stddev 0 for one instance)."""
    k = ctx.trace.kernels(("start_ns", "end_ns", "device_id", name_col))
    names = k[name_col]
    codes = names.cat.codes.to_numpy().astype(np.int64) + 1  # 0: no name
    dur = k["end_ns"].to_numpy() - k["start_ns"].to_numpy()
    if ctx.device_id is not None:
        on = k["device_id"].to_numpy() == ctx.device_id
        codes, dur = codes[on], dur[on]
    ng = len(names.cat.categories) + 1
    count = np.bincount(codes, minlength=ng)
    present = np.flatnonzero(count)
    if len(dur) == 0:
        return pd.DataFrame(columns=[name_col, "count", "total_ns", "mean_ns", "median_ns", "min_ns", "max_ns", "stddev_ns"])
    lo, span = int(dur.min()), int(dur.max()) - int(dur.min()) + 1
    if ng * span < 2**62:  # durations sorted within each name: one sort of a packed (name, duration) key
        key = np.sort(codes * span + (dur - lo))
        sv = key % span + lo
    else:
        sv = dur[np.lexsort((dur, codes))]
    n = count[present]
    start = np.concatenate(([0], np.cumsum(count)[:-1]))[present]
    total = np.add.reduceat(sv, start) if len(sv) else np.zeros(0, dtype=np.int64)
    mid = start + (n - 1) // 2
    median = np.where(n % 2 == 1, sv[mid].astype(np.float64), (sv[mid].astype(np.float64) + sv[np.minimum(mid + 1, start + n - 1)]) / 2)
    mean = total / n
    dev = sv - np.repeat(mean, n)
    ss = np.add.reduceat(dev * dev, start)
    stddev = np.where(n > 1, np.sqrt(ss / np.maximum(n - 1, 1)), 0.0)
    label = pd.Series(pd.Categorical.from_codes(present - 1, categories=names.cat.categories))
    return pd.DataFrame(
        {
            name_col: label.astype(object).to_numpy(),
            "count": n.astype(np.int64),
            "total_ns": total.astype(np.int64),
            "mean_ns": mean.astype(np.float64),
            "median_ns": median.astype(np.float64),
            "min_ns": sv[start].astype(np.int64),
            "max_ns": sv[start + n - 1].astype(np.int64),
            "stddev_ns": stddev.astype(np.float64),
        }
    )
