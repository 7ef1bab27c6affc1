"""Roofline per-op prediction: t = max(FLOPs / (peak × η_compute), bytes / (HBM × η_memory)) + latency.

A simple, documented baseline (the SOL mode of aiconfigurator, llm-analysis, GenZ): efficiencies and
the per-instance constant default to 0.7, 0.8 and 3 µs (aiconfigurator's H200 empirical factors are
0.8 and 3 µs). `bound` says which term won: compute, memory, or latency when the constant dominates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nsysparse.models.config import ModelSpec
from nsysparse.models.flops import Workload, op_table
from nsysparse.models.hardware import Hardware


def predict_ops(spec: ModelSpec, w: Workload, hw: Hardware, dtype: str = "bf16", eff_compute: float = 0.7, eff_memory: float = 0.8, latency_us: float = 3.0) -> pd.DataFrame:
    """op, layer_kind, count_per_forward, predicted_us, flops, bytes, bound, source (one instance each)."""
    t = op_table(spec, w)
    peak = hw.peak(dtype) * 1e12 * eff_compute
    bw = hw.hbm_tbps * 1e12 * eff_memory
    compute_us = t["flops"].to_numpy() / peak * 1e6
    memory_us = t["bytes"].to_numpy() / bw * 1e6 if bw > 0 else np.zeros(len(t))
    roof = np.maximum(compute_us, memory_us)
    bound = np.where(compute_us >= memory_us, "compute", "memory")
    bound = np.where(latency_us > roof, "latency", bound)
    out = pd.DataFrame(
        {
            "op": t["op"],
            "layer_kind": t["layer_kind"],
            "count_per_forward": t["count_per_forward"].astype(int),
            "predicted_us": roof + latency_us,
            "flops": t["flops"],
            "bytes": t["bytes"],
            "bound": bound,
            "source": f"roofline {hw.name} {dtype} eff {eff_compute:g}/{eff_memory:g} +{latency_us:g}us",
        }
    )
    return out
