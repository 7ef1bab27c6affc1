"""StringIds Categoricals: the per-category shortcuts give what the per-row definitions give."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from nsysparse.trace.strings import Strings, strip_version_suffix

NAMES = ["cudaLaunchKernel_v7000", "cudaLaunchKernel", "cudaMemcpyAsync_v3020", "cudaStreamSynchronize", "cuLaunchKernel_v2", "x_v1_v2", "_v9"]


@given(st.lists(st.integers(-1, len(NAMES) - 1), max_size=60), st.permutations(NAMES), st.integers(1, len(NAMES)))
def test_strip_version_suffix_is_the_per_row_regex(picks, names, k):
    cats = names[:k]
    codes = np.array([p if p < k else -1 for p in picks], dtype=np.int8)
    got = strip_version_suffix(pd.Categorical.from_codes(codes, categories=pd.Index(cats, dtype="object")))
    expected = [None if c < 0 else re.sub(r"_v\d+$", "", cats[c]) for c in codes]
    assert [None if pd.isna(v) else v for v in got.astype(object)] == expected
    assert len(set(got.categories)) == len(got.categories)  # merged names are one category


@given(st.lists(st.integers(0, 40), max_size=80), st.lists(st.sampled_from(["a", "b", "c", "a"]), min_size=41, max_size=41))
def test_categorical_is_the_lookup_of_each_id(ids, values):
    strings = Strings(np.arange(0, 82, 2, dtype=np.int64), np.array(values, dtype=object))  # even ids only
    got = strings.categorical(np.array(ids, dtype=np.int64))
    expected = [values[i // 2] if i % 2 == 0 else None for i in ids]
    assert [None if pd.isna(v) else v for v in got.astype(object)] == expected
