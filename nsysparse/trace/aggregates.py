"""Aggregations pushed down to the engine: one GROUP BY over the kernel table, no row transfer.

Used by `kernels` so it stays near DuckDB's bare group-by floor on multi-million-kernel traces. When the
engine is sqlite3 (small files), SQLite has no median/stddev, so the rows are loaded and aggregated in
pandas with the same definitions: median of the two middle values for an even count, sample standard
deviation (0 for a single instance) - the definitions `nsys stats` uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nsysparse.errors import reraise_interrupt
from nsysparse.trace import schema as S
from nsysparse.trace.tables import KERNEL_COLS, note_invalid_rows, valid_rows_sql
from nsysparse.trace.validate import check_times

if TYPE_CHECKING:
    from nsysparse.trace.handle import TraceHandle as Trace

NAME_COLUMNS = {"demangled": "name", "short": "short_name", "mangled": "mangled_name"}
LAUNCH_COLUMNS = ("grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z")
STAT_COLUMNS = ("count", "total_ns", "mean_ns", "median_ns", "min_ns", "max_ns", "stddev_ns")


def kernel_stats(trace: Trace, name: str = "demangled", by_launch_config: bool = False, device_id: int | None = None) -> pd.DataFrame:
    """Per kernel name (and launch config): name, [grid/block], count, total/mean/median/min/max/stddev ns."""
    trace.require("kernels")
    table = S.TABLES["kernels"]
    name_col = NAME_COLUMNS[name]
    if name == "mangled" and not trace.schema.has(table, "mangledName"):
        trace.note("this export has no mangled names (capture with nsys 2022.2 or newer); demangled names are shown")
        name_col = "name"
    keys = [name_col, *(LAUNCH_COLUMNS if by_launch_config else ())]
    con = trace.engine.duckdb() if trace.engine.prefers_duckdb() else None
    if con is not None:
        df = _duckdb_stats(trace, con, table, keys, device_id)
        if df is not None:
            return df
    return _pandas_stats(trace, keys, device_id)


def _duckdb_stats(trace: Trace, con, table: str, keys: list[str], device_id: int | None) -> pd.DataFrame | None:  # type: ignore[no-untyped-def]
    cols = trace.schema.columns[table]
    sel = []
    for k in keys:
        src = KERNEL_COLS[k].source
        sel.append(f'COALESCE("{src}", -1) AS {k}' if src in cols else f"-1 AS {k}")
    # one scan: rows without an interval are counted (for the note) and left out of every statistic
    valid = valid_rows_sql(trace, "kernels")
    use = f'{valid} AND NOT ("start" = 0 AND "end" = 0)'
    if device_id is not None:
        use += f' AND "deviceId" = {int(device_id)}'
    f = f"FILTER (WHERE {use})"
    group = ", ".join(str(i + 1) for i in range(len(keys)))
    sql = (
        f'SELECT {", ".join(sel)}, count(*) {f} AS count, sum("end" - "start") {f} AS total_ns, avg("end" - "start") {f} AS mean_ns, '
        f'median("end" - "start") {f} AS median_ns, min("end" - "start") {f} AS min_ns, max("end" - "start") {f} AS max_ns, '
        f'COALESCE(stddev_samp("end" - "start") {f}, 0) AS stddev_ns, count(*) FILTER (WHERE NOT {valid}) AS invalid_rows, '
        f'min(LEAST("start", "end")) FILTER (WHERE {valid}) AS lo_ns, max(GREATEST("start", "end")) FILTER (WHERE {valid}) AS hi_ns '
        f'FROM "{table}" GROUP BY {group}'
    )
    try:
        df = con.execute(sql).df()
    except Exception as err:  # fall back to the pandas path on any engine trouble (a damaged value is named there)
        reraise_interrupt(err)
        return None
    if len(df):  # the range check the loaders make, on the rows the statistics read
        lo, hi = df["lo_ns"].dropna(), df["hi_ns"].dropna()
        check_times(trace.path, table, {"start": lo.to_numpy(np.int64), "end": hi.to_numpy(np.int64)})
    note_invalid_rows(trace, "kernels", int(df["invalid_rows"].sum()))
    df = df[df["count"] > 0].drop(columns=["invalid_rows", "lo_ns", "hi_ns"]).reset_index(drop=True)
    df[keys[0]] = trace.strings.categorical(df[keys[0]].to_numpy(np.int64)).astype(object)
    for c in ("count", "total_ns", "min_ns", "max_ns"):
        df[c] = df[c].astype(np.int64)
    for c in ("mean_ns", "median_ns", "stddev_ns"):
        df[c] = df[c].astype(np.float64)
    return _merge_same_names(df, keys)


def _pandas_stats(trace: Trace, keys: list[str], device_id: int | None) -> pd.DataFrame:
    extra = tuple(k for k in keys if k not in ("start_ns", "end_ns"))
    k = trace.kernels(("start_ns", "end_ns", "device_id", *extra))
    if device_id is not None:
        k = k[k["device_id"] == device_id]
    dur = (k["end_ns"] - k["start_ns"]).rename("dur")
    frame = k[keys].copy()
    frame[keys[0]] = frame[keys[0]].astype(object)
    frame["dur"] = dur.to_numpy()
    g = frame.groupby(keys, sort=False, dropna=False)["dur"]
    out = pd.DataFrame(
        {
            "count": g.size(),
            "total_ns": g.sum(),
            "mean_ns": g.mean(),
            "median_ns": g.median(),
            "min_ns": g.min(),
            "max_ns": g.max(),
            "stddev_ns": g.std(ddof=1).fillna(0.0),
        }
    ).reset_index()
    for c in ("count", "total_ns", "min_ns", "max_ns"):
        out[c] = out[c].astype(np.int64)
    for c in ("mean_ns", "median_ns", "stddev_ns"):
        out[c] = out[c].astype(np.float64)
    return out


def _merge_same_names(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Two StringIds ids with the same text (rare) are one kernel name: recombine their groups exactly."""
    if not df.duplicated(keys).any():
        return df
    parts = []
    for _, grp in df.groupby(keys, sort=False, dropna=False):
        if len(grp) == 1:
            parts.append(grp)
            continue
        n = grp["count"].to_numpy()
        total = int(grp["total_ns"].sum())
        mean = total / n.sum()
        # pooled sample variance from group means and variances
        ss = ((n - 1) * grp["stddev_ns"].to_numpy() ** 2 + n * (grp["mean_ns"].to_numpy() - mean) ** 2).sum()
        row = grp.iloc[:1].copy()
        row["count"], row["total_ns"], row["mean_ns"] = int(n.sum()), total, mean
        row["min_ns"], row["max_ns"] = int(grp["min_ns"].min()), int(grp["max_ns"].max())
        row["stddev_ns"] = float(np.sqrt(ss / max(n.sum() - 1, 1)))
        row["median_ns"] = np.nan  # not recoverable from group medians; marked unknown
        parts.append(row)
    return pd.concat(parts, ignore_index=True)
