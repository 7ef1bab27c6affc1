"""The timeline of one representative step, downsampled to a bounded number of bars.

The step is the one with the median wall time on the device with the most steps. Kernels are bars on
their stream's row. When a step has more kernels than `max_segments`, consecutive kernels of the same
op (and layer) on one stream merge into one segment; if that is still too many, each stream is cut into
equal time bins and each bin becomes one segment named after the op that covers most of it. The file
size of the report is therefore bounded whatever the trace size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nsysparse.structure.mapping import Mapping

MAX_SEGMENTS = 3000


@dataclass
class Timeline:
    segments: pd.DataFrame  # stream, op, layer_kind, label, start_us, dur_us, kernels
    step: int
    device_id: int
    wall_us: float
    kernels: int
    method: str  # kernels | merged by op | binned


def representative_step(m: Mapping) -> tuple[int, int] | None:
    s = m.steps
    if len(s) == 0:
        return None
    dev = int(s["device_id"].value_counts().idxmax())
    sd = s[s["device_id"] == dev].sort_values("wall_ns").reset_index(drop=True)
    row = sd.iloc[(len(sd) - 1) // 2]
    return int(row["step"]), dev


def step_timeline(m: Mapping, max_segments: int = MAX_SEGMENTS) -> Timeline | None:
    pick = representative_step(m)
    if pick is None:
        return None
    step, dev = pick
    k = m.kernels
    k = k[(k["step"] == step) & (k["device_id"] == dev)].sort_values(["stream_id", "start_ns"])
    if len(k) == 0:
        return None
    t0 = int(k["start_ns"].min())
    wall = float(k["end_ns"].max() - t0) / 1e3
    frame = pd.DataFrame(
        {
            "stream": k["stream_id"].to_numpy(),
            "op": k["op"].astype(str).to_numpy(),
            "layer_kind": k["layer_kind"].astype(str).to_numpy(),
            "layer_id": k["layer_id"].to_numpy(),
            "label": k["short_name"].astype(str).to_numpy(),
            "start": (k["start_ns"].to_numpy() - t0) / 1e3,
            "end": (k["end_ns"].to_numpy() - t0) / 1e3,
        }
    )
    method = "kernels"
    if len(frame) > max_segments:
        frame = _merge_runs(frame)
        method = "merged by op"
    if len(frame) > max_segments:
        frame = _bin(frame, max_segments, wall)
        method = "binned"
    seg = pd.DataFrame(
        {
            "stream": frame["stream"].astype(np.int64),
            "op": frame["op"],
            "layer_kind": frame["layer_kind"],
            "label": frame["label"],
            "start_us": frame["start"].astype(float),
            "dur_us": (frame["end"] - frame["start"]).astype(float),
            "kernels": frame["kernels"].astype(np.int64) if "kernels" in frame else 1,
        }
    )
    return Timeline(seg, step, dev, wall, len(k), method)


def _merge_runs(f: pd.DataFrame) -> pd.DataFrame:
    """Consecutive kernels of one stream with the same op and layer become one segment."""
    key = f["stream"].astype(str) + "|" + f["op"] + "|" + f["layer_id"].astype(str)
    run = (key != key.shift()).cumsum()
    g = f.groupby(run, sort=False)
    out = pd.DataFrame(
        {
            "stream": g["stream"].first(),
            "op": g["op"].first(),
            "layer_kind": g["layer_kind"].first(),
            "layer_id": g["layer_id"].first(),
            "label": g["label"].first(),
            "start": g["start"].min(),
            "end": g["end"].max(),
            "kernels": g.size(),
        }
    ).reset_index(drop=True)
    many = out["kernels"] > 1
    out.loc[many, "label"] = out.loc[many, "op"] + " (" + out.loc[many, "kernels"].astype(str) + " kernels)"
    return out


def _bin(f: pd.DataFrame, max_segments: int, wall_us: float) -> pd.DataFrame:
    """Equal time bins per stream; a bin is named by the op with the most time in it."""
    streams = f["stream"].nunique()
    bins = max(1, max_segments // max(streams, 1))
    width = max(wall_us / bins, 1e-3)
    b = np.minimum((f["start"].to_numpy() // width).astype(np.int64), bins - 1)
    f = f.assign(bin=b, d=f["end"] - f["start"], kernels=f.get("kernels", 1))
    top = f.sort_values("d").drop_duplicates(["stream", "bin"], keep="last").set_index(["stream", "bin"])
    g = f.groupby(["stream", "bin"])
    out = pd.DataFrame({"start": g["start"].min(), "end": g["end"].max(), "kernels": g["kernels"].sum()})
    out["op"] = top["op"].reindex(out.index)
    out["layer_kind"] = top["layer_kind"].reindex(out.index)
    out = out.reset_index()
    out["label"] = out["op"] + " and others (" + out["kernels"].astype(str) + " kernels)"
    return out
