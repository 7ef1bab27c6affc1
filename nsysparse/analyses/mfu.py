"""Model FLOPs utilisation: FLOPs per step from the model over the measured step time.

    TFLOP/s per GPU = FLOPs per step / step time / GPUs
    MFU             = TFLOP/s per GPU / dense peak (BF16 and FP8 columns)
    tokens/s/GPU    = tokens per step / step time / GPUs
    MBU (inference) = model bytes per step / step time / GPUs / HBM bandwidth

Step time is the step period by default (start of one step to the start of the next: what a user
waits for, inter-step gaps included; the last step uses the median period), or `wall` (first to last
GPU activity of the step). FLOPs follow Megatron's convention (models/flops.py); with full activation
recomputation the count is 4× forward, which makes the number hardware FLOPs utilisation (HFU).

A model that does not fit the trace is caught: `fit_notes` compares its layers per step and GPU with
what the trace shows, and `check_plausible` refuses MFU or MBU above 100 %. A workload manifest is
checked by its measured step time (`manifest_step_ns`), not by its own FLOP count, which is the model's
by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nsysparse.columns import Column
from nsysparse.errors import ConfigError
from nsysparse.models.config import ModelSpec
from nsysparse.models.flops import Workload, op_table, step_flops, tflops_per_gpu
from nsysparse.models.hardware import Hardware
from nsysparse.structure.period import step_period_ns, step_periods_ns

SUMMARY_COLUMNS = (
    Column("gpu", "str", "hardware the peaks come from"),
    Column("phase", "str", "train | prefill | decode"),
    Column("gpus", "int", "GPUs the step's work is spread over"),
    Column("steps", "int", "steps measured"),
    Column("step_time_ms", "float", "median step time (period or wall, see time_basis)"),
    Column("time_basis", "str", "period (start to next start) | wall (first to last GPU activity)"),
    Column("tokens_per_step", "float", "tokens processed per step, all GPUs"),
    Column("flops_per_step", "float", "model FLOPs per step, all GPUs"),
    Column("tflops_per_gpu", "float", "achieved model TFLOP/s per GPU"),
    Column("peak_bf16_tflops", "float", "dense BF16 tensor peak"),
    Column("peak_fp8_tflops", "float", "dense FP8 tensor peak"),
    Column("mfu_bf16_pct", "float", "tflops_per_gpu / BF16 peak × 100"),
    Column("mfu_fp8_pct", "float", "tflops_per_gpu / FP8 peak × 100"),
    Column("tokens_per_s_per_gpu", "float", "tokens per step / step time / GPUs"),
    Column("mbu_pct", "float", "inference: model bytes per step / step time / GPUs / HBM bandwidth × 100"),
    Column("reference_flops_per_step", "float", "FLOPs per step given by --flops (an independent count, e.g. from the training framework)"),
    Column("reference_diff_pct", "float", "(flops_per_step − reference) / reference × 100"),
    Column("reference_step_time_ms", "float", "median step time the workload manifest measured on the host (plus its injected host gap, period basis)"),
    Column("step_time_diff_pct", "float", "(step_time_ms − reference_step_time_ms) / reference_step_time_ms × 100"),
)
# a trace step time this far from the manifest's measured one: the manifest is of another run
STEP_TIME_TOLERANCE_PCT = 10.0
STEP_COLUMNS = (
    Column("step", "int", "step index"),
    Column("device_id", "int", "GPU"),
    Column("time_ms", "float", "step time on the chosen basis"),
    Column("wall_ms", "float", "first to last GPU activity"),
    Column("tflops_per_gpu", "float", "model TFLOP/s per GPU in this step"),
    Column("mfu_bf16_pct", "float", "against the BF16 peak"),
    Column("tokens_per_s_per_gpu", "float", "tokens/s per GPU in this step"),
)


@dataclass
class MfuReport:
    summary: pd.DataFrame
    per_step: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        return {**self.summary.iloc[0].to_dict(), "per_step": self.per_step, "notes": self.notes}


def step_times(steps: pd.DataFrame, basis: str = "period") -> pd.DataFrame:
    """step, device_id, time_ns, wall_ns from a mapping's step table."""
    if basis not in ("period", "wall"):
        raise ConfigError("time basis must be period or wall")
    if len(steps) == 0:
        return pd.DataFrame({"step": [], "device_id": [], "time_ns": [], "wall_ns": []})
    s = steps.sort_values(["device_id", "start_ns"]).reset_index(drop=True)
    wall = s["wall_ns"].to_numpy(dtype=float)
    if basis == "wall":
        t = wall
    else:  # the last step of a device has no period of its own: it counts as the median period
        t = step_periods_ns(s)
        t = np.where(np.isnan(t), step_period_ns(s), t)
    return pd.DataFrame({"step": s["step"].to_numpy(), "device_id": s["device_id"].to_numpy(), "time_ns": t, "wall_ns": wall})


def mfu_report(
    steps: pd.DataFrame,
    spec: ModelSpec,
    w: Workload,
    hw: Hardware,
    gpus: int | None = None,
    basis: str = "period",
    recompute: bool = False,
    reference_flops: float | None = None,
    include_router: bool = False,
    reference_step_ns: float | None = None,
    source: str = "the trace",
) -> MfuReport:
    """`source` names the trace in errors."""
    times = step_times(steps, basis)
    if len(times) == 0:
        raise ConfigError(f"{source}: no steps found", "Check `nsysparse steps` (NVTX step ranges or inferred steps) before computing MFU")
    notes: list[str] = list(spec.notes)
    devices = int(times["device_id"].nunique())
    n_gpus = gpus or devices
    if gpus and devices > 1 and gpus < devices:
        raise ConfigError(f"--gpus {gpus} is fewer than the {devices} GPUs with steps in the trace")
    flops = step_flops(spec, w, recompute=recompute, include_router=include_router)
    tokens = float(w.tokens)
    if recompute:
        notes.append("full recomputation counted (4× forward): this is hardware FLOPs utilisation (HFU)")
    # one step of the whole job per step index: the slowest device sets the pace
    per_index = times.groupby("step").agg(time_ns=("time_ns", "max"), wall_ns=("wall_ns", "max"))
    t_med = float(per_index["time_ns"].median())
    if len(per_index) < 3:
        notes.append(f"only {len(per_index)} step(s): the median step time is not robust")
    tflops = tflops_per_gpu(flops, t_med * 1e-9, n_gpus)
    mbu = np.nan
    if w.phase != "train" and hw.hbm_tbps > 0:
        t = op_table(spec, w)
        nbytes = float((t["count_per_forward"] * t["bytes"]).sum())
        mbu = nbytes / (t_med * 1e-9) / n_gpus / (hw.hbm_tbps * 1e12) * 100
    ref_diff = (flops - reference_flops) / reference_flops * 100 if reference_flops else np.nan
    if reference_flops and abs(ref_diff) > 2:
        notes.append(f"the model's FLOPs differ from the reference by {ref_diff:+.1f}%: check the config, batch and sequence length")
    step_diff = (t_med - reference_step_ns) / reference_step_ns * 100 if reference_step_ns else np.nan
    if reference_step_ns and abs(step_diff) > STEP_TIME_TOLERANCE_PCT:
        notes.append(
            f"the trace's step time ({t_med / 1e6:.3f} ms) differs by {step_diff:+.1f}% from the {reference_step_ns / 1e6:.3f} ms "
            "the workload manifest measured: the manifest looks like another run's"
        )
    summary = pd.DataFrame(
        [
            {
                "gpu": hw.name,
                "phase": w.phase,
                "gpus": int(n_gpus),
                "steps": len(per_index),
                "step_time_ms": t_med / 1e6,
                "time_basis": basis,
                "tokens_per_step": tokens,
                "flops_per_step": flops,
                "tflops_per_gpu": tflops,
                "peak_bf16_tflops": hw.bf16_tflops,
                "peak_fp8_tflops": hw.fp8_tflops,
                "mfu_bf16_pct": tflops / hw.bf16_tflops * 100 if hw.bf16_tflops > 0 else np.nan,
                "mfu_fp8_pct": tflops / hw.fp8_tflops * 100 if hw.fp8_tflops > 0 else np.nan,
                "tokens_per_s_per_gpu": tokens / (t_med * 1e-9) / n_gpus,
                "mbu_pct": mbu,
                "reference_flops_per_step": float(reference_flops) if reference_flops else np.nan,
                "reference_diff_pct": ref_diff,
                "reference_step_time_ms": reference_step_ns / 1e6 if reference_step_ns else np.nan,
                "step_time_diff_pct": step_diff,
            }
        ]
    )
    tt = times["time_ns"].to_numpy() * 1e-9
    per_step = pd.DataFrame(
        {
            "step": times["step"].astype(np.int64),
            "device_id": times["device_id"].astype(np.int64),
            "time_ms": times["time_ns"] / 1e6,
            "wall_ms": times["wall_ns"] / 1e6,
            "tflops_per_gpu": tflops_per_gpu(flops, tt, n_gpus),
            "mfu_bf16_pct": tflops_per_gpu(flops, tt, n_gpus) / hw.bf16_tflops * 100 if hw.bf16_tflops > 0 else np.nan,
            "tokens_per_s_per_gpu": tokens / tt / n_gpus,
        }
    )
    return MfuReport(summary, per_step, notes)


def manifest_step_ns(expected: dict[str, Any], basis: str = "period") -> float | None:
    """The step time a workload manifest measured on the host (median), on the trace's basis: the period
    adds the host gap the generator slept between steps. None when the manifest has no timings."""
    host = [float(x) for x in expected.get("host_step_seconds") or [] if x]
    if not host:
        return None
    gap_ms = float(expected.get("host_gap_ms") or 0.0) if basis == "period" else 0.0
    return float(np.median(host)) * 1e9 + gap_ms * 1e6


def model_layers(spec: ModelSpec) -> dict[str, int]:
    """Layers per forward by kind (dense, moe, mtp), as the layer maps name them."""
    out: dict[str, int] = {}
    for kind in spec.layer_kinds():
        out[kind] = out.get(kind, 0) + 1
    if spec.mtp_layers:
        out["mtp"] = spec.mtp_layers
    return out


def _gpu_key(name: str | None) -> str | None:
    from nsysparse.models import hardware

    if not name or name == "unknown":
        return None
    try:
        return hardware.find(name).key
    except ConfigError:
        return name.strip().lower()


def fit_notes(
    spec: ModelSpec, trace_layers: dict[str, float], trace_gpu: str | None, hw: Hardware | None = None, expected: dict[str, Any] | None = None
) -> list[str]:
    """Warnings where the model cannot be the one traced: layers per step (when the trace's layers were
    found), the GPU the peaks are for, and the GPU a workload manifest was captured on."""
    notes: list[str] = []
    want = model_layers(spec)
    have = {k: v for k, v in trace_layers.items() if v}
    if have:
        total_want, total_have = sum(want.values()), sum(have.values())
        per_kind_known = set(have) <= {"dense", "moe", "mtp"}
        if total_want != total_have or (per_kind_known and any(abs(have.get(k, 0) - n) > 1e-9 for k, n in want.items())):
            fmt = ", ".join
            notes.append(
                f"model {spec.name} has {total_want:g} layers per step ({fmt(f'{k} {v:g}' for k, v in want.items())}) but the trace shows "
                f"{total_have:g} ({fmt(f'{k} {v:g}' for k, v in have.items())}): the model is not the one traced"
            )
    tkey = _gpu_key(trace_gpu)
    if hw is not None and hw.key != "custom" and tkey is not None and tkey != hw.key:
        notes.append(f"the peaks are those of {hw.name} but the trace ran on {trace_gpu}")
    mgpu = (expected or {}).get("gpu")
    if mgpu and tkey is not None and _gpu_key(str(mgpu)) != tkey:
        notes.append(f"the workload manifest was captured on {mgpu} but the trace ran on {trace_gpu}: the manifest is of another run")
    return notes


def check_plausible(report: MfuReport, spec: ModelSpec, source: str, why: list[str] | None = None) -> None:
    """Raise ConfigError when MFU or MBU exceeds 100 %: no GPU does that, so the model, workload or GPU
    count cannot be this trace's."""
    s = report.summary.iloc[0]
    over = [(label, float(v)) for label, v in (("MFU", s["mfu_bf16_pct"]), ("MBU", s["mbu_pct"])) if v == v and float(v) > 100]
    steps = report.per_step["mfu_bf16_pct"].to_numpy(dtype=float) if len(report.per_step) else np.zeros(0)
    if not over and len(steps) and np.nanmax(steps) > 100:
        over = [("MFU in one step", float(np.nanmax(steps)))]
    if over:
        label, value = over[0]
        reason = f" ({why[0]})" if why else ""
        raise ConfigError(
            f"{source}: {label} {value:.1f} % is above 100 %: model {spec.name} with this workload cannot be this trace{reason}",
            "Check --model, --phase, --batch, --seq/--kv-len and --gpus against the profiled run",
        )


def run_notes(run: dict[str, Any], w: Workload) -> list[str]:
    """Where the workload given differs from the one the manifest's run profiled."""
    keys = ["phase", "batch"] + (["kv_len"] if w.phase == "decode" else ["seq"])
    return [
        f"{k} {getattr(w, k)} differs from the profiled run's {run[k]} (workload manifest): the MFU is for another workload"
        for k in keys
        if run.get(k) is not None and getattr(w, k) != run[k]
    ]
