"""Serialized nsys global ids: bits 63-56 hardware id, 55-48 VM id, 47-24 PID, 23-0 TID."""

from __future__ import annotations

import numpy as np

PID_SHIFT = 24
ID_MASK = 0xFFFFFF


def pid_of(global_id: np.ndarray) -> np.ndarray:
    g = np.asarray(global_id).astype(np.int64, copy=False)
    if g.ndim == 0:
        return (g >> PID_SHIFT) & ID_MASK
    out = np.right_shift(g, PID_SHIFT)
    return np.bitwise_and(out, ID_MASK, out=out)  # (in place: one new array, not two)


def tid_of(global_tid: np.ndarray) -> np.ndarray:
    g = np.asarray(global_tid).astype(np.int64, copy=False)
    return g & ID_MASK
