"""Work per distinct value of a text column, broadcast back through integer codes.

Trace columns repeat a few hundred strings millions of times (kernel names, API names, NVTX texts, op
names); hashing or matching every row is the slow path. These helpers turn a column into codes once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd


def _categorical(values: pd.Series) -> pd.Series:
    return values if isinstance(values.dtype, pd.CategoricalDtype) else values.astype("category")


def dense_codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes into the distinct strings of `values`, and those strings; a missing value gets the code of
    "" (the category "" if there is one, else an "" appended at the end)."""
    cat = _categorical(values)
    strings = [str(c) for c in cat.cat.categories]
    empty = strings.index("") if "" in strings else len(strings)
    if empty == len(strings):
        strings.append("")
    codes = cat.cat.codes.to_numpy().astype(np.int64)
    if len(codes) and int(codes.min()) < 0:
        codes[codes < 0] = empty
    return codes, strings


def code_dtype(n: int) -> type[np.signedinteger]:
    """The integer type pandas keeps the codes of `n` categories in (codes built in it need no conversion)."""
    for t in (np.int8, np.int16, np.int32):
        if n < np.iinfo(t).max:
            return t
    return np.int64


def map_distinct(values: pd.Series, fn: Callable[[str], Any], dtype: Any, missing: Any) -> np.ndarray:
    """fn(value) for every row, evaluated once per distinct value; `missing` where the value is missing."""
    cat = _categorical(values)
    table = np.array([fn(str(c)) for c in cat.cat.categories] + [missing], dtype=dtype)
    return table[cat.cat.codes.to_numpy()]  # a missing value's code, -1, picks `missing` at the end
