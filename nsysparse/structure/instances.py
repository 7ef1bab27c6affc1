"""Op instances: the kernels of one op inside one layer instance (or one step, outside layers) summed.

An op instance is the unit a performance engineer reads in a spreadsheet: "q_proj_b of one MoE layer
takes 16 µs" is the sum of that op's kernels in one layer instance, averaged over instances.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nsysparse.columns import MAPPED_OP_INSTANCE_COLUMNS, empty_frame
from nsysparse.distinct import dense_codes


def op_instances(kernels: pd.DataFrame) -> pd.DataFrame:
    """One row per (step, layer instance, op) of the mapped `kernels` inside steps: MAPPED_OP_INSTANCE_COLUMNS.
    Grouping runs on integer codes; layer_kind, op and source come back as plain strings."""
    k = kernels[kernels["step"].to_numpy() >= 0]
    if len(k) == 0:
        return empty_frame(MAPPED_OP_INSTANCE_COLUMNS)
    kind, kinds = dense_codes(k["layer_kind"])
    op, ops = dense_codes(k["op"])
    src, srcs = dense_codes(k["source"])
    frame = pd.DataFrame(
        {
            "step": k["step"].to_numpy(),
            "layer_id": k["layer_id"].to_numpy(),
            "kind": kind,
            "op": op,
            "src": src,
            "dur": k["dur_ns"].to_numpy(),
            "start": k["start_ns"].to_numpy(),
            "end": k["end_ns"].to_numpy(),
        }
    )
    keys = ["step", "layer_id", "kind", "op"]
    g = frame.groupby(keys, sort=False)
    out = g.agg(time_ns=("dur", "sum"), kernels=("dur", "size"), start_ns=("start", "min"), end_ns=("end", "max"))
    # the naming source that covers most of the instance's time
    by_src = frame.groupby([*keys, "src"], sort=False)["dur"].sum().reset_index()
    by_src = by_src.sort_values("dur", kind="stable").drop_duplicates(keys, keep="last").set_index(keys)["src"]
    out["src"] = by_src.reindex(out.index).to_numpy()
    out = out.reset_index()
    return pd.DataFrame(
        {
            "step": out["step"].to_numpy(),
            "layer_id": out["layer_id"].to_numpy(),
            "layer_kind": np.asarray(kinds, dtype=object)[out["kind"].to_numpy()],
            "op": np.asarray(ops, dtype=object)[out["op"].to_numpy()],
            "source": np.asarray(srcs, dtype=object)[out["src"].to_numpy()],
            "time_ns": out["time_ns"].to_numpy(),
            "kernels": out["kernels"].to_numpy(),
            "start_ns": out["start_ns"].to_numpy(),
            "end_ns": out["end_ns"].to_numpy(),
        }
    )[[c.name for c in MAPPED_OP_INSTANCE_COLUMNS]]
