"""Small helpers over op instances (the frame `Mapping.op_instances`, or its coded form `CodedInstances`)."""

from __future__ import annotations

import weakref

import numpy as np
import pandas as pd

from nsysparse.intervals import sorted_quantiles
from nsysparse.structure.instances import CodedInstances, coded_op_instances
from nsysparse.structure.mapping import Mapping

I64 = np.int64
_EXACT = 2**53  # integer sums below this are exact in float64 (np.bincount's weights)

_CODED: dict[int, tuple[weakref.ref[pd.DataFrame], CodedInstances]] = {}


def coded_instances(m: Mapping) -> CodedInstances:
    """The op instances of `m` with coded text columns, computed once per kernel frame (ops and layers both
    start here; `Mapping.op_instances` is the same rows as a frame of strings)."""
    k = m.kernels
    key = id(k)
    hit = _CODED.get(key)
    if hit is not None and hit[0]() is k:
        return hit[1]
    coded = coded_op_instances(k)

    def forget(_ref: weakref.ref[pd.DataFrame]) -> None:
        _CODED.pop(key, None)

    _CODED[key] = (weakref.ref(k, forget), coded)
    return coded


def int_sums(ids: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Exact int64 sums of integer `values` per id in 0..n-1 (np.bincount while float64 is exact, else np.add.at)."""
    if len(values) == 0 or int(np.abs(values).max()) * len(values) < _EXACT:
        return np.bincount(ids, weights=values, minlength=n).astype(I64)
    out = np.zeros(n, dtype=I64)
    np.add.at(out, ids, values)
    return out


class CodeGroups:
    """Rows grouped by one non-negative integer code below `bound` (a few thousand at most: layer kind × op), the
    groups numbered in order of first appearance (those of pandas' groupby(sort=False)). Sizes and sums are
    bincounts; quantiles take one sort of the (code, value) key."""

    def __init__(self, code: np.ndarray, bound: int) -> None:
        self.code = np.asarray(code, dtype=I64)
        self.bound = bound
        n = len(self.code)
        first = np.full(bound, n, dtype=I64)
        np.minimum.at(first, self.code, np.arange(n, dtype=I64))
        present = np.flatnonzero(first < n)
        self.codes = present[np.argsort(first[present], kind="stable")]  # group id -> code
        self.first = first[self.codes]  # each group's first row
        self.n = len(self.codes)
        self._size = np.bincount(self.code, minlength=bound)

    def size(self) -> np.ndarray:
        return self._size[self.codes].astype(I64)

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Exact sums of integer values per group."""
        return int_sums(self.code, values, self.bound)[self.codes]

    def quantiles(self, values: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
        """Quantiles per group as pandas' groupby().quantile computes them (linear interpolation between the sorted
        values; q = 0.5 is the median, halfway between the two middle values): shape (len(qs), n), float64 (the
        arithmetic of intervals.sorted_quantiles, as intervals.Groups.quantiles)."""
        sv = self._sorted_by_code(np.asarray(values))
        size_by_code = self._size
        start_by_code = np.concatenate(([0], np.cumsum(size_by_code)[:-1])).astype(I64)
        return sorted_quantiles(sv, start_by_code[self.codes], size_by_code[self.codes].astype(I64), qs)

    def _sorted_by_code(self, values: np.ndarray) -> np.ndarray:
        """`values` sorted by code, then by value, as float64: one sort of an int64 (code, value) key when the
        values are integers and the key fits, else a lexsort."""
        if values.dtype.kind in "iu" and len(values):
            lo, span = int(values.min()), int(values.max()) - int(values.min()) + 1
            if self.bound * span < 2**62:
                key = np.sort(self.code * span + (values.astype(I64) - lo))
                return (key % span + lo).astype(np.float64)
        v = values.astype(np.float64)
        return v[np.lexsort((v, self.code))]

    def dominant(self, codes: np.ndarray, strings: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Per group, the string (of `strings`, indexed by the rows' `codes`) carrying the most integer weight (e.g. the
        naming source covering most of an op's time); on a tie the first string in sort order. An object array."""
        nv = len(strings)
        pair = self.code * nv + np.asarray(codes, dtype=I64)
        w = int_sums(pair, weights, self.bound * nv).reshape(self.bound, nv)[self.codes]
        seen = np.bincount(pair, minlength=self.bound * nv).reshape(self.bound, nv)[self.codes] > 0
        by_text = np.array(sorted(range(nv), key=lambda i: str(strings[i])), dtype=I64)
        w, seen = w[:, by_text], seen[:, by_text]
        top = np.where(seen, w, np.iinfo(I64).min).max(axis=1)
        chosen = by_text[np.argmax(seen & (w == top[:, None]), axis=1)]  # the first string in sort order
        return np.asarray(strings, dtype=object)[chosen]
