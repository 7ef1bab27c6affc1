"""One row per step: when it ran, wall and busy time, kernels, and where its boundaries came from."""

from __future__ import annotations

import pandas as pd

from nsysparse.analyses.context import AnalysisContext
from nsysparse.columns import Column, empty_frame

COLUMNS = (
    Column("step", "int", "step index (time order)"),
    Column("pid", "int", "process"),
    Column("device_id", "int", "GPU of the step's first kernel"),
    Column("name", "str", "NVTX range text (empty when inferred)"),
    Column("start_ms", "float", "first GPU start, relative to the first step"),
    Column("wall_us", "float", "first GPU start to last GPU end (kernels, memcpy, memset)"),
    Column("busy_us", "float", "union of GPU work intervals"),
    Column("idle_us", "float", "wall − busy"),
    Column("kernel_us", "float", "summed kernel durations (counts concurrent kernels twice)"),
    Column("kernels", "int", "kernels launched in the step"),
    Column("gap_before_us", "float", "idle from the previous step's last GPU end (same device) to this step's first start"),
    Column("source", "str", "nvtx | inferred-repeat | inferred-gaps | inferred-period"),
    Column("phase", "str", "prefill | decode | train | other"),
    Column("warmup", "bool", "a leading step much slower than its phase's median: left out of statistics unless --include-warmup"),
)


def step_table(ctx: AnalysisContext) -> pd.DataFrame:
    """One row per step of the selected device(s): COLUMNS."""
    s = ctx.structure.steps
    if len(s) == 0:
        return empty_frame(COLUMNS)
    s = s.sort_values(["device_id", "start_ns"])
    prev_end = s.groupby("device_id")["end_ns"].shift(1)
    out = pd.DataFrame(
        {
            "step": s["step"].to_numpy(),
            "pid": s["pid"].to_numpy(),
            "device_id": s["device_id"].to_numpy(),
            "name": s["name"].astype(str).to_numpy(),
            "start_ms": (s["start_ns"] - s["start_ns"].min()).to_numpy() / 1e6,
            "wall_us": s["wall_ns"].to_numpy() / 1e3,
            "busy_us": s["busy_ns"].to_numpy() / 1e3,
            "idle_us": (s["wall_ns"] - s["busy_ns"]).to_numpy() / 1e3,
            "kernel_us": s["kernel_ns"].to_numpy() / 1e3,
            "kernels": s["kernels"].to_numpy(),
            "gap_before_us": ((s["start_ns"] - prev_end) / 1e3).to_numpy(dtype=float),
            "source": s["source"].astype(str).to_numpy(),
            "phase": s["phase"].astype(str).to_numpy(),
            "warmup": s["warmup"].to_numpy(dtype=bool),
        }
    )
    return out.sort_values(["step"]).reset_index(drop=True)
