"""Integer-array primitives of the mapping that use how traces are laid out: kernels sorted by start, launched
from a few threads onto a few streams, in steps and layers numbered in time order. Keys therefore come in long
runs of one value, or already sorted; these helpers give exactly what the general numpy/pandas call gives
(np.unique, pd.unique, Index.get_indexer, a stable argsort, a grouped union of intervals), with the work done
per run or skipped when the input is already in order, falling back to the general call otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nsysparse import intervals

I64 = np.int64


def run_starts(values: np.ndarray) -> np.ndarray:
    """Positions where a run of equal values begins (0 first; empty for empty input)."""
    if len(values) == 0:
        return np.zeros(0, dtype=I64)
    change = np.empty(len(values), dtype=bool)
    change[0] = True
    np.not_equal(values[1:], values[:-1], out=change[1:])
    return np.flatnonzero(change)


def _few_runs(starts: np.ndarray, n: int) -> bool:
    return len(starts) * 4 <= n


def unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_inverse=True) (the inverse flat), computed over the runs of equal values."""
    starts = run_starts(values)
    if not _few_runs(starts, len(values)):
        uniq, inv = np.unique(values, return_inverse=True)
        return uniq, inv.ravel()
    uniq, inv = np.unique(values[starts], return_inverse=True)
    return uniq, np.repeat(inv.ravel(), np.diff(np.append(starts, len(values))))


def unique_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_counts=True), computed over the runs of equal values."""
    starts = run_starts(values)
    if not _few_runs(starts, len(values)):
        return np.unique(values, return_counts=True)
    uniq, inv = np.unique(values[starts], return_inverse=True)
    counts = np.zeros(len(uniq), dtype=I64)
    np.add.at(counts, inv.ravel(), np.diff(np.append(starts, len(values))))
    return uniq, counts


def first_seen(values: np.ndarray) -> tuple[pd.Index, np.ndarray]:
    """pd.Index(pd.unique(values)) (in order of first appearance) and each value's position in it."""
    starts = run_starts(values)
    if not _few_runs(starts, len(values)):
        index = pd.Index(pd.unique(values))
        return index, index.get_indexer(values).astype(I64)
    heads = values[starts]
    index = pd.Index(pd.unique(heads))
    return index, np.repeat(index.get_indexer(heads).astype(I64), np.diff(np.append(starts, len(values))))


def positions_in(index: pd.Index, values: np.ndarray) -> np.ndarray:
    """index.get_indexer(values), looked up once per run of equal values."""
    starts = run_starts(values)
    if not _few_runs(starts, len(values)):
        return index.get_indexer(values)
    return np.repeat(index.get_indexer(values[starts]), np.diff(np.append(starts, len(values))))


def is_sorted(values: np.ndarray) -> bool:
    return len(values) < 2 or bool(np.all(values[1:] >= values[:-1]))


def stable_order(key: np.ndarray) -> np.ndarray | None:
    """np.argsort(key, kind="stable"), or None when that is the identity (the key is already sorted)."""
    return None if is_sorted(key) else np.argsort(key, kind="stable")


class SortedGroups:
    """Rows grouped by a non-negative integer key, each group's rows kept in their order: one stable sort (none
    when the key is already sorted). Groups are numbered in key order; `keys` holds each group's key."""

    def __init__(self, key: np.ndarray) -> None:
        self.order = stable_order(key)
        sk = self.take(key)
        self.bounds = run_starts(sk)
        self.keys = sk[self.bounds]
        self.sorted_key = sk

    def take(self, values: np.ndarray) -> np.ndarray:
        """`values` in group order."""
        return values if self.order is None else values[self.order]

    def size(self) -> np.ndarray:
        return np.diff(np.append(self.bounds, len(self.sorted_key))).astype(I64)

    def first(self) -> np.ndarray:
        """Each group's first row (a row number of the input)."""
        return self.bounds if self.order is None else self.order[self.bounds]

    def reduce(self, ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        if len(self.bounds) == 0:
            return np.zeros(0, dtype=values.dtype)
        return ufunc.reduceat(self.take(values), self.bounds)

    def union(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Per group, the length covered by its [start, end) intervals (those with end > start), as
        intervals.union_by_group gives. Needs each group's starts sorted in row order (kernels and copies in
        start order): one sweep of the running end, groups kept apart by laying them end to end."""
        s, e = self.take(starts).astype(I64, copy=False), self.take(ends).astype(I64, copy=False)
        if len(s) == 0:
            return np.zeros(0, dtype=I64)
        lo = int(min(s.min(), e.min()))
        span = int(max(s.max(), e.max())) - lo + 1
        g = self.sorted_key.astype(I64, copy=False)
        if span * (int(g.max()) + 2) >= 2**62 or not _sorted_within(s, self.bounds):
            return intervals.union_by_group(self._dense_ids(), s, e, len(self.bounds))
        off = g * span
        off -= lo
        reach = e + off
        np.maximum.accumulate(reach, out=reach)  # the running end; the groups lie apart, so it never crosses one
        new = np.add(s, off, out=off)
        np.maximum(new[1:], reach[:-1], out=new[1:])  # where each interval's new coverage can begin
        np.subtract(reach, new, out=new)  # what it adds to the union (negative: nothing)
        np.maximum(new, 0, out=new)
        return np.add.reduceat(new, self.bounds)

    def _dense_ids(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.bounds), dtype=I64), self.size())


def _sorted_within(values: np.ndarray, bounds: np.ndarray) -> bool:
    """Whether `values` is non-decreasing inside each group [bounds[i], bounds[i+1])."""
    if len(values) < 2:
        return True
    down = values[1:] < values[:-1]
    down[bounds[1:] - 1] = False  # a drop across a group boundary is allowed
    return not bool(down.any())


def searchsorted_right(sorted_a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """np.searchsorted(sorted_a, v, side="right"); for sorted `v` the values of `sorted_a` are looked up among the
    queries instead and counted (fewer searches when `sorted_a` is the shorter, and no temporary beyond the result)."""
    if len(v) < 2 or not is_sorted(v):
        return np.searchsorted(sorted_a, v, side="right")
    # a_j <= v_i exactly when i >= (the first query >= a_j), so the answer for v_i counts those firsts <= i
    count = np.bincount(np.searchsorted(v, sorted_a, side="left"), minlength=len(v) + 1)[: len(v)]
    return np.cumsum(count, out=count)
