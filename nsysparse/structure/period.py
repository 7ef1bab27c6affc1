"""The step period: the one definition every answer uses (steps, mfu, compare, serving metrics, the report).

    period of step i  = start of step i+1 − start of step i, on the same device (GPU time)
    step period       = the median of those; with a single step, its wall time

A period covers the forward (or iteration) and the gap after it, so throughput numbers (TPOT, tokens/s,
TFLOP/s) divide by it. The last step of a device has no period of its own.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def step_periods_ns(steps: pd.DataFrame) -> np.ndarray:
    """Per row of `steps` (any order): its period in ns, NaN for the last step of each device."""
    if len(steps) == 0:
        return np.zeros(0, dtype=float)
    order = np.lexsort((steps["start_ns"].to_numpy(), steps["device_id"].to_numpy()))
    dev = steps["device_id"].to_numpy()[order]
    start = steps["start_ns"].to_numpy()[order]
    # neighbours in the full sequence only: a period never spans a step left out (warm-up, outside --window)
    ordinal = steps["ordinal"].to_numpy()[order] if "ordinal" in steps else np.arange(len(order))
    period = np.full(len(order), np.nan)
    same = (dev[1:] == dev[:-1]) & (np.diff(ordinal) == 1)
    period[:-1] = np.where(same, (start[1:] - start[:-1]).astype(float), np.nan)
    out = np.empty(len(order))
    out[order] = period
    return out


def step_period_ns(steps: pd.DataFrame) -> float:
    """The median step period in ns (the median wall time when no step has a successor; NaN without steps)."""
    if len(steps) == 0:
        return float("nan")
    p = step_periods_ns(steps)
    p = p[np.isfinite(p)]
    return float(np.median(p)) if len(p) else float(steps["wall_ns"].median())
