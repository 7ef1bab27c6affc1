"""Op instances: the kernels of one op inside one layer instance (or one step, outside layers) summed.

An op instance is the unit a performance engineer reads in a spreadsheet: "q_proj_b of one MoE layer
takes 16 µs" is the sum of that op's kernels in one layer instance, averaged over instances.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nsysparse import intervals
from nsysparse.columns import MAPPED_OP_INSTANCE_COLUMNS, empty_frame
from nsysparse.distinct import dense_codes


def op_instances(kernels: pd.DataFrame) -> pd.DataFrame:
    """One row per (step, layer instance, op) of the mapped `kernels` inside steps: MAPPED_OP_INSTANCE_COLUMNS,
    in order of first appearance. Grouping runs on integer codes; layer_kind, op and source come back as plain
    strings."""
    k = kernels[kernels["step"].to_numpy() >= 0]
    if len(k) == 0:
        return empty_frame(MAPPED_OP_INSTANCE_COLUMNS)
    kind, kinds = dense_codes(k["layer_kind"])
    op, ops = dense_codes(k["op"])
    src, srcs = dense_codes(k["source"])
    step, layer, dur = k["step"].to_numpy(), k["layer_id"].to_numpy(), k["dur_ns"].to_numpy()
    # (instance, source) pairs first, then the instances over those pairs
    pairs = intervals.Groups(step, layer, kind, op, src)
    pf = pairs.first
    time = pairs.sum(dur)
    g = intervals.Groups(step[pf], layer[pf], kind[pf], op[pf])
    first = pf[g.first]
    return pd.DataFrame(
        {
            "step": step[first],
            "layer_id": layer[first],
            "layer_kind": np.asarray(kinds, dtype=object)[kind[first]],
            "op": np.asarray(ops, dtype=object)[op[first]],
            "source": np.asarray(srcs, dtype=object)[src[pf[_dominant(g, time)]]],
            "time_ns": g.sum(time),
            "kernels": g.sum(pairs.size()),
            "start_ns": g.min(pairs.min(k["start_ns"].to_numpy())),
            "end_ns": g.max(pairs.max(k["end_ns"].to_numpy())),
        }
    )[[c.name for c in MAPPED_OP_INSTANCE_COLUMNS]]


def _dominant(g: intervals.Groups, time: np.ndarray) -> np.ndarray:
    """Per instance, the (instance, source) pair carrying the most time; on a tie, the pair that appears last."""
    best = time == g.max(time)[g.ids]
    return g.max(np.where(best, np.arange(len(time)), -1))
