"""The array versions of mapping's tables and of classify's distinct pairs give what the pandas group-bys gave."""

import numpy as np
import pandas as pd
import pytest

from nsysparse.rules.classify import _distinct
from nsysparse.structure.mapping import _layer_table


@pytest.mark.parametrize("bound", [50, 10**9])
def test_distinct_is_unique_with_inverse(bound: int) -> None:
    codes = np.random.default_rng(0).integers(0, min(bound, 40), 500) * (bound // 50)
    uniq, inv = _distinct(codes, bound)
    want_u, want_inv = np.unique(codes, return_inverse=True)
    assert uniq.tolist() == want_u.tolist() and inv.tolist() == want_inv.ravel().tolist()


def test_layer_table_matches_groupby() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    layer = rng.choice(np.array([-1, 0, 3, 4, 7, 9, 12]), n)
    step = np.where(layer >= 0, layer // 4, rng.integers(-1, 4, n))
    start = np.sort(rng.integers(0, 10**6, n))
    k = pd.DataFrame(
        {
            "layer_id": layer,
            "step": step,
            "layer_name": pd.Categorical([f"layer_{x}" for x in layer]),
            "layer_kind": pd.Categorical(np.where(layer % 2 == 0, "dense", "moe")),
            "start_ns": start,
            "end_ns": start + rng.integers(1, 500, n),
        }
    )
    k["dur_ns"] = k["end_ns"] - k["start_ns"]
    got = _layer_table(k, "template")
    g = k[k["layer_id"] >= 0].groupby("layer_id")
    want = pd.DataFrame(
        {
            "step": g["step"].first(),
            "layer_name": g["layer_name"].first(),
            "layer_kind": g["layer_kind"].first().astype(str),
            "start_ns": g["start_ns"].min(),
            "end_ns": g["end_ns"].max(),
            "kernel_ns": g["dur_ns"].sum(),
            "kernels": g.size(),
        }
    ).reset_index()
    want = want.sort_values(["step", "start_ns"]).reset_index(drop=True)
    want["layer_index"] = want.groupby("step").cumcount()
    want["source"] = "template"
    pd.testing.assert_frame_equal(got, want[got.columns.tolist()], check_exact=True)
