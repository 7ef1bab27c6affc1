"""NVTX push/pop ranges as per-thread trees, and "innermost range containing a CPU timestamp" queries.

Everything is vectorised. Threads are laid end to end on one time axis (thread code × span + time), so
one sort covers all threads. For properly nested ranges sorted by start (ties: longer first), the
depth of range i is i − #(ranges ended by start_i), and its parent is the last range before it at
depth − 1 (pre-order). A query t goes to the last range starting at or before t, then climbs parents
while that range ended before t: at most max-depth vectorised steps, O((n + q) log n) overall.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nsysparse.structure.runs import first_seen, positions_in, run_starts, searchsorted_right

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
    levels: list[np.ndarray] = field(default_factory=list)  # tree positions at each depth, ascending

    def __len__(self) -> int:
        return len(self.key_start)

    def keys(self, global_tid: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Query keys on the shared axis; -1 where the thread has no ranges or ts is outside every range."""
        key = ts.astype(I64)  # a new array, made the key in place
        key -= self.lo
        ok = key.view(np.uint64) < self.span  # 0 <= ts - lo < span
        if len(run_starts(global_tid)) <= 1:  # launches come in long runs from one thread, often all from one
            code = int(self.tid_codes.get_indexer(global_tid[:1])[0]) if len(global_tid) else -1
            key += max(code, 0) * self.span
            if code < 0:
                ok[:] = False
        else:
            codes = positions_in(self.tid_codes, global_tid).astype(I64)
            ok &= codes >= 0
            codes *= self.span
            key += codes
        key[~ok] = -1
        return key

    def innermost(self, global_tid: np.ndarray, ts: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Tree position of the innermost range on `global_tid` containing `ts` (start ≤ ts ≤ end), or -1."""
        n = len(ts)
        if len(self) == 0 or n == 0:
            return np.full(n, -1, dtype=I64)
        k = self.keys(global_tid, ts)
        if valid is not None:
            k[~valid] = -1
        q = None if int(k.min()) >= 0 else np.flatnonzero(k >= 0)
        kq = k if q is None else k[q]
        cur = searchsorted_right(self.key_start, kq)  # the queries are usually in time order
        cur -= 1  # the last range starting at or before each query
        end = np.append(self.key_end, np.iinfo(I64).max)  # at -1 (no range): an end no query passes
        climb = np.flatnonzero(end[cur] < kq)  # the queries whose range ended before them climb, one level a step
        for _ in range(int(self.depth.max()) + 2):
            if len(climb) == 0:
                break
            up = self.parent[cur[climb]]
            cur[climb] = up
            climb = climb[end[up] < kq[climb]]
        if q is None:
            return cur
        out = np.full(n, -1, dtype=I64)
        out[q] = cur
        return out

    def nearest_flagged(self, flag: np.ndarray, stop: np.ndarray | None = None) -> np.ndarray:
        """For every range: itself if flagged, else its nearest flagged ancestor; -1 if none or if a
        `stop` range is met first (e.g. the op range of a kernel must lie inside its layer range)."""
        out = np.full(len(self) + 1, -1, dtype=I64)  # the spare last entry answers for parent -1
        for idx in self.levels:  # parents before children
            inherited = out[self.parent[idx]]
            if stop is not None:
                inherited[stop[idx]] = -1
            out[idx] = np.where(flag[idx], idx, inherited)
        return out[:-1]

    def with_flagged_below(self, flag: np.ndarray) -> np.ndarray:
        """For every range: whether a range strictly inside it (a descendant) is flagged. One pass per depth,
        deepest first."""
        below = np.zeros(len(self), dtype=bool)
        for idx in self.levels[:0:-1]:  # children before parents; the roots have none above them
            up = self.parent[idx[flag[idx] | below[idx]]]
            below[up[up >= 0]] = True
        return below


def build_tree(ranges: pd.DataFrame) -> RangeTree:
    """`ranges`: closed push/pop ranges with start_ns, end_ns, global_tid (one thread each).

    Zero-length ranges are dropped: they cannot contain an API call, and they break the depth count."""
    keep = ranges["end_ns"].to_numpy() > ranges["start_ns"].to_numpy()
    df = (ranges if keep.all() else ranges[keep]).reset_index(drop=True)
    if len(df) == 0:
        e = np.zeros(0, dtype=I64)
        return RangeTree(df.assign(pos=e), e, e, e, e, pd.Index([], dtype="int64"), 0, 1)
    tids, codes = first_seen(df["global_tid"].to_numpy())
    s = df["start_ns"].to_numpy(I64)
    e = df["end_ns"].to_numpy(I64)  # > s: empty ranges are gone
    lo = int(s.min()) - 1
    span = int(e.max()) - lo + 2
    if span * (len(tids) + 1) >= 2**62:
        raise OverflowError("NVTX time span too large to lay threads end to end")
    ks, ke = s - lo, e - lo
    if len(tids) > 1:
        ks += codes * span
        ke += codes * span
    order = _tree_order(codes, ks, ke)  # start ascending, longer first on ties (parents before children)
    if order is not None:
        ks, ke = ks[order], ke[order]
        df = df.take(order).reset_index(drop=True)
    n = len(ks)
    # depth = ranges opened before i (i of them) minus ranges closed at or before start_i
    depth = np.arange(n, dtype=I64)
    depth -= searchsorted_right(np.sort(ke, kind="stable"), ks)  # nested ends come in ascending runs
    np.maximum(depth, 0, out=depth)
    parent = np.full(n, -1, dtype=I64)
    levels = _levels(depth)
    for d in range(1, len(levels)):
        idx, prev = levels[d], levels[d - 1]
        if len(prev) == 0:
            continue
        j = searchsorted_right(prev, idx) - 1  # the last range one level up before each (positions differ: left = right)
        parent[idx] = np.append(prev, -1)[j]  # j = -1: none
    df["pos"] = np.arange(n)
    return RangeTree(df, ks, ke, parent, depth, tids, lo, span, levels)


def _levels(depth: np.ndarray) -> list[np.ndarray]:
    """The positions at each depth 0..max, ascending (one stable sort of the depths, which are small)."""
    order = np.argsort(depth.astype(np.uint8) if int(depth.max()) < 256 else depth, kind="stable")
    bounds = np.searchsorted(depth[order], np.arange(int(depth.max()) + 2))
    return [order[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]


def _tree_order(codes: np.ndarray, ks: np.ndarray, ke: np.ndarray) -> np.ndarray | None:
    """np.lexsort((-ke, ks)), or None when that is the identity. The ranges come sorted by start, so the keys
    (thread code × span + start) need only a stable sort by thread (none for one thread); a lexsort remains for
    input out of order, or ties of start not longer-first."""
    order = None if len(codes) < 2 or bool(np.all(codes[1:] == codes[:-1])) else np.argsort(codes, kind="stable")
    s = ks if order is None else ks[order]
    e = ke if order is None else ke[order]
    if len(s) > 1:
        up = s[1:] - s[:-1]
        if bool((up < 0).any()) or bool(((up == 0) & (e[1:] > e[:-1])).any()):
            return np.lexsort((-ke, ks))
    return order
