"""Roofline per-op prediction, one GPU:
    t = max(FLOPs / (peak × η_compute), bytes / (HBM × η_memory), comm_bytes / (NVLink × η_memory)) + latency

A simple, documented baseline (the speed-of-light mode of aiconfigurator, llm-analysis, GenZ): the
efficiencies and the per-instance constant default to 0.7, 0.8 and 3 µs (aiconfigurator's H200
empirical factors are 0.8 and 3 µs). `bound` says which term won: compute, memory, network, or
latency when the constant is larger than the roofline term.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from nsysparse.columns import Column
from nsysparse.errors import ConfigError
from nsysparse.models.config import ModelSpec
from nsysparse.models.flops import Workload, op_table
from nsysparse.models.hardware import Hardware

COLUMNS = (
    Column("op", "str", "logical op (the vocabulary of rules/vocabulary.toml)"),
    Column("layer_kind", "str", "dense | moe | mtp | other (outside layers)"),
    Column("count_per_forward", "int", "instances in one forward (layers of that kind running the op)"),
    Column("predicted_us", "float", "time of ONE instance on one GPU"),
    Column("flops", "float", "FLOPs of one instance (2 per multiply-add)"),
    Column("bytes", "float", "HBM bytes one instance must move at least"),
    Column("comm_bytes", "float", "bytes sent to other GPUs (dispatch/combine under expert parallelism)"),
    Column("bound", "str", "compute | memory | network | latency: the term that set the time"),
    Column("source", "str", "what produced the number"),
)


def predict_ops(
    spec: ModelSpec, w: Workload, hw: Hardware, dtype: str = "bf16", eff_compute: float = 0.7, eff_memory: float = 0.8, latency_us: float = 3.0
) -> pd.DataFrame:
    """One row per (layer kind, op), columns COLUMNS."""
    if not (0 < eff_compute <= 1 and 0 < eff_memory <= 1):
        raise ConfigError("efficiencies must be in (0, 1]")
    if latency_us < 0:
        raise ConfigError("latency must not be negative")
    t = op_table(spec, w)
    peak = hw.peak(dtype) * 1e12 * eff_compute
    if hw.hbm_tbps <= 0:
        raise ConfigError(f"{hw.name} has no HBM bandwidth", "Give --hbm-tbps with --peak")
    bw = hw.hbm_tbps * 1e12 * eff_memory
    link = hw.nvlink_gbps * 1e9 * eff_memory
    terms = np.vstack(
        [
            t["flops"].to_numpy() / peak * 1e6,
            t["bytes"].to_numpy() / bw * 1e6,
            t["comm_bytes"].to_numpy() / link * 1e6 if link > 0 else np.zeros(len(t)),
        ]
    )
    roof = terms.max(axis=0)
    bound = np.array(["compute", "memory", "network"], dtype=object)[terms.argmax(axis=0)]
    bound = np.where(latency_us > roof, "latency", bound)
    return pd.DataFrame(
        {
            "op": t["op"],
            "layer_kind": t["layer_kind"],
            "count_per_forward": t["count_per_forward"].astype(np.int64),
            "predicted_us": roof + latency_us,
            "flops": t["flops"],
            "bytes": t["bytes"],
            "comm_bytes": t["comm_bytes"],
            "bound": bound,
            "source": f"roofline {hw.key} {dtype} eff {eff_compute:g}/{eff_memory:g} +{latency_us:g}us",
        }
    )


def prediction_meta(
    spec: ModelSpec, w: Workload, hw: Hardware, dtype: str, eff_compute: float, eff_memory: float, latency_us: float, table: pd.DataFrame
) -> dict[str, Any]:
    """The meta block written at the top of a prediction file."""
    total = float((table["predicted_us"] * table["count_per_forward"]).sum())
    return {
        "format": "nsysparse-predictions 1",
        "model": spec.name,
        "hardware": hw.name,
        "dtype": dtype,
        "phase": w.phase,
        "batch": w.batch,
        "seq": w.seq if w.phase != "decode" else None,
        "kv_len": w.kv_len if w.phase == "decode" else None,
        "tp": w.tp,
        "ep": w.ep,
        "eff_compute": eff_compute,
        "eff_memory": eff_memory,
        "latency_us": latency_us,
        "forward_us": round(total, 3),
    }
