"""Rule coverage on a trace: which kernels no rule classifies, by share of kernel time."""

from __future__ import annotations

import pandas as pd

from nsysparse.analyses.context import AnalysisContext
from nsysparse.columns import Column
from nsysparse.rules import classify_names

COLUMNS = (
    Column("short_name", "str", "kernel short name"),
    Column("name", "str", "demangled name"),
    Column("count", "int", "instances"),
    Column("total_us", "float", "summed duration"),
    Column("share_pct", "float", "share of all kernel time"),
)
CLASS_COLUMNS = (
    Column("kernel_class", "str", "class (empty: unclassified)"),
    Column("rules", "str", "rule ids that matched"),
    Column("count", "int", "instances"),
    Column("total_us", "float", "summed duration"),
    Column("share_pct", "float", "share of all kernel time"),
)


def rule_coverage(ctx: AnalysisContext) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(unclassified kernels, time per class, classified share of kernel time) under the context's rules."""
    k = ctx.trace.kernels()
    if ctx.device_id is not None:
        k = k[k["device_id"] == ctx.device_id]
    cls = classify_names(ctx.rules, k["short_name"], k["name"])
    dur = (k["end_ns"] - k["start_ns"]).to_numpy()
    frame = pd.DataFrame(
        {
            "short_name": k["short_name"].astype(str),
            "name": k["name"].astype(str),
            "kernel_class": cls["kernel_class"].astype(str),
            "rule_id": cls["rule_id"].astype(str),
            "dur": dur,
        }
    )
    total = float(dur.sum()) or 1.0
    um = frame[frame["kernel_class"] == ""].groupby(["short_name", "name"])["dur"].agg(["size", "sum"]).reset_index().sort_values("sum", ascending=False)
    unmatched = pd.DataFrame(
        {
            "short_name": um["short_name"],
            "name": um["name"],
            "count": um["size"].astype("int64"),
            "total_us": um["sum"] / 1e3,
            "share_pct": um["sum"] / total * 100,
        }
    ).reset_index(drop=True)
    g = frame.groupby("kernel_class")
    per_class = pd.DataFrame(
        {"rules": g["rule_id"].agg(lambda s: ",".join(sorted(set(s) - {""}))), "count": g.size().astype("int64"), "total_us": g["dur"].sum() / 1e3}
    ).reset_index()
    per_class["share_pct"] = per_class["total_us"] * 1e3 / total * 100
    per_class = per_class.sort_values("total_us", ascending=False).reset_index(drop=True)
    classified = 1.0 - float(frame.loc[frame["kernel_class"] == "", "dur"].sum()) / total
    return unmatched, per_class, classified
