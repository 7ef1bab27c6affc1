"""The run- and order-aware primitives of the mapping (structure.runs, structure.slices, the NVTX tree's fast paths,
Vocab.categorical, the naming precedence) give exactly what the general numpy/pandas calls they replace give."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsysparse import intervals
from nsysparse.structure import runs
from nsysparse.structure.loops import _nanmedian_columns, _runs
from nsysparse.structure.mapping import Vocab, _by_precedence, _in_steps, _merged_positions
from nsysparse.structure.nvtx import build_tree
from nsysparse.structure.slices import Slices
from nsysparse.structure.steps import assign_windows


def _runs_of(rng: np.random.Generator, n: int, distinct: int, mean_run: int) -> np.ndarray:
    """n values in runs of random length (mean `mean_run`), drawn from `distinct` values (large, negative too)."""
    values = rng.integers(-5, distinct, max(1, n // mean_run + 1)) * 1_000_003
    return np.repeat(values, rng.integers(1, 2 * mean_run, len(values)))[:n]


@pytest.mark.parametrize(("n", "distinct", "mean_run"), [(0, 3, 5), (1, 3, 5), (500, 4, 50), (500, 50, 1), (3000, 7, 200), (3000, 1, 3000)])
def test_run_primitives_match_numpy_and_pandas(n: int, distinct: int, mean_run: int) -> None:
    v = _runs_of(np.random.default_rng(n + distinct), n, distinct, mean_run)
    u, inv = runs.unique_inverse(v)
    want_u, want_inv = np.unique(v, return_inverse=True)
    assert u.tolist() == want_u.tolist() and inv.tolist() == want_inv.ravel().tolist()
    u, counts = runs.unique_counts(v)
    want_u, want_counts = np.unique(v, return_counts=True)
    assert u.tolist() == want_u.tolist() and counts.tolist() == want_counts.tolist()
    index, codes = runs.first_seen(v)
    want_index = pd.Index(pd.unique(v))
    assert index.equals(want_index) and codes.tolist() == want_index.get_indexer(v).tolist()
    probe = pd.Index(np.unique(v)[::2]) if n else pd.Index([], dtype="int64")
    assert runs.positions_in(probe, v).tolist() == probe.get_indexer(v).tolist()
    order = runs.stable_order(v)
    assert (np.arange(n) if order is None else order).tolist() == np.argsort(v, kind="stable").tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 200), st.integers(-20, 60)), max_size=60), st.booleans())
def test_grouped_union_matches_union_by_group(rows: list[tuple[int, int, int]], in_time: bool) -> None:
    df = pd.DataFrame(rows, columns=["g", "s", "d"], dtype=np.int64)
    df = df.sort_values("s", kind="stable") if in_time else df  # out of time order: the general union
    g, s, e = df["g"].to_numpy(), df["s"].to_numpy(), (df["s"] + df["d"]).to_numpy()
    groups = runs.SortedGroups(g)
    want = intervals.union_by_group(g, s, e, int(g.max()) + 1 if len(g) else 0)[groups.keys]
    assert groups.union(s, e).tolist() == want.tolist()
    assert groups.size().tolist() == [int((g == x).sum()) for x in groups.keys]
    assert groups.first().tolist() == [int(np.flatnonzero(g == x)[0]) for x in groups.keys]
    assert groups.reduce(np.minimum, s).tolist() == [int(s[g == x].min()) for x in groups.keys]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-5, 30), max_size=40), st.lists(st.integers(-8, 35), max_size=200), st.booleans(), st.booleans())
def test_searchsorted_right_matches_numpy(a: list[int], v: list[int], sort_v: bool, few: bool) -> None:
    sa = np.sort(np.array(a[:3] if few else a, dtype=np.int64))
    q = np.array(sorted(v) if sort_v else v, dtype=np.int64)
    assert runs.searchsorted_right(sa, q).tolist() == np.searchsorted(sa, q, side="right").tolist()


@pytest.mark.parametrize("size", [0, 1, 40, 200, 40_000])
def test_vocab_categorical_is_from_codes_without_unused(size: int) -> None:
    vocab = Vocab(*[f"v{i}" for i in range(size)])
    rng = np.random.default_rng(size)
    codes = rng.integers(0, max(size, 1), 5000).astype(np.int32) // 3 if size else np.zeros(0, dtype=np.int32)
    if not size:
        vocab = Vocab("only")
    got = vocab.categorical(codes)
    want = pd.Categorical.from_codes(codes, categories=vocab.values).remove_unused_categories()
    pd.testing.assert_extension_array_equal(got, want)
    assert got.codes.dtype == want.codes.dtype and got.categories.dtype == want.categories.dtype


def test_precedence_takes_the_first_named_source() -> None:
    rng = np.random.default_rng(3)
    cands = tuple(np.where(rng.random(1000) < 0.5, rng.integers(0, 9, 1000), -1).astype(np.int32) for _ in range(3))
    op, source = _by_precedence(cands, 99)
    stack = np.vstack(cands)
    named = (stack >= 0).any(axis=0)
    first = (stack >= 0).argmax(axis=0)
    assert op.dtype == np.int32 and source.dtype == np.int8
    assert op.tolist() == np.where(named, stack[first, np.arange(1000)], 99).tolist()
    assert source.tolist() == np.where(named, first, 3).tolist()


@st.composite
def nested_ranges(draw: st.DrawFn) -> pd.DataFrame:
    """Properly nested ranges on a few threads, rows sorted by start (as the NVTX table comes) or shuffled."""
    rows = []
    for tid in range(draw(st.integers(1, 3))):
        t, stack = 0, []
        for _ in range(draw(st.integers(0, 25))):
            t += draw(st.integers(0, 3))
            if stack and draw(st.booleans()):
                rows.append((stack.pop(), t, 10 + tid))
            else:
                stack.append(t)
        while stack:
            t += draw(st.integers(0, 3))
            rows.append((stack.pop(), t, 10 + tid))
    df = pd.DataFrame(rows, columns=["start_ns", "end_ns", "global_tid"], dtype=np.int64)
    how = draw(st.sampled_from(["start", "shuffle", "start-short-first"]))
    if how == "start":
        df = df.sort_values("start_ns", kind="stable")
    elif how == "start-short-first":
        df = df.sort_values(["start_ns", "end_ns"], kind="stable")
    else:
        df = df.sample(frac=1, random_state=draw(st.integers(0, 99)))
    return df.assign(text=[f"r{i}" for i in range(len(df))]).reset_index(drop=True)


@settings(max_examples=200, deadline=None)
@given(nested_ranges())
def test_tree_order_levels_and_flags_match_the_plain_walks(ranges: pd.DataFrame) -> None:
    tree = build_tree(ranges)
    df = ranges[ranges["end_ns"] > ranges["start_ns"]].reset_index(drop=True)
    codes = pd.Index(pd.unique(df["global_tid"].to_numpy())).get_indexer(df["global_tid"].to_numpy())
    span = int(df["end_ns"].max()) - int(df["start_ns"].min()) + 3 if len(df) else 1
    ks, ke = codes * span + df["start_ns"].to_numpy(), codes * span + df["end_ns"].to_numpy()
    want = df.take(np.lexsort((-ke, ks))).reset_index(drop=True)
    assert tree.frame["text"].tolist() == want["text"].tolist()
    assert [lvl.tolist() for lvl in tree.levels] == [np.flatnonzero(tree.depth == d).tolist() for d in range(int(tree.depth.max()) + 1 if len(tree) else 0)]
    flag = np.arange(len(tree)) % 3 == 0
    below = np.zeros(len(tree), dtype=bool)
    for i in np.flatnonzero(flag):  # every ancestor of a flagged range, one parent at a time
        p = tree.parent[i]
        while p >= 0:
            below[p] = True
            p = tree.parent[p]
    assert tree.with_flagged_below(flag).tolist() == below.tolist()


def test_slices_spread_and_write_match_a_loop_per_slice() -> None:
    rng = np.random.default_rng(5)
    seqs = ["abc", "ab", "abc", "x", "ab", "abc"]
    text = "".join(seqs)
    starts = np.concatenate(([0], np.cumsum([len(s) for s in seqs])[:-1]))
    order = rng.permutation(len(text) + 4)[: len(text)]
    sl = Slices(order, starts, text, ["t", "t", "t", "t", "u", "t"])
    assert sl.keys == [("abc", "t"), ("ab", "t"), ("x", "t"), ("ab", "u")]
    assert sl.group.tolist() == [0, 1, 0, 2, 3, 0] and sl.first.tolist() == [0, 1, 3, 4] and sl.count.tolist() == [3, 1, 1, 1]
    values = [np.array([1, -1, 3]), np.array([4, 5]), np.array([6]), np.array([-1, 8])]
    target = np.full(len(order) + 4, -9)
    got = sl.spread(values)
    sl.write(target, got, keep=got >= 0)
    want = np.full(len(order) + 4, -9)
    for i, a in enumerate(starts):
        vals = values[sl.group[i]]
        for j, x in enumerate(vals):
            if x >= 0:
                want[order[a + j]] = x
    assert target.tolist() == want.tolist()
    assert sl.per_position(np.arange(6)).tolist() == np.repeat(np.arange(6), [len(s) for s in seqs]).tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 10)), max_size=30), min_size=1, max_size=3), st.booleans())
def test_merged_positions_are_the_lexsort_of_the_concatenation(parts: list[list[tuple[int, int]]], sort_ends: bool) -> None:
    starts, ends = [], []
    for rows in parts:  # each part sorted by start (as kernels and copies come), ends in order on ties or not
        rows = sorted(rows) if sort_ends else sorted(rows, key=lambda r: r[0])
        starts.append(np.array([r[0] for r in rows], dtype=np.int64))
        ends.append(np.array([r[0] + r[1] for r in rows], dtype=np.int64))
    place = _merged_positions(starts, ends)
    order = np.lexsort((np.concatenate(ends), np.concatenate(starts)))
    want = np.empty(len(order), dtype=np.int64)
    want[order] = np.arange(len(order))
    assert np.concatenate(place).tolist() == want.tolist()


@pytest.mark.parametrize("rows", [0, 1, 2, 3, 10, 599, 600, 1500])  # numpy's nanmedian changes method at 600 rows
def test_column_nanmedian_matches_numpy(rows: int) -> None:
    rng = np.random.default_rng(rows)
    g = rng.integers(0, 10**12, (rows, 7)).astype(np.float64)  # idle gaps: integer nanoseconds
    g[rng.random(g.shape) < 0.3] = np.nan
    g[:, 0] = np.nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanmedian(g, axis=0) if rows else np.full(7, np.nan)
    assert np.array_equal(_nanmedian_columns(g), want, equal_nan=True)


def test_runs_of_true_match_the_diff_of_the_padded_mask() -> None:
    for n in range(9):
        for bits in range(2**n):
            m = np.array([(bits >> i) & 1 for i in range(n)], dtype=bool)
            d = np.diff(np.concatenate(([0], m.astype(np.int8), [0])))
            starts = np.flatnonzero(d == 1)
            got_s, got_len = _runs(m)
            assert got_s.tolist() == starts.tolist() and got_len.tolist() == (np.flatnonzero(d == -1) - starts).tolist()


@pytest.mark.parametrize("steps", [[], [0], [3, 1], [0, 5, 9], [-2, 4]])
def test_step_membership_is_isin(steps: list[int]) -> None:
    step = np.random.default_rng(len(steps)).integers(-1, 12, 500)
    want = np.isin(step, np.array(steps, dtype=np.int64))
    assert _in_steps(step, np.array(steps, dtype=np.int64)).tolist() == want.tolist()
    assert _in_steps(step[:0], np.array(steps, dtype=np.int64)).tolist() == []


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 8), st.integers(0, 6)), max_size=12),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 120), st.booleans()), max_size=300),
)
def test_assign_windows_matches_the_per_window_search(wins: list[tuple[int, int, int]], launches: list[tuple[int, int, bool]]) -> None:
    rows, t = [], {}
    for pid, gap, length in wins:  # disjoint windows per process
        a = t.get(pid, 0) + gap
        rows.append((pid, a, a + length))
        t[pid] = a + length + 1
    w = pd.DataFrame(rows, columns=["pid", "cpu_start_ns", "cpu_end_ns"], dtype=np.int64)
    w.insert(0, "step", np.arange(len(w)) * 2 + 1)
    launches = sorted(launches, key=lambda r: r[1])  # launches in time order (the fast path), pids interleaved
    keys = np.array([r[0] for r in launches], dtype=np.int64)
    ts = np.array([r[1] for r in launches], dtype=np.int64)
    valid = np.array([r[2] for r in launches], dtype=bool)
    want = np.full(len(ts), -1, dtype=np.int64)
    for i, (key, x, ok) in enumerate(launches):
        hit = w[(w["pid"] == key) & (w["cpu_start_ns"] <= x) & (x <= w["cpu_end_ns"])]
        if ok and len(hit):
            want[i] = hit["step"].iloc[0]
    got = assign_windows(keys, ts, valid, w, "pid")
    assert got.dtype == np.int64 and got.tolist() == want.tolist()
