"""Op instances: the kernels of one op inside one layer instance (or one step, outside layers) summed.

An op instance is the unit a performance engineer reads in a spreadsheet: "q_proj_b of one MoE layer
takes 16 µs" is the sum of that op's kernels in one layer instance, averaged over instances.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nsysparse.structure.mapping import Mapping


def op_instances(m: Mapping, device_id: int | None = None) -> pd.DataFrame:
    """One row per (step, layer instance, op): step, layer_id, layer_kind, op, source, time_ns, kernels."""
    k = m.kernels
    k = k[k["step"] >= 0]
    if device_id is not None:
        k = k[k["device_id"] == device_id]
    cols = ["step", "layer_id", "layer_kind", "op", "source", "time_ns", "kernels", "start_ns", "end_ns"]
    if len(k) == 0:
        return pd.DataFrame(columns=cols)
    frame = pd.DataFrame(
        {
            "step": k["step"].to_numpy(),
            "layer_id": k["layer_id"].to_numpy(),
            "layer_kind": k["layer_kind"].astype(str).to_numpy(),
            "op": k["op"].astype(str).to_numpy(),
            "source": k["source"].astype(str).to_numpy(),
            "dur": k["dur_ns"].to_numpy(),
            "start": k["start_ns"].to_numpy(),
            "end": k["end_ns"].to_numpy(),
        }
    )
    keys = ["step", "layer_id", "layer_kind", "op"]
    g = frame.groupby(keys, sort=False)
    out = pd.DataFrame({"time_ns": g["dur"].sum(), "kernels": g.size(), "start_ns": g["start"].min(), "end_ns": g["end"].max()})
    # the naming source that covers most of the instance's time
    src = frame.groupby([*keys, "source"], sort=False)["dur"].sum().reset_index()
    src = src.sort_values("dur", kind="stable").drop_duplicates(keys, keep="last").set_index(keys)["source"]
    out["source"] = src.reindex(out.index)
    return out.reset_index()[cols]


def steps_in(m: Mapping, device_id: int | None = None) -> int:
    s = m.steps
    if device_id is not None and len(s):
        s = s[s["device_id"] == device_id]
    return int(len(s))


def dominant(values: pd.Series, weights: pd.Series) -> str:
    if len(values) == 0:
        return ""
    w = pd.Series(np.asarray(weights, dtype=float), index=np.asarray(values, dtype=object))
    return str(w.groupby(level=0).sum().idxmax())
