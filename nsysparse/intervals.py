"""Interval arithmetic on integer-ns arrays: vectorised sort/sweep, O(n log n), no Python loops per row.

Half-open intervals [start, end). Zero- or negative-length intervals contribute nothing.
"""

from __future__ import annotations

import numpy as np

I64 = np.int64


def merge(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of intervals as sorted, disjoint, non-touching [start, end) pairs."""
    s = np.asarray(starts, dtype=I64)
    e = np.asarray(ends, dtype=I64)
    keep = e > s
    s, e = s[keep], e[keep]
    if len(s) == 0:
        return s, e
    if len(s) > 1 and not bool(np.all(s[1:] >= s[:-1])):  # sorted input (the usual case) needs no sort
        order = np.argsort(s, kind="stable")
        s, e = s[order], e[order]
    reach = np.maximum.accumulate(e)
    # A new block starts where the interval begins after everything before it has ended.
    new = np.empty(len(s), dtype=bool)
    new[0] = True
    new[1:] = s[1:] > reach[:-1]
    # reach is non-decreasing, so a block ends at the reach of its last element.
    first = np.nonzero(new)[0]
    last = np.append(first[1:] - 1, len(s) - 1)
    return s[first], reach[last]


def union_ns(starts: np.ndarray, ends: np.ndarray) -> int:
    """Total length covered by at least one interval."""
    s, e = merge(starts, ends)
    return int((e - s).sum())


def gaps(starts: np.ndarray, ends: np.ndarray, lo: int | None = None, hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Complement of the union inside [lo, hi] (defaults: first start, last end)."""
    s, e = merge(starts, ends)
    if len(s) == 0:
        if lo is not None and hi is not None and hi > lo:
            return np.array([lo], dtype=I64), np.array([hi], dtype=I64)
        return s, e
    lo = int(s[0]) if lo is None else int(lo)
    hi = int(e[-1]) if hi is None else int(hi)
    gs = np.concatenate(([lo], e))
    ge = np.concatenate((s, [hi]))
    gs = np.maximum(gs, lo)
    ge = np.minimum(ge, hi)
    keep = ge > gs
    return gs[keep], ge[keep]


def clip_union_ns(starts: np.ndarray, ends: np.ndarray, lo: int, hi: int) -> int:
    """Union length restricted to [lo, hi)."""
    s = np.clip(np.asarray(starts, dtype=I64), lo, hi)
    e = np.clip(np.asarray(ends, dtype=I64), lo, hi)
    return union_ns(s, e)


def overlap_ns(a_starts: np.ndarray, a_ends: np.ndarray, b_starts: np.ndarray, b_ends: np.ndarray) -> int:
    """Length of union(A) ∩ union(B) = |A| + |B| - |A ∪ B|."""
    ua = union_ns(a_starts, a_ends)
    ub = union_ns(b_starts, b_ends)
    both = union_ns(np.concatenate((a_starts, b_starts)), np.concatenate((a_ends, b_ends)))
    return ua + ub - both


def union_by_group(groups: np.ndarray, starts: np.ndarray, ends: np.ndarray, n_groups: int | None = None) -> np.ndarray:
    """Union length per group (groups are codes 0..n-1). Groups are laid end to end on one axis so a
    single merge handles them all; falls back to a per-group loop only if that axis would overflow."""
    g = np.asarray(groups, dtype=I64)
    s = np.asarray(starts, dtype=I64)
    e = np.asarray(ends, dtype=I64)
    n = int(n_groups if n_groups is not None else (g.max() + 1 if len(g) else 0))
    out = np.zeros(n, dtype=I64)
    if len(g) == 0:
        return out
    lo = int(min(s.min(), e.min()))
    span = int(max(s.max(), e.max())) - lo + 1
    if span * (n + 1) < 2**62:
        off = g * span - lo
        ms, me = merge(s + off, e + off)
        block_group = ms // span
        np.add.at(out, block_group, me - ms)
        return out
    for k in range(n):  # pragma: no cover - only for absurd time spans
        m = g == k
        out[k] = union_ns(s[m], e[m])
    return out


class Groups:
    """Rows grouped by parallel integer key columns, the groups numbered in order of first appearance (those of
    pandas' groupby(sort=False)). One stable sort of the combined key puts each group's rows together; every
    reduction is a `reduceat` over that order, so no row is hashed."""

    def __init__(self, *keys: np.ndarray) -> None:
        key = _combined(keys)
        self.order = np.argsort(key, kind="stable")
        sk = key[self.order]
        self.bounds = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1]))) if len(sk) else np.zeros(0, dtype=I64)
        first = self.order[self.bounds]  # each run's first row (a stable sort keeps rows in order)
        self.perm = np.argsort(first, kind="stable")  # group id -> run
        self.first = first[self.perm]
        self.n = len(self.first)

    @property
    def ids(self) -> np.ndarray:
        """Each row's group id."""
        gid = np.empty(self.n, dtype=I64)
        gid[self.perm] = np.arange(self.n)
        out = np.empty(len(self.order), dtype=I64)
        out[self.order] = np.repeat(gid, np.diff(np.append(self.bounds, len(self.order))))
        return out

    def size(self) -> np.ndarray:
        return np.diff(np.append(self.bounds, len(self.order)))[self.perm].astype(I64)

    def _reduce(self, ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        if self.n == 0:
            return np.zeros(0, dtype=np.asarray(values).dtype)
        return ufunc.reduceat(np.asarray(values)[self.order], self.bounds)[self.perm]

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Sums per group: exact for integers (pandas' compensated float sums may differ in the last bits)."""
        return self._reduce(np.add, values)

    def min(self, values: np.ndarray) -> np.ndarray:
        return self._reduce(np.minimum, values)

    def max(self, values: np.ndarray) -> np.ndarray:
        return self._reduce(np.maximum, values)

    def quantiles(self, values: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
        """Quantiles per group as pandas' groupby().quantile computes them (linear interpolation between the
        sorted values; q = 0.5 is the median, halfway between the two middle values): shape (len(qs), n), float64."""
        size = self.size()
        start = np.concatenate(([0], np.cumsum(size)[:-1])).astype(I64)
        return sorted_quantiles(self._sorted_within(np.asarray(values)), start, size, qs)

    def _sorted_within(self, values: np.ndarray) -> np.ndarray:
        """`values` sorted by group id, then by value, as float64: one sort of an integer (group, value) key when the
        values are integers and the key fits, else a lexsort."""
        ids = self.ids
        if values.dtype.kind in "iu" and len(values):
            lo, span = int(values.min()), int(values.max()) - int(values.min()) + 1
            if self.n * span < 2**62:
                key = np.sort(ids * span + (values.astype(I64) - lo))
                return (key % span + lo).astype(np.float64)
        v = values.astype(np.float64)
        return v[np.lexsort((v, ids))]


def _combined(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """Parallel integer key columns as one int64 key (mixed radix), re-densified when it would overflow."""
    out = np.zeros(len(keys[0]) if keys else 0, dtype=I64)
    bound = 1  # out < bound
    for key in keys:
        k = np.asarray(key, dtype=I64)
        lo, span = (int(k.min()), int(k.max()) - int(k.min()) + 1) if len(k) else (0, 1)
        if bound * span >= 2**62:
            uniq, inv = np.unique(out, return_inverse=True)
            out, bound = inv.astype(I64).ravel(), len(uniq)
        out = out * span + (k - lo)
        bound *= span
    return out


def before_queries_in_blocks(groups: np.ndarray, starts: np.ndarray, ends: np.ndarray, q_groups: np.ndarray, q_times: np.ndarray) -> np.ndarray:
    """Which closed intervals [start, max(end, start)] lie in a block of their group's union (intervals that
    overlap or touch joined) holding query times of that group, and start no later than the last of them.
    Blocks are separated by uncovered time: how intervals nest in one block never depends on another's."""
    g = np.asarray(groups, dtype=I64)
    s = np.asarray(starts, dtype=I64)
    e = np.maximum(np.asarray(ends, dtype=I64), s)
    qg = np.asarray(q_groups, dtype=I64)
    qt = np.asarray(q_times, dtype=I64)
    out = np.zeros(len(s), dtype=bool)
    if len(s) == 0 or len(qt) == 0:
        return out
    single = int(g.min()) == int(g.max())
    ids = g[:1] if single else np.unique(g)
    lo = int(min(s.min(), qt.min())) - 1
    span = int(max(e.max(), qt.max())) - lo + 2
    if span * (len(ids) + 1) >= 2**62:  # pragma: no cover - absurd time spans: keep every interval
        out[:] = True
        return out
    if single:  # one group: its times are the keys (the queries' too, as group 0 with lo subtracted below)
        ks, ke = s - lo, e - lo
    else:
        gc = np.searchsorted(ids, g)
        ks, ke = gc * span + (s - lo), gc * span + (e - lo)
    order: np.ndarray | None = None
    if len(ks) > 1 and not bool(np.all(ks[1:] >= ks[:-1])):
        order = np.argsort(ks, kind="stable")
        ks, ke = ks[order], ke[order]
    reach = np.maximum.accumulate(ke)
    new = np.empty(len(ks), dtype=bool)
    new[0] = True
    new[1:] = ks[1:] > reach[:-1]
    first = np.flatnonzero(new)
    block_end = reach[np.r_[first[1:] - 1, len(ks) - 1]]
    qpos = np.minimum(np.searchsorted(ids, qg), len(ids) - 1)
    qk = qpos * span + (qt - lo)
    j = np.searchsorted(ks[first], qk, side="right") - 1
    held = (ids[qpos] == qg) & (j >= 0) & (qk <= block_end[np.maximum(j, 0)])
    last_query = np.full(len(first), -1, dtype=I64)  # keys are positive: -1 keeps nothing
    np.maximum.at(last_query, j[held], qk[held])
    keep = ks <= last_query[np.cumsum(new) - 1]
    if order is None:
        return keep
    out[order] = keep
    return out


def assign_to_windows(times: np.ndarray, win_starts: np.ndarray, win_ends: np.ndarray) -> np.ndarray:
    """Index of the window [start, end) holding each time, or -1. Windows must be sorted and disjoint."""
    t = np.asarray(times, dtype=I64)
    ws = np.asarray(win_starts, dtype=I64)
    we = np.asarray(win_ends, dtype=I64)
    if len(ws) == 0:
        return np.full(len(t), -1, dtype=I64)
    idx = np.searchsorted(ws, t, side="right") - 1
    ok = (idx >= 0) & (t < we[np.clip(idx, 0, len(we) - 1)])
    return np.where(ok, idx, -1)


RANK_PIECE = 8192
"""Sorted keys searched at a time by `Coverage.rank`."""
LOCAL_MIN = 1 << 20
"""A coverage of more intervals builds its prefix arrays per lookup, for the run of intervals the keys span."""
BLOCK = 4096
"""Intervals per block of the maxima that give the latest end before a run."""
PIECE = 1 << 20
"""Intervals per piece of the pass that answers few keys far apart in a large coverage."""
RUN_SLACK = 1 << 16
"""A lookup's run of intervals is short when it is at most 4 per key and this many more."""


class Coverage:
    """Union of intervals per group (thread, device), answering "how much of [a, b] is covered" and "how many
    intervals start in (a, b]" for many windows at once. Groups share one axis (group code × span + time).

    Per interval, in start order on that axis, two prefix values make both answers one binary search per
    time: the number of starts at or before a time k is the insertion point i of k, and the time covered
    up to k is min(k + lead[i], top[i]), where lead = (covered up to that start) − start and top = covered
    up to the end of the reach so far (the union is contiguous from a start to the reach). Sentinels at
    i = 0 give 0. A large coverage builds these arrays per lookup, for the run of intervals its keys span
    (counted from the run's first start, the latest end before it carried in): a chunk of windows in time
    order needs memory for its own run only. `nested` builds coverages of several subsets of the same
    intervals on one axis, so that one `keys` serves them all."""

    def __init__(self, groups: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        g = np.asarray(groups, dtype=I64)
        s = np.asarray(starts, dtype=I64)
        e = np.asarray(ends, dtype=I64)
        rising = self._axis(g, s, e)
        ks, ke, _ = self._sorted_keys(g, s, e, rising)
        self._build(ks, ke)

    def _axis(self, g: np.ndarray, s: np.ndarray, e: np.ndarray) -> bool:
        """The groups and the axis: group code × span + time − base (base 0 for one group: its keys are its
        times, no copy of them needed). Returns whether the starts are sorted."""
        n = len(s)
        if n == 0:
            self.groups, self.lo, self.span, self.base = g[:0].copy(), 0, 1, 0
            return True
        rising = n < 2 or bool(np.all(s[1:] >= s[:-1]))
        smin, smax = (int(s[0]), int(s[-1])) if rising else (int(s.min()), int(s.max()))
        self.lo = min(smin, int(e.min())) - 1
        self.span = max(smax, int(e.max())) - self.lo + 2
        single = int(g.min()) == int(g.max())
        self.groups = g[:1].copy() if single else np.unique(g)
        self.base = 0 if single else self.lo
        return rising

    def _sorted_keys(self, g: np.ndarray, s: np.ndarray, e: np.ndarray, rising: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Interval keys on the shared axis, sorted by start key, and the order that sorts them (None: the
        input order). Rows sorted by start (as the loaders give them) need only a stable sort by group code,
        a radix sort when the codes fit 16 bits, and one group none."""
        order: np.ndarray | None = None
        if len(self.groups) <= 1:
            if rising:
                return s, e, None
            order = np.argsort(s, kind="stable")
            return s[order], e[order], order
        gc = np.searchsorted(self.groups, g)
        code = gc.astype(np.int16) if len(self.groups) < 2**15 else gc
        order = np.argsort(code, kind="stable")
        base = gc[order] * self.span - self.base
        ks = s[order] + base
        ke = e[order] + base
        if not rising and not bool(np.all(ks[1:] >= ks[:-1])):
            o = np.argsort(ks, kind="stable")
            ks, ke, order = ks[o], ke[o], order[o]
        return ks, ke, order

    def _build(self, ks: np.ndarray, ke: np.ndarray) -> None:
        self.starts, self.ends = ks, ke
        self.lead: np.ndarray | None = None
        self.top: np.ndarray | None = None
        self._local_work = 0
        self._block_max: np.ndarray | None = None
        if len(ks) <= LOCAL_MIN:
            self._whole()

    def _whole(self) -> tuple[np.ndarray, np.ndarray]:
        """`lead` and `top` of every interval (built on first use for a large coverage)."""
        if self.lead is None or self.top is None:
            self.lead, self.top = self._prefix(self.starts, self.ends, None)
        return self.lead, self.top

    def _prefix(self, ks: np.ndarray, ke: np.ndarray, carry: int | None) -> tuple[np.ndarray, np.ndarray]:
        """`lead` and `top` of a run of the sorted intervals, counted from its first start; `carry`: the latest
        end of the intervals before the run (None: there are none)."""
        n = len(ks)
        top = np.zeros(n + 1, dtype=I64)
        reach = top[1:]  # the running latest end, computed where `top` will be (no third array)
        if n:
            np.maximum.accumulate(ke, out=reach)
            if carry is not None:
                np.maximum(reach, carry, out=reach)
        # covered from the first start up to each start: the sum of the covered parts of (start_{j-1}, start_j]
        lead = np.zeros(n + 1, dtype=I64)
        lead[0] = self.base - self.lo  # keys are at least lo − base: the sentinel's min(k + lead, top) is 0
        if n > 1:
            part = lead[2:]
            np.minimum(ks[1:], reach[:-1], out=part)
            part -= ks[:-1]
            np.maximum(part, 0, out=part)
            np.cumsum(part, out=part)
        if n:
            reach -= ks
            np.maximum(reach, 0, out=reach)
            reach += lead[1:]
            lead[1:] -= ks
        return lead, top

    def _for_ranks(self, i: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
        """`lead`, `top` and the first interval they start at, for keys of ranks `i`: of every interval when they
        are built; else of the run of intervals the keys span when that is short (a chunk of windows in time
        order: memory for that run only, in cache); else None (few keys far apart: a pass over the intervals)."""
        if self.lead is not None and self.top is not None:
            return self.lead, self.top, 0
        n = len(self.starts)
        first = max(int(i.min()) - 1, 0) if len(i) else 0  # the last start at or before the smallest key
        last = int(i.max()) if len(i) else 0
        if last - first > 4 * len(i) + RUN_SLACK:
            if self._local_work <= 2 * n:
                return None
            lead, top = self._whole()  # the keys of many lookups span the intervals again and again
            return lead, top, 0
        self._local_work += last - first
        lead, top = self._prefix(self.starts[first:last], self.ends[first:last], self._reach_before(first))
        return lead, top, first

    def _up_in_pieces(self, k: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Time covered up to each key (from the first start), in one pass over the intervals in pieces of PIECE:
        each piece's arrays counted from its first start, offset by the time covered before it."""
        order = None if len(i) < 2 or bool(np.all(i[1:] >= i[:-1])) else np.argsort(i, kind="stable")
        ks, ri = (k, i) if order is None else (k[order], i[order])
        up = np.zeros(len(ks), dtype=I64)  # rank 0: nothing starts before the key
        before, carry = 0, None  # time covered before the piece's first start; the latest end before it
        n = len(self.starts)
        for p0 in range(0, n, PIECE):  # a few pieces, each vectorised
            p1 = min(p0 + PIECE, n)
            a, b = np.searchsorted(ri, [p0, p1], side="right")  # keys whose last start at or before them is in the piece
            s, e = self.starts[p0:p1], self.ends[p0:p1]
            lead, top = self._prefix(s, e, carry)
            if b > a:
                j = ri[a:b] - p0
                up[a:b] = np.minimum(ks[a:b] + lead[j], top[j]) + before
            if p1 < n:
                nxt = int(self.starts[p1])
                before += int(min(nxt + lead[p1 - p0], top[p1 - p0]))  # covered from the piece's first start to the next's
                carry = int(e.max()) if carry is None else max(carry, int(e.max()))
        if order is None:
            return up
        out = np.empty_like(up)
        out[order] = up
        return out

    def _reach_before(self, j: int) -> int | None:
        """The latest end of intervals 0..j-1 (None when j = 0), from maxima of blocks of BLOCK ends."""
        if j == 0:
            return None
        if self._block_max is None:
            self._block_max = np.maximum.accumulate(np.maximum.reduceat(self.ends, np.arange(0, len(self.ends), BLOCK)))
        full_blocks = j // BLOCK
        parts = [int(self._block_max[full_blocks - 1])] if full_blocks else []
        if j % BLOCK:
            parts.append(int(self.ends[full_blocks * BLOCK : j].max()))
        return max(parts)

    @classmethod
    def nested(cls, groups: np.ndarray, starts: np.ndarray, ends: np.ndarray, subsets: dict[str, np.ndarray]) -> tuple[Coverage, dict[str, Coverage]]:
        """The coverage of all the intervals and of each boolean subset, on one axis."""
        g = np.asarray(groups, dtype=I64)
        s = np.asarray(starts, dtype=I64)
        e = np.asarray(ends, dtype=I64)
        full = cls.__new__(cls)
        rising = full._axis(g, s, e)
        ks, ke, order = full._sorted_keys(g, s, e, rising)
        parts = {}
        for name, mask in subsets.items():
            part = cls.__new__(cls)
            part.groups, part.lo, part.span, part.base = full.groups, full.lo, full.span, full.base
            m = np.asarray(mask, dtype=bool)
            rows = np.flatnonzero(m if order is None else m[order])
            part._build(ks[rows], ke[rows])
            parts[name] = part
        full._build(ks, ke)
        return full, parts

    def keys(self, groups: np.ndarray, *times: np.ndarray) -> tuple[np.ndarray, ...]:
        """Whether each group has intervals here, and the keys of each array of times on the shared axis (times
        outside the axis clipped to its ends, where nothing changes)."""
        g = np.asarray(groups, dtype=I64)
        ts = [np.asarray(t, dtype=I64) for t in times]
        if len(self.groups) == 1:
            return (g == self.groups[0], *(np.clip(t, self.lo, self.lo + self.span - 1) for t in ts))
        offs = [np.clip(t - self.lo, 0, self.span - 1) for t in ts]
        if len(self.groups) == 0:
            return (np.zeros(len(g), dtype=bool), *offs)
        if len(g) and bool(np.all(g == g[0])):  # one group asked for (one launching thread): one lookup
            p0 = min(int(np.searchsorted(self.groups, g[0])), len(self.groups) - 1)
            for off in offs:
                off += p0 * self.span
            return (np.full(len(g), bool(self.groups[p0] == g[0])), *offs)
        pos = np.minimum(np.searchsorted(self.groups, g), len(self.groups) - 1)
        known = self.groups[pos] == g
        base = pos * self.span
        for off in offs:
            off += base
        return (known, *offs)

    def at(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For keys `k`: the time covered up to each (counted from a start at or before the smallest key: only
        differences of keys of one call mean something), and the number of intervals starting at or before it."""
        i = self.rank(k)
        arrays = self._for_ranks(i)
        if arrays is None:
            return self._up_in_pieces(k, i), i
        lead, top, first = arrays
        j = i - first if first else i
        up = lead[j]
        up += k
        np.minimum(up, top[j], out=up)
        return up, i

    def rank(self, k: np.ndarray) -> np.ndarray:
        """The number of interval starts at or before each key. Many sorted keys are searched piece by piece, each
        piece only among the starts between its first key and the next piece's (a short search in memory that
        is already cached, instead of one over every start)."""
        starts = self.starts
        m = len(k)
        if m < 4 * RANK_PIECE or len(starts) < 4 * RANK_PIECE or not bool(np.all(k[1:] >= k[:-1])):
            return np.searchsorted(starts, k, side="right")
        out = np.empty(m, dtype=I64)
        bounds = np.searchsorted(starts, k[np.r_[np.arange(0, m, RANK_PIECE), m - 1]], side="right")
        for p, lo in enumerate(range(0, m, RANK_PIECE)):  # a few hundred pieces, each vectorised
            piece = k[lo : lo + RANK_PIECE]
            a, b = int(bounds[p]), int(bounds[p + 1])
            out[lo : lo + len(piece)] = np.searchsorted(starts[a:b], piece, side="right") + a
        return out

    def covered_between(self, known: np.ndarray, ka: np.ndarray, kb: np.ndarray) -> np.ndarray:
        """Covered time of the windows [ka, kb] of `keys` (0 for unknown groups and empty windows)."""
        out = np.zeros(len(ka), dtype=I64)
        rows = self._touching(ka, kb)
        if rows is not None:  # few intervals, sorted windows: only the windows they touch
            known = known[rows]
            ka, kb = ka[rows], kb[rows]
        ends = np.empty(2 * len(ka), dtype=I64)  # one lookup: interleaved, consecutive windows' keys are in order
        ends[0::2], ends[1::2] = ka, kb
        up, _ = self.at(ends)
        ub = up[1::2] - up[0::2]
        np.maximum(ub, 0, out=ub)
        ub[~known] = 0
        if rows is None:
            return ub
        out[rows] = ub
        return out

    def _touching(self, ka: np.ndarray, kb: np.ndarray) -> np.ndarray | None:
        """When the windows' starts and ends are each sorted and far fewer intervals than windows lie in their
        span: the windows that meet the union, found from the intervals' side (each meets a run of windows, and
        the runs' ends rise with the intervals), else None. On the axis the union is that of [start_j, reach_j),
        reach_j = top_j − lead_j."""
        m = len(ka)
        if m < 64 or not (bool(np.all(ka[1:] >= ka[:-1])) and bool(np.all(kb[1:] >= kb[:-1]))):
            return None
        reach = self.__dict__.get("_reach")
        if reach is None:
            lead, top = self._whole()
            reach = self._reach = top[1:] - lead[1:]  # non-decreasing
        lo, hi = int(np.searchsorted(reach, ka[0], side="right")), int(np.searchsorted(self.starts, kb[-1], side="left"))
        if (hi - lo) * 4 > m:
            return None
        first = np.searchsorted(kb, self.starts[lo:hi], side="right")  # windows ending after the interval starts
        last = np.searchsorted(ka, reach[lo:hi], side="left")  # ... and starting before it ends
        if len(first) > 1:  # the runs made disjoint: each starts where the ones before it ended at the latest
            np.maximum(first[1:], last[:-1], out=first[1:])
        size = np.maximum(last - first, 0)
        total = int(size.sum())
        return np.arange(total, dtype=I64) + np.repeat(first - (np.cumsum(size) - size), size)

    def covered(self, groups: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        known, ka, kb = self.keys(groups, a, b)
        return self.covered_between(known, ka, kb)

    def count_starts(self, groups: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Intervals (any length) starting in (a, b]."""
        known, ka, kb = self.keys(groups, a, b)
        n = np.searchsorted(self.starts, kb, side="right") - np.searchsorted(self.starts, ka, side="right")
        return np.where(known, n, 0)


def sorted_quantiles(sv: np.ndarray, start: np.ndarray, size: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """Quantiles of groups stored as runs of a sorted array (group g: sv[start[g] : start[g] + size[g]], each
    run sorted, size >= 1), as pandas' groupby().quantile computes them: linear interpolation between the
    sorted values, and q = 0.5 halfway between the two middle values. Shape (len(qs), len(start)), float64."""
    size = np.asarray(size).astype(I64, copy=False)
    out = np.empty((len(qs), len(start)), dtype=np.float64)
    for row, q in enumerate(qs):  # a few quantiles, each vectorised over the groups
        pos = q * (size - 1).astype(np.float64)
        idx = pos.astype(I64)
        frac = pos % 1
        val = sv[start + idx]
        nxt = sv[start + np.minimum(idx + 1, size - 1)]
        between = (val + nxt) / 2 if q == 0.5 else val + (nxt - val) * frac  # pandas' median and quantile formulas
        out[row] = np.where(frac == 0.0, val, between)
    return out
