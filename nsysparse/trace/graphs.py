"""CUDA-graph node kernels: where and when their graph node was created (the capture-time context).

In `--cuda-graph-trace=node` exports a replayed kernel carries the graphNodeId of the instantiated node.
CUDA_GRAPH_NODE_EVENTS records node creation ("Graph Node Creation"): instantiated nodes point to the
node created at capture time through originalGraphNodeId, whose creation event happened on the
capturing thread inside the NVTX ranges that were open during capture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from nsysparse.trace.handle import TraceHandle as Trace

TABLE = "CUDA_GRAPH_NODE_EVENTS"
MAX_CHAIN = 8


def node_origins(trace: Trace) -> pd.DataFrame:
    """graph_node_id -> capture_ns, capture_global_tid (following originalGraphNodeId chains)."""
    cols = ["graph_node_id", "capture_ns", "capture_global_tid"]
    if not trace.schema.has(TABLE, "graphNodeId") or not trace.schema.has(TABLE, "globalTid"):
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
    orig = "originalGraphNodeId" if trace.schema.has(TABLE, "originalGraphNodeId") else "NULL"
    trace.validate(TABLE)
    df = trace.engine.frame(
        f'SELECT "graphNodeId" AS node, COALESCE({orig}, 0) AS orig, "start" AS ts, COALESCE("globalTid", 0) AS tid FROM "{TABLE}" '
        'WHERE "graphNodeId" IS NOT NULL AND "start" IS NOT NULL'
    )
    if len(df) == 0:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
    # a node may have several creation rows; the one that names its original node carries the link
    df = df.astype("int64")
    df = df.assign(linked=df["orig"] > 0).sort_values(["linked", "ts"], ascending=[False, True]).drop_duplicates("node", keep="first")
    node = df["node"].to_numpy()
    parent = df["orig"].to_numpy()
    ts = df["ts"].to_numpy()
    tid = df["tid"].to_numpy()
    order = np.argsort(node)
    sorted_nodes = node[order]
    cur = np.arange(len(df))
    for _ in range(MAX_CHAIN):  # follow instantiated -> original links, vectorised per hop
        p = parent[cur]
        pos = np.searchsorted(sorted_nodes, p)
        ok = (p > 0) & (pos < len(sorted_nodes))
        ok &= sorted_nodes[np.clip(pos, 0, len(sorted_nodes) - 1)] == p
        if not ok.any():
            break
        cur = np.where(ok, order[np.clip(pos, 0, len(order) - 1)], cur)
    return pd.DataFrame({"graph_node_id": node, "capture_ns": ts[cur], "capture_global_tid": tid[cur]})
