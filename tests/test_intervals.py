"""Interval maths against a brute-force reference (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsysparse import intervals as iv

interval = st.tuples(st.integers(-1_000, 1_000), st.integers(0, 300)).map(lambda t: (t[0], t[0] + t[1]))
interval_lists = st.lists(interval, max_size=40)


def covered(pairs, lo=-2_000, hi=2_000):
    """Brute-force covered points, unit resolution."""
    mask = np.zeros(hi - lo, dtype=bool)
    for s, e in pairs:
        mask[s - lo : e - lo] = True
    return mask


def arrays(pairs):
    s = np.array([p[0] for p in pairs], dtype=np.int64)
    e = np.array([p[1] for p in pairs], dtype=np.int64)
    return s, e


@given(interval_lists)
def test_union_equals_brute_force(pairs):
    s, e = arrays(pairs)
    assert iv.union_ns(s, e) == int(covered(pairs).sum())


@given(interval_lists)
def test_merge_is_disjoint_sorted_and_idempotent(pairs):
    s, e = arrays(pairs)
    ms, me = iv.merge(s, e)
    assert (me > ms).all()
    assert (ms[1:] > me[:-1]).all()
    ms2, me2 = iv.merge(ms, me)
    assert ms2.tolist() == ms.tolist() and me2.tolist() == me.tolist()
    assert iv.union_ns(ms, me) <= (int(e.max() - s.min()) if len(s) else 0)


@given(interval_lists, st.integers(-1_500, 0), st.integers(1, 1_500))
def test_gaps_plus_busy_equals_window(pairs, lo, hi):
    s, e = arrays(pairs)
    gs, ge = iv.gaps(s, e, lo, hi)
    busy = iv.clip_union_ns(s, e, lo, hi)
    assert int((ge - gs).sum()) + busy == hi - lo
    assert ((gs >= lo) & (ge <= hi)).all()


@given(interval_lists, interval_lists)
def test_overlap_matches_brute_force(a, b):
    sa, ea = arrays(a)
    sb, eb = arrays(b)
    assert iv.overlap_ns(sa, ea, sb, eb) == int((covered(a) & covered(b)).sum())


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 4), interval), max_size=60))
def test_union_by_group_equals_per_group_union(tagged):
    g = np.array([t[0] for t in tagged], dtype=np.int64)
    s, e = arrays([t[1] for t in tagged])
    got = iv.union_by_group(g, s, e, 5)
    for k in range(5):
        assert got[k] == int(covered([t[1] for t in tagged if t[0] == k]).sum())


@given(st.lists(st.integers(-3_000, 3_000), max_size=30))
def test_assign_to_windows(times):
    ws = np.array([-1_000, 0, 500], dtype=np.int64)
    we = np.array([-500, 400, 2_000], dtype=np.int64)
    got = iv.assign_to_windows(np.array(times, dtype=np.int64), ws, we)
    for t, w in zip(times, got):
        expect = next((i for i in range(3) if ws[i] <= t < we[i]), -1)
        assert w == expect


tagged_intervals = st.lists(st.tuples(st.sampled_from([3, 7, 11]), st.tuples(st.integers(-1_000, 1_000), st.integers(-20, 300))), max_size=50)
windows = st.lists(st.tuples(st.sampled_from([3, 7, 11, 5]), st.integers(-1_500, 1_500), st.integers(-50, 600)), min_size=1, max_size=30)


def _coverage_reference(tagged, group, a, b):
    """Covered length of [a, b] by the group's intervals (unit resolution) and the intervals starting in (a, b]."""
    pairs = [(s, s + d) for g, (s, d) in tagged if g == group]
    mask = covered([p for p in pairs if p[1] > p[0]], -3_000, 3_000)
    cov = int(mask[a + 3_000 : b + 3_000].sum()) if b > a else 0
    return cov, sum(1 for s, _ in pairs if a < s <= b) - sum(1 for s, _ in pairs if b < s <= a)


@settings(max_examples=150)
@given(tagged_intervals, windows, st.booleans())
def test_coverage_matches_brute_force(tagged, wins, shuffle):
    """Covered time and started intervals of windows, per group, against brute force: unsorted input, zero- and
    negative-length intervals, windows outside every interval, groups without intervals, reversed windows."""
    if shuffle:
        tagged = tagged[::-1]
    g = np.array([t[0] for t in tagged], dtype=np.int64)
    s = np.array([t[1][0] for t in tagged], dtype=np.int64)
    e = s + np.array([t[1][1] for t in tagged], dtype=np.int64)
    cov = iv.Coverage(g, s, e)
    wg = np.array([w[0] for w in wins], dtype=np.int64)
    wa = np.array([w[1] for w in wins], dtype=np.int64)
    wb = wa + np.array([w[2] for w in wins], dtype=np.int64)
    got_cov, got_n = cov.covered(wg, wa, wb), cov.count_starts(wg, wa, wb)
    for i in range(len(wins)):
        want_cov, want_n = _coverage_reference(tagged, int(wg[i]), int(wa[i]), int(wb[i]))
        assert got_cov[i] == want_cov
        assert got_n[i] == want_n
    # `at`: the covered time up to a point and the starts at or before it, on the shared axis
    known, k = cov.keys(wg, wb)
    up, n = cov.at(k)
    _, k0 = cov.keys(wg, np.full(len(wg), -3_000))
    up0, n0 = cov.at(k0)
    for i in range(len(wins)):
        if known[i]:
            want_cov, want_n = _coverage_reference(tagged, int(wg[i]), -3_000, int(wb[i]))
            assert up[i] - up0[i] == want_cov and n[i] - n0[i] == want_n


@settings(max_examples=80)
@given(tagged_intervals, windows, st.lists(st.booleans(), min_size=50, max_size=50))
def test_nested_coverages_share_the_axis(tagged, wins, picks):
    g = np.array([t[0] for t in tagged], dtype=np.int64)
    s = np.array([t[1][0] for t in tagged], dtype=np.int64)
    e = s + np.array([t[1][1] for t in tagged], dtype=np.int64)
    mask = np.array(picks[: len(tagged)], dtype=bool)
    full, parts = iv.Coverage.nested(g, s, e, {"part": mask})
    wg = np.array([w[0] for w in wins], dtype=np.int64)
    wa = np.array([w[1] for w in wins], dtype=np.int64)
    wb = wa + np.array([w[2] for w in wins], dtype=np.int64)
    known, ka = full.keys(wg, wa)
    _, kb = full.keys(wg, wb)
    assert parts["part"].covered_between(known, ka, kb).tolist() == iv.Coverage(g[mask], s[mask], e[mask]).covered(wg, wa, wb).tolist()
    assert full.covered_between(known, ka, kb).tolist() == iv.Coverage(g, s, e).covered(wg, wa, wb).tolist()
    for i in range(len(wins)):
        want, _ = _coverage_reference([t for t, m in zip(tagged, mask) if m], int(wg[i]), int(wa[i]), int(wb[i]))
        assert parts["part"].covered_between(known, ka, kb)[i] == want


@settings(max_examples=100)
@given(
    st.lists(st.tuples(st.sampled_from([3, 7]), st.tuples(st.integers(-1_000, 1_000), st.integers(0, 200))), max_size=6),
    st.lists(st.integers(-1_200, 1_200), min_size=140, max_size=200),
    st.sampled_from([3, 7, 5]),
)
def test_coverage_of_many_sorted_windows(tagged, points, group):
    """Many sorted windows and few intervals: the windows are found from the intervals' side (the same answers)."""
    g = np.array([t[0] for t in tagged], dtype=np.int64)
    s = np.array([t[1][0] for t in tagged], dtype=np.int64)
    e = s + np.array([t[1][1] for t in tagged], dtype=np.int64)
    cov = iv.Coverage(g, s, e)
    p = np.sort(np.array(points, dtype=np.int64))
    wa, wb = p[0::2][: len(p) // 2], p[1::2][: len(p) // 2]  # sorted starts, sorted ends
    wg = np.full(len(wa), group, dtype=np.int64)
    assert len(tagged) * 8 <= len(wa)
    got = cov.covered(wg, wa, wb)
    assert got.tolist() == [_coverage_reference(tagged, group, int(x), int(y))[0] for x, y in zip(wa, wb)]
    shuffled = cov.covered(wg[::-1], wa[::-1], wb[::-1])  # unsorted: every window searched
    assert shuffled.tolist() == got[::-1].tolist()
    wb2 = np.sort(wa + (p[: len(wa)] % 97) - 20)  # overlapping (and some reversed) windows, ends sorted
    got2 = cov.covered(wg, wa, wb2)
    assert got2.tolist() == [_coverage_reference(tagged, group, int(x), int(y))[0] for x, y in zip(wa, wb2)]


@pytest.mark.parametrize("seed", range(4))
def test_rank_of_many_sorted_keys_piece_by_piece(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4 * iv.RANK_PIECE, 6 * iv.RANK_PIECE))
    s = np.sort(rng.integers(0, 10**6, n)) // (1 + seed)  # repeated starts on some seeds
    cov = iv.Coverage(np.zeros(n, dtype=np.int64), s, s + rng.integers(0, 50, n))
    k = np.sort(rng.integers(-10, 10**6 + 10, int(rng.integers(4 * iv.RANK_PIECE, 9 * iv.RANK_PIECE))))
    _, keys = cov.keys(np.zeros(len(k), dtype=np.int64), k)
    assert cov.rank(keys).tolist() == np.searchsorted(cov.starts, keys, side="right").tolist()


@settings(max_examples=200)
@given(
    tagged_intervals,
    st.lists(st.integers(-1_200, 1_200), min_size=2, max_size=60),
    st.sampled_from([3, 7]),
    st.integers(1, 5),
    st.sampled_from([(1 << 16, 1 << 20), (0, 1), (0, 2), (0, 7)]),
)
def test_coverage_built_per_run_of_intervals(tagged, points, group, block, slack_piece):
    """A large coverage builds its prefix arrays for the run of intervals a lookup's keys span (with the latest
    end before the run carried in from block maxima), or, for keys far apart (no slack), answers them in one
    pass over the intervals in pieces: the same answers as arrays of every interval."""
    g = np.array([t[0] for t in tagged], dtype=np.int64)
    s = np.array([t[1][0] for t in tagged], dtype=np.int64)
    e = s + np.array([t[1][1] for t in tagged], dtype=np.int64)
    p = np.sort(np.array(points, dtype=np.int64))
    wa, wb = p[0::2][: len(p) // 2], p[1::2][: len(p) // 2]
    wg = np.full(len(wa), group, dtype=np.int64)
    saved = iv.LOCAL_MIN, iv.BLOCK, iv.RUN_SLACK, iv.PIECE
    iv.LOCAL_MIN, iv.BLOCK = 0, block
    iv.RUN_SLACK, iv.PIECE = slack_piece
    try:
        cov = iv.Coverage(g, s, e)
        assert cov.lead is None or not len(tagged)
        for lo in range(0, len(wa), 3):  # lookups of a few windows at a time: runs of intervals
            known, ka, kb = cov.keys(wg[lo : lo + 3], wa[lo : lo + 3], wb[lo : lo + 3])
            both = np.empty(2 * len(ka), dtype=np.int64)
            both[0::2], both[1::2] = ka, kb
            up, n = cov.at(both)
            for i in range(len(ka)):
                want_cov, want_n = _coverage_reference(tagged, group, int(wa[lo + i]), int(wb[lo + i]))
                assert (max(up[2 * i + 1] - up[2 * i], 0) if known[i] else 0) == want_cov
                assert (n[2 * i + 1] - n[2 * i] if known[i] else 0) == want_n
        assert cov.covered(wg, wa, wb).tolist() == [_coverage_reference(tagged, group, int(x), int(y))[0] for x, y in zip(wa, wb)]
        known, ka, kb = cov.keys(wg, wa, wb)  # every window at once, ends after starts: keys out of order
        up, n = cov.at(np.concatenate((ka, kb)))
        got = np.where(known, np.maximum(up[len(ka) :] - up[: len(ka)], 0), 0)
        assert got.tolist() == [_coverage_reference(tagged, group, int(x), int(y))[0] for x, y in zip(wa, wb)]
    finally:
        iv.LOCAL_MIN, iv.BLOCK, iv.RUN_SLACK, iv.PIECE = saved
