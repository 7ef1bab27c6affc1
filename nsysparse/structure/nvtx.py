"""NVTX push/pop ranges as per-thread trees, and "innermost range containing a CPU timestamp" queries.

Everything is vectorised. Threads are laid end to end on one time axis (thread code × span + time), so
one sort covers all threads. For properly nested ranges sorted by start (ties: longer first), the
depth of range i is i − #(ranges ended by start_i), and its parent is the last range before it at
depth − 1 (pre-order). A query t goes to the last range starting at or before t, then climbs parents
while that range ended before t: at most max-depth vectorised steps, O((n + q) log n) overall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

I64 = np.int64


@dataclass
class RangeTree:
    """Ranges of one NVTX frame subset, in tree order. Arrays are indexed by tree position."""

    frame: pd.DataFrame  # the ranges, sorted (pre-order); column `pos` gives their tree position
    key_start: np.ndarray
    key_end: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    tid_codes: pd.Index  # global_tid per code
    lo: int
    span: int

    def __len__(self) -> int:
        return len(self.key_start)

    def keys(self, global_tid: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Query keys on the shared axis; -1 where the thread has no ranges or ts is outside every range."""
        codes = self.tid_codes.get_indexer(global_tid)
        off = ts.astype(I64) - self.lo
        ok = (codes >= 0) & (off >= 0) & (off < self.span)
        return np.where(ok, codes.astype(I64) * self.span + off, -1)

    def innermost(self, global_tid: np.ndarray, ts: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Tree position of the innermost range on `global_tid` containing `ts` (start ≤ ts ≤ end), or -1."""
        n = len(ts)
        if len(self) == 0 or n == 0:
            return np.full(n, -1, dtype=I64)
        k = self.keys(global_tid, ts)
        if valid is not None:
            k = np.where(valid, k, -1)
        cur = np.searchsorted(self.key_start, k, side="right") - 1
        cur = np.where(k < 0, -1, cur)
        for _ in range(int(self.depth.max()) + 2):
            bad = (cur >= 0) & (self.key_end[np.clip(cur, 0, None)] < k)
            if not bad.any():
                break
            cur = np.where(bad, self.parent[np.clip(cur, 0, None)], cur)
        return cur

    def nearest_flagged(self, flag: np.ndarray, stop: np.ndarray | None = None) -> np.ndarray:
        """For every range: itself if flagged, else its nearest flagged ancestor; -1 if none or if a
        `stop` range is met first (e.g. the op range of a kernel must lie inside its layer range)."""
        out = np.full(len(self), -1, dtype=I64)
        for d in range(int(self.depth.max()) + 1 if len(self) else 0):
            idx = np.nonzero(self.depth == d)[0]
            par = self.parent[idx]
            inherited = np.where(par >= 0, out[np.clip(par, 0, None)], -1)
            if stop is not None:
                inherited = np.where(stop[idx], -1, inherited)
            out[idx] = np.where(flag[idx], idx, inherited)
        return out


def build_tree(ranges: pd.DataFrame) -> RangeTree:
    """`ranges`: closed push/pop ranges with start_ns, end_ns, global_tid (one thread each).

    Zero-length ranges are dropped: they cannot contain an API call, and they break the depth count."""
    df = ranges[ranges["end_ns"].to_numpy() > ranges["start_ns"].to_numpy()].reset_index(drop=True)
    if len(df) == 0:
        e = np.zeros(0, dtype=I64)
        return RangeTree(df.assign(pos=e), e, e, e, e, pd.Index([], dtype="int64"), 0, 1)
    tids = pd.Index(pd.unique(df["global_tid"].to_numpy()))
    codes = tids.get_indexer(df["global_tid"].to_numpy()).astype(I64)
    s = df["start_ns"].to_numpy(I64)
    e = np.maximum(df["end_ns"].to_numpy(I64), s)
    lo = int(s.min()) - 1
    span = int(e.max()) - lo + 2
    if span * (len(tids) + 1) >= 2**62:
        raise OverflowError("NVTX time span too large to lay threads end to end")
    ks = codes * span + (s - lo)
    ke = codes * span + (e - lo)
    order = np.lexsort((-ke, ks))  # start ascending, longer first on ties (parents before children)
    ks, ke = ks[order], ke[order]
    df = df.take(order).reset_index(drop=True)
    n = len(ks)
    # depth = ranges opened before i (i of them) minus ranges closed at or before start_i
    closed = np.searchsorted(np.sort(ke), ks, side="right")
    depth = np.arange(n, dtype=I64) - closed
    depth = np.maximum(depth, 0)
    parent = np.full(n, -1, dtype=I64)
    positions = {d: np.nonzero(depth == d)[0] for d in range(int(depth.max()) + 1)}
    for d in range(1, int(depth.max()) + 1):
        idx = positions[d]
        prev = positions.get(d - 1, np.zeros(0, dtype=I64))
        if len(prev) == 0:
            continue
        j = np.searchsorted(prev, idx) - 1
        parent[idx] = np.where(j >= 0, prev[np.clip(j, 0, None)], -1)
    df["pos"] = np.arange(n)
    return RangeTree(df, ks, ke, parent, depth, tids, lo, span)
