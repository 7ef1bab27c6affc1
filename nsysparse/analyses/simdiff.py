"""Measured vs predicted per op: Δ per instance × instances per forward, summed, and reconciled.

Measured comes from a trace (the layers table: per layer kind and op, instances per step and the mean
µs of one instance) or from a measured per-op table. Predicted comes from a prediction file (see
docs/predictions.md) whose op names went through the vocabulary's alias table.

A prediction row with layer_kind `any` applies to every layer kind that runs the op; a row with a
layer kind applies to that kind only (and wins over `any`). The number of instances always comes
from the measurement: a prediction for one layer is compared with one measured layer, then × count.

Reconciliation (forward/step, ms):
    measured total − predicted total
      = Σ matched diffs + measured-only ops − predicted-only ops + (measured total − Σ measured ops)
where the last term is what a per-op sum does not see in a trace: idle time, copies, minus concurrent
kernel overlap (zero for a measured table, whose total is the sum of its ops).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nsysparse.columns import Column
from nsysparse.errors import ConfigError
from nsysparse.models.hardware import Hardware
from nsysparse.outputs import note_input
from nsysparse.rules import RuleSet

COLUMNS = (
    Column("op", "str", "logical op (after aliases)"),
    Column("layer_kind", "str", "dense | moe | mtp | other; `all` when rows of several kinds are summed (default view)"),
    Column("status", "str", "matched | measured-only (no prediction) | predicted-only (not in the measurement)"),
    Column("name", "str", "the op's name in the prediction file"),
    Column("count", "float", "instances per forward/step (from the measurement; from the prediction for predicted-only rows)"),
    Column("measured_us", "float", "measured time of one instance (count-weighted mean over layer kinds)"),
    Column("predicted_us", "float", "predicted time of one instance"),
    Column("diff_us", "float", "measured_us − predicted_us"),
    Column("total_diff_ms", "float", "count × diff_us / 1000: what this op adds to the forward's error"),
    Column("ratio", "float", "measured_us / predicted_us"),
    Column("achieved_tflops", "float", "FLOPs of one instance / measured_us (when FLOPs are known)"),
    Column("achieved_tbps", "float", "bytes of one instance / measured_us, TB/s (when bytes are known)"),
    Column("roofline_pct", "float", "max(FLOPs / peak, bytes / HBM bandwidth) / measured_us × 100 (needs hardware)"),
)
RECON_COLUMNS = (
    Column("component", "str", "reconciliation line"),
    Column("ms", "float", "per forward/step"),
    Column("detail", "str", "what the line holds"),
)

MEASURED_TIME = ("measured_us", "mean_us", "us", "time_us", "avg_us")
MEASURED_COUNT = ("count", "count_per_step", "count_per_forward", "layers", "n")


@dataclass
class Measured:
    """Per (layer_kind, op): count (instances per forward/step) and measured_us (one instance)."""

    table: pd.DataFrame
    total_ms: float  # step/forward time the ops live in (trace: mean step wall; table: Σ ops)
    source: str
    notes: list[str] = field(default_factory=list)


@dataclass
class SimDiff:
    table: pd.DataFrame
    by_kind: pd.DataFrame
    reconciliation: pd.DataFrame
    measured_total_ms: float
    predicted_total_ms: float
    matched_total_ms: float
    notes: list[str] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        return {
            "measured_total_ms": self.measured_total_ms,
            "predicted_total_ms": self.predicted_total_ms,
            "matched_total_diff_ms": self.matched_total_ms,
            "ops": self.table,
            "reconciliation": self.reconciliation,
            "notes": self.notes,
        }


def parse_layer_counts(text: str | None) -> dict[str, float]:
    """'dense=3,moe=58,mtp=1' -> {'dense': 3.0, 'moe': 58.0, 'mtp': 1.0}."""
    if not text:
        return {}
    out: dict[str, float] = {}
    for part in text.split(","):
        m = re.fullmatch(r"\s*([A-Za-z_][\w-]*)\s*[=:x×]\s*([0-9.]+)\s*", part)
        if not m:
            raise ConfigError(f"--layers {text!r}: expected KIND=COUNT pairs such as dense=3,moe=58")
        out[m.group(1).lower()] = float(m.group(2))
    return out


def _kind(values: pd.Series) -> pd.Series:
    s = values.astype(object).where(values.notna(), "")
    s = s.astype(str).str.strip().str.lower()
    return s.where(s != "", "other").replace({"nan": "other", "unknown": "other"})


def measured_from_layers(ops: pd.DataFrame, step_wall_ms: float, rules: RuleSet) -> Measured:
    """From `op_summary(mapping, by_kind=True)` (layer_kind, op, count_per_step, mean_us); ops outside
    layers (empty layer kind) become layer kind `other`."""
    t = pd.DataFrame(
        {
            "layer_kind": _kind(ops["layer_kind"]),
            "op": [rules.canonical_op(str(x)) for x in ops["op"]],
            "count": ops["count_per_step"].astype(float),
            "measured_us": ops["mean_us"].astype(float),
        }
    )
    t = _merge_duplicates(t)
    return Measured(t, step_wall_ms, "trace")


def measured_from_table(path: str | Path, rules: RuleSet, layer_counts: dict[str, float]) -> Measured:
    """A measured per-op CSV: op, a time column (measured_us | mean_us | us), optional layer_kind and
    count (instances per forward); counts may instead come from `layer_counts` (per layer kind)."""
    p = Path(path)
    note_input(p)
    try:
        text = p.read_text(encoding="utf-8")
        df = pd.read_csv(io.StringIO("\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))))
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ConfigError(f"{p}: cannot read the measured table ({str(err).splitlines()[0]})") from None
    cols = {c.lower().strip(): c for c in df.columns}
    if "op" not in cols:
        raise ConfigError(f"{p}: the measured table needs an 'op' column", "Columns: op, measured_us, layer_kind, count")
    tcol = next((cols[c] for c in MEASURED_TIME if c in cols), None)
    if tcol is None:
        raise ConfigError(f"{p}: no time column ({', '.join(MEASURED_TIME)})")
    kinds = _kind(df[cols["layer_kind"]]) if "layer_kind" in cols else pd.Series(["other"] * len(df))
    ccol = next((cols[c] for c in MEASURED_COUNT if c in cols), None)
    count = pd.to_numeric(df[ccol], errors="coerce") if ccol else pd.Series(np.nan, index=df.index)
    if layer_counts:
        from_kind = kinds.map(layer_counts)
        count = count.where(count.notna(), from_kind)
        unknown = sorted(set(kinds[from_kind.isna() & count.isna()]))
        if unknown:
            raise ConfigError(f"{p}: no count for layer kind(s) {', '.join(unknown)}", f"Add them to --layers (have {', '.join(layer_counts)})")
    if count.isna().any():
        row = int(np.nonzero(count.isna().to_numpy())[0][0])
        raise ConfigError(f"{p}: row {row + 1} ({df[cols['op']].iloc[row]!r}) has no instance count", "Add a count column or give --layers dense=3,moe=58")
    us = pd.to_numeric(df[tcol], errors="coerce")
    if us.isna().any():
        row = int(np.nonzero(us.isna().to_numpy())[0][0])
        raise ConfigError(f"{p}: row {row + 1} has no numeric {tcol}")
    t = pd.DataFrame(
        {
            "layer_kind": kinds.to_numpy(),
            "op": [rules.canonical_op(str(x)) for x in df[cols["op"]]],
            "count": count.astype(float).to_numpy(),
            "measured_us": us.astype(float).to_numpy(),
        }
    )
    t = _merge_duplicates(t)
    return Measured(t, float((t["count"] * t["measured_us"]).sum() / 1e3), str(p))


def _merge_duplicates(t: pd.DataFrame) -> pd.DataFrame:
    """Two source names aliasing to one op inside one layer kind: one instance is their sum."""
    if not t.duplicated(["layer_kind", "op"]).any():
        return t.reset_index(drop=True)
    t = t.assign(total=t["count"] * t["measured_us"])
    g = t.groupby(["layer_kind", "op"], sort=False).agg(count=("count", "max"), total=("total", "sum")).reset_index()
    g["measured_us"] = g["total"] / g["count"]
    return g[["layer_kind", "op", "count", "measured_us"]]


def _match(measured: pd.DataFrame, pred: pd.DataFrame) -> pd.DataFrame:
    """One row per measured (kind, op) and per unmatched prediction, with status."""
    p = pred.copy()
    p["layer_kind"] = p["layer_kind"].astype(str).str.lower()
    specific = p[p["layer_kind"] != "any"].set_index(["layer_kind", "op"])
    anyk = p[p["layer_kind"] == "any"].set_index("op")
    rows = []
    used_specific: set[tuple[str, str]] = set()
    used_any: set[str] = set()
    for r in measured.itertuples(index=False):
        key = (r.layer_kind, r.op)
        if key in specific.index:
            q = specific.loc[key]
            used_specific.add(key)
        elif r.op in anyk.index:
            q = anyk.loc[r.op]
            used_any.add(r.op)
        else:
            rows.append(
                {
                    "layer_kind": r.layer_kind,
                    "op": r.op,
                    "status": "measured-only",
                    "name": "",
                    "count": r.count,
                    "measured_us": r.measured_us,
                    "predicted_us": np.nan,
                    "flops": np.nan,
                    "bytes": np.nan,
                    "pred_count": np.nan,
                }
            )
            continue
        rows.append(
            {
                "layer_kind": r.layer_kind,
                "op": r.op,
                "status": "matched",
                "name": q["name"],
                "count": r.count,
                "measured_us": r.measured_us,
                "predicted_us": q["predicted_us"],
                "flops": q["flops"],
                "bytes": q["bytes"],
                "pred_count": q["count_per_forward"],
            }
        )
    for (kind, op), q in specific.iterrows():
        if (kind, op) not in used_specific:
            rows.append(
                {
                    "layer_kind": kind,
                    "op": op,
                    "status": "predicted-only",
                    "name": q["name"],
                    "count": q["count_per_forward"],
                    "measured_us": np.nan,
                    "predicted_us": q["predicted_us"],
                    "flops": q["flops"],
                    "bytes": q["bytes"],
                    "pred_count": q["count_per_forward"],
                }
            )
    for op, q in anyk.iterrows():
        if op not in used_any:
            rows.append(
                {
                    "layer_kind": "any",
                    "op": op,
                    "status": "predicted-only",
                    "name": q["name"],
                    "count": q["count_per_forward"],
                    "measured_us": np.nan,
                    "predicted_us": q["predicted_us"],
                    "flops": q["flops"],
                    "bytes": q["bytes"],
                    "pred_count": q["count_per_forward"],
                }
            )
    return pd.DataFrame(rows)


def _finish(df: pd.DataFrame, hw: Hardware | None) -> pd.DataFrame:
    meas = df["measured_us"].fillna(0.0)
    pred = df["predicted_us"].fillna(0.0)
    df["diff_us"] = meas - pred
    df["total_diff_ms"] = df["count"] * df["diff_us"] / 1e3
    with np.errstate(divide="ignore", invalid="ignore"):
        df["ratio"] = df["measured_us"] / df["predicted_us"]
        secs = df["measured_us"] * 1e-6
        df["achieved_tflops"] = df["flops"] / secs / 1e12
        df["achieved_tbps"] = df["bytes"] / secs / 1e12
        if hw is not None and hw.bf16_tflops > 0 and hw.hbm_tbps > 0:
            roof_s = np.maximum(df["flops"].fillna(0) / (hw.bf16_tflops * 1e12), df["bytes"].fillna(0) / (hw.hbm_tbps * 1e12))
            df["roofline_pct"] = np.where(df["flops"].notna() | df["bytes"].notna(), roof_s / secs * 100, np.nan)
        else:
            df["roofline_pct"] = np.nan
    for c in ("ratio", "achieved_tflops", "achieved_tbps", "roofline_pct"):
        df[c] = df[c].replace([np.inf, -np.inf], np.nan)
    order = df["total_diff_ms"].abs().sort_values(ascending=False, kind="stable").index
    return df.loc[order, [c.name for c in COLUMNS]].reset_index(drop=True)


def _per_op(rows: pd.DataFrame) -> pd.DataFrame:
    """Sum layer kinds: per (op, status), count-weighted means per instance."""
    r = rows.assign(
        mt=rows["count"] * rows["measured_us"],
        pt=rows["count"] * rows["predicted_us"],
        ft=rows["count"] * rows["flops"],
        bt=rows["count"] * rows["bytes"],
    )
    g = r.groupby(["op", "status"], sort=False)
    out = g.agg(
        count=("count", "sum"),
        mt=("mt", lambda s: s.sum(min_count=1)),
        pt=("pt", lambda s: s.sum(min_count=1)),
        ft=("ft", lambda s: s.sum(min_count=1)),
        bt=("bt", lambda s: s.sum(min_count=1)),
        name=("name", lambda s: "/".join(dict.fromkeys(x for x in s if x))),
        kinds=("layer_kind", lambda s: ",".join(dict.fromkeys(s))),
    ).reset_index()
    out["layer_kind"] = np.where(out["kinds"].str.contains(","), "all", out["kinds"])
    out["measured_us"] = out["mt"] / out["count"]
    out["predicted_us"] = out["pt"] / out["count"]
    out["flops"] = out["ft"] / out["count"]
    out["bytes"] = out["bt"] / out["count"]
    return out[["layer_kind", "op", "status", "name", "count", "measured_us", "predicted_us", "flops", "bytes"]]


def simdiff(measured: Measured, predictions: pd.DataFrame, hw: Hardware | None = None, model_ops: pd.DataFrame | None = None) -> SimDiff:
    """Compare; `model_ops` (layer_kind, op, flops, bytes per instance) fills FLOPs/bytes a prediction
    file does not give, for achieved TFLOP/s and % of roofline."""
    m = measured.table
    if len(m) == 0:
        raise ConfigError("the measurement has no ops to compare", "Check the trace maps to ops (nsysparse layers) or the measured table")
    rows = _match(m, predictions)
    if model_ops is not None and len(model_ops):
        mo = model_ops.copy()
        mo["layer_kind"] = mo["layer_kind"].astype(str)
        key = mo.drop_duplicates(["layer_kind", "op"]).set_index(["layer_kind", "op"])
        idx = pd.MultiIndex.from_frame(rows[["layer_kind", "op"]])
        for c in ("flops", "bytes"):
            rows[c] = rows[c].where(rows[c].notna(), pd.Series(key[c].reindex(idx).to_numpy(), index=rows.index))
    notes = list(measured.notes)
    pm = rows[(rows["status"] == "matched") & rows["pred_count"].notna() & (rows["layer_kind"] != "other")]
    mism = pm[(pm["pred_count"] - pm["count"]).abs() > 1e-9]
    if len(mism):
        kinds = mism.drop_duplicates("layer_kind")
        notes.append(
            "instance counts differ from the prediction's ("
            + "; ".join(f"{r.layer_kind}: trace {r.count:g}, prediction {r.pred_count:g}" for r in kinds.itertuples())
            + "); diffs use the measured counts"
        )
    unknown = rows[(rows["status"] == "predicted-only") & rows["count"].isna()]
    if len(unknown):
        notes.append(f"{len(unknown)} predicted-only op(s) have no count_per_forward and are counted once: {', '.join(unknown['op'].head(8))}")
        rows.loc[unknown.index, "count"] = 1.0
    rows["count"] = rows["count"].astype(float)
    by_kind = _finish(rows.drop(columns=["pred_count"]).copy(), hw)
    table = _finish(_per_op(rows), hw)

    matched = float(by_kind.loc[by_kind["status"] == "matched", "total_diff_ms"].sum())
    monly = float(by_kind.loc[by_kind["status"] == "measured-only", "total_diff_ms"].sum())
    ponly = float(-by_kind.loc[by_kind["status"] == "predicted-only", "total_diff_ms"].sum())
    meas_ops = float((rows["count"] * rows["measured_us"]).sum() / 1e3)
    pred_total = float((rows["count"] * rows["predicted_us"]).sum() / 1e3)
    other = measured.total_ms - meas_ops
    recon = pd.DataFrame(
        [
            ("measured total", measured.total_ms, "mean step wall time" if measured.source == "trace" else "Σ count × measured_us"),
            ("predicted total", pred_total, "Σ count × predicted_us over matched and predicted-only ops"),
            ("difference", measured.total_ms - pred_total, "measured − predicted"),
            ("= matched ops", matched, f"{int((by_kind['status'] == 'matched').sum())} (layer kind, op) pairs"),
            ("+ measured-only ops", monly, ", ".join(by_kind.loc[by_kind["status"] == "measured-only", "op"].head(6))),
            ("− predicted-only ops", -ponly, ", ".join(by_kind.loc[by_kind["status"] == "predicted-only", "op"].head(6))),
            ("+ overlap/idle/copies", other, "measured total − Σ measured ops (idle, memcpy, minus concurrent kernels)"),
        ],
        columns=[c.name for c in RECON_COLUMNS],
    )
    return SimDiff(table, by_kind, recon, measured.total_ms, pred_total, matched, notes)
