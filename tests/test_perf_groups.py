"""intervals.Groups (the general coded group-by) gives pandas' groupby(sort=False) results."""

import numpy as np
import pandas as pd
import pytest

from nsysparse import intervals


@pytest.mark.parametrize("seed", range(12))
def test_groups_match_pandas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 2000))
    a, b = rng.integers(0, int(rng.integers(1, 40)), n), rng.integers(-3, 4, n)
    v = rng.integers(-5, 10**9 if seed % 2 else 1000, n)
    if seed % 4 == 0:
        v = v.astype(float) / 7  # float values take the lexsort path
    gb = pd.DataFrame({"a": a, "b": b, "v": v}).groupby(["a", "b"], sort=False)
    g = intervals.Groups(a, b)
    assert (g.ids == gb.ngroup().to_numpy()).all()
    assert (g.size() == gb.size().to_numpy()).all()
    if v.dtype.kind == "i":  # integer sums are exact (pandas sums floats with compensation: equal to rounding)
        assert (g.sum(v) == gb["v"].sum().to_numpy()).all()
    assert np.allclose(g.sum(v), gb["v"].sum().to_numpy(), rtol=1e-12, atol=0)
    assert (g.min(v) == gb["v"].min().to_numpy()).all()
    assert (g.max(v) == gb["v"].max().to_numpy()).all()
    med, p10, p90 = g.quantiles(v, (0.5, 0.1, 0.9))
    assert (med == gb["v"].median().to_numpy()).all()
    assert (p10 == gb["v"].quantile(0.1).to_numpy()).all()
    assert (p90 == gb["v"].quantile(0.9).to_numpy()).all()


def test_groups_overflowing_keys_and_empty() -> None:
    big = np.array([0, 2**40, 0, 2**40, 5], dtype=np.int64)
    g = intervals.Groups(big, big, big, np.array([1, 1, 2, 1, 1]))
    assert g.ids.tolist() == [0, 1, 2, 1, 3]
    empty = intervals.Groups(np.zeros(0, dtype=np.int64))
    assert empty.n == 0 and len(empty.sum(np.zeros(0, dtype=np.int64))) == 0
