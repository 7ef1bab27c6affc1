"""Serving numbers from step times: TPOT, per-user and per-machine output tokens per second.

    step period  = the median start-to-next-start of steps (nsysparse.structure.period): forward + the gap after it
    TPOT         = step period / accepted tokens per step          (accept_rate: 1 without speculation;
                                                                     e.g. 2.3 with MTP speculative decoding)
    user tok/s   = 1000 / TPOT_ms
    machine tok/s = batch × dp × accept_rate / step period (s)      (= batch × dp × user tok/s)

Worked example (docs): a 28.5 ms forward, no gap, acceptance 2.3 → TPOT 28.5 / 2.3 = 12.39 ms, under a
16.6 ms target with 4.21 ms headroom; 80.7 tok/s per user.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from nsysparse.columns import Column
from nsysparse.errors import UsageError

COLUMNS = (
    Column("device_id", "int", "GPU (-1: the worst GPU, which sets the pace)"),
    Column("forward_ms", "float", "median step (forward) wall time"),
    Column("gap_ms", "float", "median gap after a forward"),
    Column("step_period_ms", "float", "median step period (start to next start; forward + gap when not given)"),
    Column("accept_rate", "float", "accepted tokens per sequence per step"),
    Column("tpot_ms", "float", "time per output token"),
    Column("user_tok_s", "float", "output tokens per second per user"),
    Column("machine_tok_s", "float", "output tokens per second of batch × dp sequences"),
    Column("target_tpot_ms", "float", "the TPOT target (if given)"),
    Column("headroom_ms", "float", "target − TPOT (negative: target missed)"),
)


def serving_metrics(
    forward_ms: float,
    gap_ms: float = 0.0,
    accept_rate: float = 1.0,
    batch: int = 1,
    dp: int = 1,
    target_tpot_ms: float | None = None,
    period_ms: float | None = None,
) -> dict[str, Any]:
    """TPOT and tokens/s from the step period (`period_ms`, measured), else from forward + gap (a what-if)."""
    if accept_rate <= 0 or batch <= 0 or dp <= 0:
        raise UsageError("--accept-rate, --batch and --dp must be positive")
    if period_ms is None or period_ms != period_ms:
        period_ms = forward_ms + (gap_ms if gap_ms == gap_ms else 0.0)  # NaN gap (one step) counts as 0
    period = period_ms
    tpot = period / accept_rate
    return {
        "forward_ms": forward_ms,
        "gap_ms": gap_ms,
        "step_period_ms": period,
        "accept_rate": accept_rate,
        "tpot_ms": tpot,
        "user_tok_s": 1000.0 / tpot if tpot > 0 else math.inf,
        "machine_tok_s": batch * dp * accept_rate / (period / 1000.0) if period > 0 else math.inf,
        "target_tpot_ms": target_tpot_ms if target_tpot_ms is not None else float("nan"),
        "headroom_ms": (target_tpot_ms - tpot) if target_tpot_ms is not None else float("nan"),
    }


def serving_table(devices: pd.DataFrame, accept_rate: float, batch: int, dp: int, target_tpot_ms: float | None) -> pd.DataFrame:
    """One row per device from the gaps report's device table, plus the worst device (device_id -1)."""
    rows = []
    for r in devices.itertuples():
        gap = r.gap_median_us / 1e3 if r.gap_median_us == r.gap_median_us else 0.0
        metrics = serving_metrics(r.step_wall_us / 1e3, gap, accept_rate, batch, dp, target_tpot_ms, period_ms=r.step_period_us / 1e3)
        rows.append({"device_id": int(r.device_id), **metrics})
    df = pd.DataFrame(rows, columns=[c.name for c in COLUMNS])
    if len(df) > 1:
        worst = df.sort_values("tpot_ms").iloc[-1].copy()
        worst["device_id"] = -1
        df = pd.concat([df, worst.to_frame().T], ignore_index=True).astype({"device_id": "int64"})
    return df
