"""The array versions of the gap analysis give what straightforward references give: the window classification
against brute-force coverage, the bubble tables against group-bys of a frame of all bubbles, the host NVTX
ranges against the tree of every range."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsysparse import intervals
from nsysparse.analyses import gaps as G
from nsysparse.intervals import Coverage
from nsysparse.structure.nvtx import build_tree

NO_TIME = G.NO_TIME
THREADS = (11, 12)


# ---- classification against brute force --------------------------------------------------------------------


def _covered(intervals, tid, x, y):
    """|union of the thread's [s, e) ∩ [x, y)|, by unit points."""
    pts = set()
    for g, s, e in intervals:
        if g == tid:
            pts.update(range(max(s, x), min(e, y)))
    return len(pts)


def _reference_cause(w, api, sync_rows, graph_rows, overhead, comm):
    """One window classified by the rules of the module docstring, written out per window."""
    a, b, tid, launch, launch_end, graph_node, dev = w
    known = launch != NO_TIME
    end = min(max(launch, a), b) if known else b
    call_end = min(max(launch_end, end), b) if known and launch_end != NO_TIME else end
    every = api
    sync = [api[i] for i in sync_rows]
    sync_graph = [api[i] for i in sorted(set(sync_rows) | set(graph_rows))]
    s_sync = _covered(sync, tid, a, end)
    s_graph = _covered(sync_graph, tid, a, end) - s_sync
    s_api = _covered(every, tid, a, end) - s_sync - s_graph
    host = (end - a) - s_sync - s_graph - s_api
    calls = sum(1 for g, s, _ in every if g == tid and a < s <= end) - sum(1 for g, s, _ in every if g == tid and end < s <= a)
    s_launch = call_end - end
    launch_graph = s_launch if graph_node else 0
    with np.errstate(divide="ignore", invalid="ignore"):
        trickle = calls >= 1 and np.float64(host) / np.float64(calls + 1) < G.TRICKLE_FREE_NS
    prof = _covered(overhead, tid, a, b)
    dep = known and launch < a
    g_all = s_graph + launch_graph
    coll = _covered(comm, dev, a, b + G.COLLECTIVE_SLACK_NS) > 0
    rules = (
        not known,
        dep and graph_node,
        dep and coll,
        dep,
        prof >= G.PROFILER_SHARE * (b - a),
        known and end - a < G.LAUNCH_LATENCY_NS,
        g_all >= max(host, s_api) and g_all > 0,
        s_sync >= max(host, s_api) and s_sync > 0,
        s_api >= host or trickle,
    )
    cause = G.CAUSES[next((i for i, r in enumerate(rules) if r), len(rules))]
    return cause, (s_sync / 1e3, s_api / 1e3, g_all / 1e3, host / 1e3, (s_launch - launch_graph) / 1e3, (b - call_end) / 1e3)


call = st.tuples(st.sampled_from(THREADS), st.integers(0, 400), st.integers(-5, 60), st.sampled_from(["api", "api", "sync", "graph"]))
window = st.tuples(
    st.integers(0, 400),
    st.integers(-10, 120),
    st.sampled_from((*THREADS, 99)),
    st.one_of(st.just(NO_TIME), st.integers(-20, 520)),
    st.one_of(st.just(NO_TIME), st.integers(0, 80)),
    st.booleans(),
    st.sampled_from([0, 1]),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(call, min_size=1, max_size=25),
    st.lists(window, min_size=1, max_size=12),
    st.lists(call, max_size=3),
    st.lists(call, max_size=3),
    st.sampled_from(["whole", "runs", "pieces"]),
)
def test_classify_matches_brute_force(calls, wins, prof, coll, mode):
    """`mode`: the coverages' prefix arrays of every call, of the run of calls each lookup spans, or a pass in pieces."""
    saved = intervals.LOCAL_MIN, intervals.BLOCK, intervals.RUN_SLACK, intervals.PIECE
    if mode != "whole":
        intervals.LOCAL_MIN, intervals.BLOCK = 0, 2
    if mode == "pieces":
        intervals.RUN_SLACK, intervals.PIECE = 0, 3
    try:
        _check_classify(calls, wins, prof, coll)
    finally:
        intervals.LOCAL_MIN, intervals.BLOCK, intervals.RUN_SLACK, intervals.PIECE = saved


def _check_classify(calls, wins, prof, coll):
    api = [(g, s, s + d) for g, s, d, _ in calls]
    sync_rows = [i for i, c in enumerate(calls) if c[3] == "sync"]
    graph_rows = [i for i, c in enumerate(calls) if c[3] == "graph"]
    names = {"api": "cudaLaunchKernel", "sync": "cudaStreamSynchronize", "graph": "cudaGraphLaunch"}
    frame = pd.DataFrame(
        {
            "global_tid": [g for g, _, _ in api],
            "start_ns": [s for _, s, _ in api],
            "end_ns": [e for _, _, e in api],
            "name": pd.Categorical([names[c[3]] for c in calls]),
        }
    )
    cov = G._api_coverage(frame)
    overhead = [(g, s, s + d) for g, s, d, _ in prof]
    comm = [(g % 2, s, s + d) for g, s, d, _ in coll]
    ov = Coverage(*(np.array(x, dtype=np.int64) for x in zip(*overhead))) if overhead else None
    cm = Coverage(*(np.array(x, dtype=np.int64) for x in zip(*comm))) if comm else None
    rows = [(a, a + d, tid, launch, (launch + le) if launch != NO_TIME and le != NO_TIME else NO_TIME, gn, dev) for a, d, tid, launch, le, gn, dev in wins]
    cols = ("a", "b", "next_tid", "next_launch_ns", "next_launch_end_ns", "next_graph", "device_id")
    win = {c: np.array([r[i] for r in rows], dtype=bool if c == "next_graph" else np.int64) for i, c in enumerate(cols)}
    with np.errstate(divide="ignore", invalid="ignore"):  # a reversed window can count -1 calls
        got = G._classify(win, cov, cm, ov)
        codes = G._classify(win, cov, cm, ov, codes_only=True)["cause"]
    assert codes.tolist() == got["cause"].tolist()
    for i, r in enumerate(rows):
        cause, parts = _reference_cause(r, api, sync_rows, graph_rows, overhead, comm)
        assert G.CAUSE_NAMES[got["cause"][i]] == cause
        assert tuple(float(got[c][i]) for c in ("sync_us", "api_us", "graph_us", "host_us", "launch_us", "queue_us")) == parts


# ---- bubble tables against a frame of all bubbles -----------------------------------------------------------


def _ops(seed: int) -> pd.DataFrame:
    """GPU operations on 1-3 devices: overlapping, nested, out of step order (interleaved steps on some seeds),
    some outside steps, with and without launches, repeated sizes (ties)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    devices = rng.integers(0, int(rng.integers(1, 4)), n)
    start = rng.integers(0, 2_000 * n, n) // 500 * 500  # repeated times: ties
    start = np.sort(start) if seed % 3 else start
    end = start + rng.choice([0, 500, 1_500, 3_000, 9_000], n)
    step = (start // (200 * n)).astype(np.int64) + devices * 100
    if seed % 4 == 1:
        step = np.where(rng.random(n) < 0.2, step + 1, step)  # a step's work interleaved with the next one's
    step = np.where(rng.random(n) < (0.1 if seed % 5 else 0.0), -1, step)
    has = rng.random(n) < 0.9
    api_start = np.where(has, start - rng.integers(-3_000, 8_000, n), NO_TIME)
    kinds = np.array(["", "dense", "moe"], dtype=object)[rng.integers(0, 3, n)]
    frame = pd.DataFrame(
        {
            "start_ns": start,
            "end_ns": end,
            "device_id": devices.astype(np.int64),
            "step": step,
            "graph": rng.random(n) < 0.2,
            "op": pd.Categorical(rng.choice(["gemm", "norm", "fmha"], n)),
            "layer_kind": pd.Categorical(kinds),
            "has_launch": has,
            "api_start_ns": api_start,
            "api_end_ns": np.where(has, api_start + 40, NO_TIME),
            "global_tid": rng.choice(THREADS, n).astype(np.int64),
        }
    )
    order = np.lexsort((frame["end_ns"], frame["start_ns"])) if seed % 2 else np.arange(n)
    return frame.iloc[order].reset_index(drop=True)


def _reference_bubbles(ops: pd.DataFrame, min_us: float, t0: int) -> pd.DataFrame:
    """Every bubble as a frame row, per device in (start, end) order: the reach (running latest end) of the
    device's operations before it, the step, and the operations before (the last that reached the reach) and after."""
    inside = ops[ops["step"] >= 0]
    inside = inside.iloc[np.lexsort((inside["end_ns"].to_numpy(), inside["start_ns"].to_numpy(), inside["device_id"].to_numpy()))]
    rows = []
    for dev, d in inside.groupby("device_id", sort=True):
        reach, holder, prev_step = None, None, None
        for idx, r in d.iterrows():
            if reach is not None and r["step"] == prev_step and r["start_ns"] - reach >= min_us * 1e3:
                rows.append(
                    {
                        "device_id": dev,
                        "step": r["step"],
                        "start_ms": (reach - t0) / 1e6,
                        "bubble_us": (r["start_ns"] - reach) / 1e3,
                        "prev": holder,
                        "next": idx,
                    }
                )
            if reach is None or r["end_ns"] >= reach:
                reach, holder = r["end_ns"], idx
            prev_step = r["step"]
    return pd.DataFrame(rows, columns=["device_id", "step", "start_ms", "bubble_us", "prev", "next"])


@pytest.mark.parametrize("seed", range(16))
def test_bubble_tables_match_a_frame_of_bubbles(seed: int) -> None:
    ops = _ops(seed)
    t0 = int(ops["start_ns"].min())
    w = G._in_step(ops)
    bub = G._bubbles(w, 1.0)
    ref = _reference_bubbles(ops, 1.0, t0)
    assert len(bub) == len(ref)
    assert (bub.us == ref["bubble_us"].to_numpy(float)).all()
    assert (w.rows(bub.hit) == ref["next"].to_numpy(int)).all()
    assert (w.rows(bub.after(w, np.arange(len(bub)))) == ref["prev"].to_numpy(int)).all()
    G.AFTER_NEAR, near = 1, G.AFTER_NEAR  # the search for those further back
    try:
        assert (w.rows(bub.after(w, np.arange(len(bub)))) == ref["prev"].to_numpy(int)).all()
    finally:
        G.AFTER_NEAR = near
    # per step, its first operation (by start, then end) and its last (the latest end; on ties the last)
    ids, first, last = G._first_last(w)
    inside = ops[ops["step"] >= 0]
    by_time = inside.iloc[np.lexsort((inside["end_ns"].to_numpy(), inside["start_ns"].to_numpy()))]
    assert ids.tolist() == sorted(inside["step"].unique().tolist())
    assert w.rows(first).tolist() == [int(by_time.index[by_time["step"] == s][0]) for s in ids]
    want_last = []
    for s in ids:
        mine = by_time[by_time["step"] == s]
        want_last.append(int(mine.index[mine["end_ns"] == mine["end_ns"].max()][-1]))
    assert w.rows(last).tolist() == want_last
    # bubbles per step: every step with operations on the device, sorted
    want = []
    for d in sorted(inside["device_id"].unique()):
        mine = ref[ref["device_id"] == d]
        bs = pd.DataFrame({"step": mine["step"].to_numpy(np.int64), "us": mine["bubble_us"].to_numpy(float)}).groupby("step")["us"].agg(["size", "sum"])
        bs = bs.reindex(pd.Index(np.unique(inside["step"][inside["device_id"] == d]), name="step"), fill_value=0)
        want.append(
            pd.DataFrame({"device_id": int(d), "step": bs.index.to_numpy(), "bubbles": bs["size"].to_numpy(np.int64), "bubble_us": bs["sum"].to_numpy(float)})
        )
    pd.testing.assert_frame_equal(bub.per_step, pd.concat(want, ignore_index=True), check_exact=True)
    # causes: counts and time per cause, overall and per device, as group-bys of the frame give them
    codes = np.random.default_rng(seed).integers(0, len(G.CAUSE_NAMES), len(bub)).astype(np.int8)
    causes = G._BubbleCauses(bub, codes, w, True)
    frame = ref.assign(cause=pd.Categorical.from_codes(codes, categories=G.CAUSE_NAMES))
    if len(frame):
        g = frame.groupby("cause", observed=True)["bubble_us"].agg(["size", "sum"])
        got = causes.cause_groups()
        assert got.index.tolist() == [str(c) for c in g.index] and got["size"].tolist() == g["size"].tolist() and got["sum"].tolist() == g["sum"].tolist()
    want_main = {int(d): str(f.groupby("cause", observed=True)["bubble_us"].sum().idxmax()) for d, f in frame.groupby("device_id")}
    assert causes.main_cause() == want_main
    # the largest bubbles, with the operations around them
    top = G._largest_bubbles(bub, causes, w, t0, 5) if len(bub) else None
    if top is not None:
        order = pd.DataFrame({"bubble_us": frame["bubble_us"].to_numpy()}).sort_values("bubble_us", ascending=False, kind="stable").head(5).index.to_numpy()
        picked = frame.iloc[order]
        assert top["bubble_us"].tolist() == picked["bubble_us"].tolist()
        assert top["start_ms"].tolist() == picked["start_ms"].tolist()
        assert top["step"].tolist() == picked["step"].tolist()
        assert top["cause"].tolist() == [str(c) for c in picked["cause"]]
        assert top["before"].tolist() == w.labels(bub.hit[order]).tolist()


@pytest.mark.parametrize("seed", range(8))
def test_largest_is_a_stable_sort_of_all(seed: int) -> None:
    """Largest first, equal ones in their order: a stable descending sort of every value, then its head."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 1 + seed * 3, int(rng.integers(0, 300))) / 4  # many ties
    want = pd.DataFrame({"v": values}).sort_values("v", ascending=False, kind="stable").index.to_numpy()
    for top in (0, 1, 5, 20, len(values), len(values) + 3, -2):
        head = want[:top] if top >= 0 else want[: max(len(values) + top, 0)]  # as DataFrame.head
        assert G._largest(values, top).tolist() == head.tolist()


def test_bubble_causes_in_chunks_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    ops = _ops(7)
    w = G._in_step(ops)
    bub = G._bubbles(w, 0.5)
    api = pd.DataFrame(
        {
            "global_tid": np.repeat(THREADS, 50),
            "start_ns": np.arange(100) * 500,
            "end_ns": np.arange(100) * 500 + 200,
            "name": pd.Categorical(["cudaLaunchKernel"] * 100),
        }
    )
    cov = G._api_coverage(api)
    once = G._bubble_causes(w, bub, cov, None, None)
    monkeypatch.setattr(G, "BUBBLE_CHUNK", 7)
    assert G._bubble_causes(w, bub, cov, None, None).tolist() == once.tolist()
    assert len(set(once.tolist())) > 1


# ---- host NVTX against the tree of every range --------------------------------------------------------------


class _NvtxTrace:
    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def has(self, kind: str) -> bool:
        return kind == "nvtx"

    def nvtx(self) -> pd.DataFrame:
        return self.frame


rng_range = st.tuples(st.sampled_from(THREADS), st.integers(0, 300), st.integers(-5, 120), st.sampled_from(["push_pop", "start_end"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(rng_range, max_size=40), st.lists(st.tuples(st.sampled_from((*THREADS, 99)), st.integers(-10, 450)), min_size=1, max_size=12))
def test_host_nvtx_matches_the_tree_of_every_range(ranges, queries):
    """Nested, crossing (several domains on a thread), touching and identical ranges on two threads."""
    frame = pd.DataFrame(
        {
            "start_ns": np.array([s for _, s, _, _ in ranges], dtype=np.int64),
            "end_ns": np.array([s + d for _, s, d, _ in ranges], dtype=np.int64),
            "global_tid": np.array([g for g, _, _, _ in ranges], dtype=np.int64),
            "kind": pd.Categorical([k for *_, k in ranges]),
            "text": pd.Categorical([f"r{i}" for i in range(len(ranges))]),
        }
    )
    frame = frame.iloc[np.lexsort((frame["end_ns"], frame["start_ns"]))].reset_index(drop=True)
    tid = np.array([q[0] for q in queries], dtype=np.int64)
    ts = np.array([q[1] for q in queries], dtype=np.int64)
    got = G._host_nvtx(_NvtxTrace(frame), tid, ts)
    pp = frame[(frame["kind"] == "push_pop") & (frame["end_ns"] > frame["start_ns"])]
    tree = build_tree(pp[["start_ns", "end_ns", "global_tid", "text"]])
    pos = tree.innermost(tid, ts)
    texts = tree.frame["text"].astype(object).fillna("").astype(str).to_numpy()
    want = np.where(pos >= 0, texts[np.clip(pos, 0, None)] if len(texts) else "", "")
    assert got.tolist() == want.tolist()
