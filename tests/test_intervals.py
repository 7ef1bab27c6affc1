"""Interval maths against a brute-force reference (hypothesis)."""

from __future__ import annotations

import numpy as np
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
