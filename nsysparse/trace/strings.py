"""StringIds: interned strings, resolved to pandas Categoricals without per-row Python work."""

from __future__ import annotations

import numpy as np
import pandas as pd


class Strings:
    """Maps StringIds ids to values. `categorical(ids)` builds a compact Categorical for a column."""

    def __init__(self, ids: np.ndarray, values: np.ndarray) -> None:
        codes, uniques = pd.factorize(pd.Series(values, dtype="object"), sort=False)
        ids = ids.astype(np.int64, copy=False)
        # never size an array by the ids themselves (an id of 2^40 in a 2 MB file): sorted ids, binary search
        order = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[order]
        self._sorted_codes = np.asarray(codes, dtype=np.int64)[order]
        self.categories = pd.Index(uniques, dtype="object")
        self._value_of_id = {int(i): v for i, v in zip(ids, values)} if len(ids) < 200_000 else None
        self._ids = ids
        self._values = values

    @classmethod
    def empty(cls) -> Strings:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object))

    def get(self, string_id: int | None) -> str | None:
        if string_id is None or string_id < 0:
            return None
        if self._value_of_id is not None:
            return self._value_of_id.get(int(string_id))
        hit = np.nonzero(self._ids == string_id)[0]
        return str(self._values[hit[0]]) if len(hit) else None

    def codes(self, ids: np.ndarray) -> np.ndarray:
        """Category codes (into `self.categories`) for an array of string ids; -1 where unknown."""
        ids = np.asarray(ids, dtype=np.int64)
        n = len(self._sorted_ids)
        if n == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(self._sorted_ids, ids), 0, n - 1)
        return np.where(self._sorted_ids[pos] == ids, self._sorted_codes[pos], -1)

    def categorical(self, ids: np.ndarray) -> pd.Categorical:
        """A Categorical of the values of `ids` (NaN where unknown) with only the categories used, in
        `categories` order. The distinct ids are looked up, not every row (a column of millions of ids
        holds a few hundred distinct ones)."""
        ids = np.asarray(ids, dtype=np.int64)
        k = len(self.categories)
        if k == 0 or len(ids) == 0:
            return compact_categorical(self.codes(ids), self.categories)
        if int(ids.min()) >= 0 and int(ids.max()) < 1 << 22:  # StringIds ids are small: a table, not a hash
            seen = np.zeros(int(ids.max()) + 1, dtype=bool)
            seen[ids] = True
            distinct = np.flatnonzero(seen)
            inverse = (np.cumsum(seen) - 1).astype(np.int32)[ids]
        else:
            inverse, distinct = pd.factorize(ids, sort=False)
        codes = self.codes(np.asarray(distinct, dtype=np.int64))
        used = np.zeros(k, dtype=bool)
        used[codes[codes >= 0]] = True
        remap = np.where(codes >= 0, (np.cumsum(used) - 1)[np.clip(codes, 0, k - 1)], -1)
        small = np.int8 if used.sum() < 127 else np.int16 if used.sum() < 32767 else np.int32  # the codes' own width
        return pd.Categorical.from_codes(remap.astype(small)[inverse], categories=self.categories[used], validate=False)


def compact_categorical(codes: np.ndarray, categories: pd.Index) -> pd.Categorical:
    """Categorical holding only the categories that `codes` uses (O(n + k), no sort of the rows)."""
    k = len(categories)
    if k == 0 or len(codes) == 0:
        return pd.Categorical.from_codes(np.full(len(codes), -1, dtype=np.int64), categories=pd.Index([], dtype="object"))
    used = np.zeros(k, dtype=bool)
    valid = codes >= 0
    used[codes[valid]] = True
    remap = np.cumsum(used) - 1
    new_codes = np.where(valid, remap[np.clip(codes, 0, k - 1)], -1)
    return pd.Categorical.from_codes(new_codes, categories=categories[used])


def strip_version_suffix(names: pd.Categorical) -> pd.Categorical:
    """`cudaLaunchKernel_v7000` -> `cudaLaunchKernel`, done once per category, not per row."""
    cats = pd.Series(names.categories, dtype="object")
    stripped = cats.str.replace(r"_v\d+$", "", regex=True)
    codes, uniques = pd.factorize(stripped, sort=False)
    if len(uniques) == len(cats):  # no two names merge: the same codes (factorize keeps the order)
        return pd.Categorical.from_codes(names.codes, categories=pd.Index(uniques, dtype="object"), validate=False)
    # the row codes through a table of one entry per category (and -1 for NaN, at index -1), in their own width
    table = np.append(np.asarray(codes), -1).astype(names.codes.dtype)
    return pd.Categorical.from_codes(table[names.codes], categories=pd.Index(uniques, dtype="object"), validate=False)
