"""Forward gaps, intra-step bubbles, and why they happen.

Inter-step gap: GPU idle from the last GPU operation (kernel, memcpy, memset) of step i to the first of
step i+1 on the same device. Bubble: GPU idle inside a step of at least `min_bubble_us`.

Cause of an idle window [a, b], from what the thread that launched the work ending it (the next GPU
operation) did before launching it, i.e. during [a, min(b, launch)]:
  gpu dependency   the work was launched before the GPU went idle: it waited on the GPU side (stream
                   or event dependency); "collective wait" when a communication kernel ran on the
                   device meanwhile (a collective waiting for its peers)
  graph            the next operation is a CUDA-graph node: idle between graph nodes or graph launches
  profiler         profiler overhead (CUPTI buffer flushes) covered most of the window
  sync             the thread was blocked in a synchronize call or a memory copy
  host work        no CUDA calls, or only a few far apart (Python, scheduler, CPU sampling)
  launch-bound     the thread was issuing CUDA calls with little time between them, but slower than the
                   GPU finished the work (a launch trickle)
  launch latency   the next launch started right when the GPU went idle (< 2 µs of host time)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nsysparse.analyses.context import AnalysisContext
from nsysparse.analyses.kept import kept_or_computed
from nsysparse.columns import Column, empty_frame
from nsysparse.distinct import map_distinct
from nsysparse.intervals import Coverage, before_queries_in_blocks
from nsysparse.structure.nvtx import build_tree
from nsysparse.structure.period import step_period_ns
from nsysparse.trace import NO_TIME, Trace

SYNC_API = re.compile(
    r"^(cuda(Stream|Device|Event|Ctx)Synchronize|cu(Stream|Ctx|Event)Synchronize|cudaStreamQuery|cudaEventQuery|cuStreamQuery|cuEventQuery|cudaMemcpy\w*|cuMemcpy\w*|cudaMemset(2D|3D)?$|cudaHostAlloc|cudaFreeHost|cudaFree|cuMemFree\w*)$"
)
GRAPH_API = re.compile(r"^(cudaGraphLaunch|cuGraphLaunch)$")
COMM_CLASSES = ("allreduce", "allgather", "reducescatter", "alltoall", "sendrecv", "comm", "ep_dispatch", "ep_combine")
LAUNCH_LATENCY_NS = 2_000
"""An idle window whose launching call came less than this before the GPU work is launch latency (not the host's fault)."""
TRICKLE_FREE_NS = 50_000
"""A window whose host stretches between CUDA calls average below this is launch-bound: the thread was still launching."""
COLLECTIVE_SLACK_NS = 1_000
"""A collective kernel starting this soon after a GPU-side wait counts as that wait's cause (it waited for its peers)."""
PROFILER_SHARE = 0.5
"""A window at least this much covered by the profiler's own overhead ranges is caused by the profiler."""
DEFAULT_MIN_BUBBLE_US = 5.0
"""Idle windows inside a step shorter than this are not bubbles (option: --min-bubble-us)."""

GAP_COLUMNS = (
    Column("device_id", "int", "GPU"),
    Column("step_before", "int", "step that ended"),
    Column("step_after", "int", "step that started"),
    Column("start_ms", "float", "gap start, ms from the first step"),
    Column("gap_us", "float", "GPU idle: last GPU operation of step_before to the first of step_after"),
    Column("cause", "str", "see `nsysparse gaps --help`"),
    Column("sync_us", "float", "launching thread in synchronize / memcpy calls during the gap"),
    Column("api_us", "float", "launching thread in other CUDA calls"),
    Column("graph_us", "float", "launching thread in cudaGraphLaunch, including the launch of the next work when it is a graph"),
    Column("host_us", "float", "launching thread with no CUDA call (until it launched the next work)"),
    Column("launch_us", "float", "the call that launched the next work (a cudaGraphLaunch counts as graph_us)"),
    Column("queue_us", "float", "from the end of that launch call to the work starting on the GPU; the components add up to gap_us"),
    Column("host_nvtx", "str", "NVTX range the launching thread was in, mid-gap (e.g. the scheduler)"),
    Column("next_op", "str", "first op of step_after"),
)
BUBBLE_COLUMNS = (
    Column("device_id", "int", "GPU"),
    Column("step", "int", "step"),
    Column("start_ms", "float", "bubble start, ms from the first step"),
    Column("bubble_us", "float", "GPU idle inside the step"),
    Column("after", "str", "layer kind / op that ran before"),
    Column("before", "str", "layer kind / op that ran after"),
    Column("cause", "str", "see `nsysparse gaps --help`"),
)
CAUSE_COLUMNS = (
    Column("kind", "str", "gap (between steps) or bubble (inside steps)"),
    Column("cause", "str", "cause"),
    Column("count", "int", "windows with this cause"),
    Column("total_us", "float", "idle time"),
    Column("share_pct", "float", "share of that kind's idle time"),
)
DEVICE_COLUMNS = (
    Column("device_id", "int", "GPU"),
    Column("steps", "int", "steps on this GPU"),
    Column("gap_median_us", "float", "median inter-step gap"),
    Column("gap_p90_us", "float", "90th percentile inter-step gap"),
    Column("gap_max_us", "float", "largest inter-step gap"),
    Column("gap_cause", "str", "cause covering most inter-step gap time"),
    Column("bubbles_per_step", "float", "bubbles ≥ threshold per step (mean)"),
    Column("bubble_us_per_step", "float", "bubble time per step (median)"),
    Column("bubble_cause", "str", "cause covering most bubble time"),
    Column("step_wall_us", "float", "median step wall time"),
    Column("step_period_us", "float", "median step period: start of a step to the start of the next (nsysparse.structure.period)"),
)


@dataclass
class GapReport:
    devices: pd.DataFrame
    gaps: pd.DataFrame
    bubbles: pd.DataFrame  # the largest, `top` of them
    causes: pd.DataFrame
    bubble_steps: pd.DataFrame  # per step: bubbles, bubble_us
    worst_device: int | None
    min_bubble_us: float
    notes: list[str] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        return {
            "min_bubble_us": self.min_bubble_us,
            "worst_device": self.worst_device,
            "devices": self.devices.to_dict("records"),
            "gaps": self.gaps.to_dict("records"),
            "causes": self.causes.to_dict("records"),
            "largest_bubbles": self.bubbles.to_dict("records"),
            "bubbles_per_step": self.bubble_steps.to_dict("records"),
            "notes": self.notes,
        }


def _api_coverage(api: pd.DataFrame) -> dict[str, Coverage]:
    """Coverages of nested classes (sync ⊂ sync+graph ⊂ all): differences of their unions partition a
    thread's time, so overlapping calls (a runtime call and the driver call inside it) count once.
    The three share one thread axis, so a window's keys are computed once for all of them; without graph
    launches "sync+graph" is the "sync" coverage itself."""
    sync, graph = _api_classes(api["name"])
    gtid, start, end = api["global_tid"].to_numpy(), api["start_ns"].to_numpy(), api["end_ns"].to_numpy()
    any_graph = bool(graph.any())
    subsets = {"sync": sync, **({"sync+graph": sync | graph} if any_graph else {})}
    full, parts = Coverage.nested(gtid, start, end, subsets)
    return {"all": full, "sync": parts["sync"], "sync+graph": parts["sync+graph"] if any_graph else parts["sync"]}


def _api_classes(names: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Which calls are sync calls and which graph launches, matched once per distinct name."""
    if not isinstance(names.dtype, pd.CategoricalDtype):
        cats = map_distinct(names, lambda n: 1 if SYNC_API.match(n) else (2 if GRAPH_API.match(n) else 0), np.int8, 0)
        return cats == 1, cats == 2
    codes = names.cat.codes.to_numpy()
    categories = [str(c) for c in names.cat.categories]
    sync = [i for i, n in enumerate(categories) if SYNC_API.match(n)]
    graph = [i for i, n in enumerate(categories) if not SYNC_API.match(n) and GRAPH_API.match(n)]
    return _is_any(codes, sync), _is_any(codes, graph)


def _is_any(codes: np.ndarray, among: list[int]) -> np.ndarray:
    """codes ∈ among: a comparison per value when they are a few (of the small codes, no index array built)."""
    if len(among) > 8:
        return np.isin(codes, among)
    out = np.zeros(len(codes), dtype=bool)
    for c in among:
        out |= codes == c
    return out


CAUSES = (
    "unknown (no launch record)",
    "graph",
    "collective wait",
    "gpu dependency",
    "profiler",
    "launch latency",
    "graph",
    "sync",
    "launch-bound",
    "host work",
)
"""The causes in the order of precedence of `classify_windows` (the last is the default); "graph" appears twice."""
CAUSE_NAMES = sorted(set(CAUSES))
_CAUSE_INDEX = np.array([CAUSE_NAMES.index(c) for c in CAUSES], dtype=np.int8)


def _classify(
    win: dict[str, np.ndarray], cov: dict[str, Coverage], comm: Coverage | None, overhead: Coverage | None, codes_only: bool = False
) -> dict[str, np.ndarray]:
    """The arrays of `classify_windows`, with `cause` as an index into CAUSE_NAMES (int8); only `cause`
    with `codes_only`. Terms that are zero for every window (no graph launches, no collectives) are skipped."""
    a = np.asarray(win["a"], dtype=np.int64)
    b = np.asarray(win["b"], dtype=np.int64)
    m = len(a)
    tid = np.asarray(win["next_tid"], dtype=np.int64)
    launch = np.asarray(win["next_launch_ns"], dtype=np.int64)
    launch_end = np.asarray(win["next_launch_end_ns"], dtype=np.int64) if "next_launch_end_ns" in win else np.full(m, NO_TIME, dtype=np.int64)
    known = launch != NO_TIME
    every = bool(known.all())
    end = np.clip(launch, a, b) if every else np.where(known, np.clip(launch, a, b), b)  # the thread's time that counts: until it launched
    full = cov["all"]
    on, ka, ke = full.keys(tid, a, end)  # keys shared by the three nested coverages
    # both ends in one lookup: interleaved, the keys of consecutive windows are in order (one pass over the starts)
    ends = np.empty(2 * m, dtype=np.int64)
    ends[0::2], ends[1::2] = ka, ke
    up, n = full.at(ends)
    up_e, n_e = up[1::2], n[1::2]
    up_e -= up[0::2]
    n_e -= n[0::2]
    s_all = np.where(on, np.maximum(up_e, 0), 0)
    calls = np.where(on, n_e, 0)
    s_sync = cov["sync"].covered_between(on, ka, ke)
    s_graph = (cov["sync+graph"].covered_between(on, ka, ke) - s_sync) if cov["sync+graph"] is not cov["sync"] else None
    s_api = s_all - s_sync if s_graph is None else s_all - s_sync - s_graph
    span = end - a
    host = span - s_all  # = span - sync - graph - api
    graph_node = np.asarray(win["next_graph"], dtype=bool)
    any_node = bool(graph_node.any())
    call_end = s_launch = launch_graph = None
    if any_node or not codes_only:
        call_end = np.where(known & (launch_end != NO_TIME), np.clip(launch_end, end, b), end)
        s_launch = call_end - end
        if any_node:
            launch_graph = np.where(graph_node, s_launch, 0)  # the cudaGraphLaunch that replays the next work
    if len(full.starts) < 2**36 and (m == 0 or (int(span.max()) < 2**51 and int(span.min()) > -(2**51))):
        # calls + 1 > 1 and |host| < 2**52: the float test host / (calls + 1) < TRICKLE_FREE_NS in integers, exactly
        trickle = (calls >= 1) & (host < TRICKLE_FREE_NS * (calls + 1))
    else:  # pragma: no cover - windows of months or 10^11 calls
        trickle = (calls >= 1) & (host / (calls + 1) < TRICKLE_FREE_NS)
    # profiler overhead covering half the window: where none covers it, that holds only for empty windows
    window = b - a
    profiled = window <= 0
    if overhead is not None:
        prof = overhead.covered(tid, a, b)
        hit = np.flatnonzero(prof)
        profiled[hit] = prof[hit] >= PROFILER_SHARE * window[hit]
    dep = known & (launch < a)
    terms = [t for t in (s_graph, launch_graph) if t is not None]
    g_all = (terms[0] + terms[1] if len(terms) == 2 else terms[0]) if terms else None
    # a collective that starts at the end of the window also counts: it waited for its peers
    coll = comm.covered(np.asarray(win["device_id"], dtype=np.int64), a, b + COLLECTIVE_SLACK_NS) > 0 if comm is not None else None
    busy = np.maximum(host, s_api)
    # The precedence, written once: the first rule that holds names the cause (CAUSES lists them in this order);
    # None: holds for no window.
    rules = (
        None if every else ~known,
        dep & graph_node if any_node else None,  # idle between nodes of a graph already launched: graph scheduling, not the host
        dep & coll if coll is not None else None,
        dep,
        profiled,
        (span < LAUNCH_LATENCY_NS) & known,
        (g_all >= busy) & (g_all > 0) if g_all is not None else None,  # the thread was in cudaGraphLaunch (the next work's included)
        (s_sync >= busy) & (s_sync > 0),
        (s_api >= host) | trickle,
    )
    cause = np.full(m, _CAUSE_INDEX[len(rules)], dtype=np.int8)
    for k in range(len(rules) - 1, -1, -1):  # the last rule first: an earlier one that holds overwrites it
        rule = rules[k]
        if rule is not None:
            cause[rule] = _CAUSE_INDEX[k]
    if codes_only:
        return {"cause": cause}
    assert s_launch is not None and call_end is not None
    own_launch = s_launch if launch_graph is None else s_launch - launch_graph
    return {
        "cause": cause,
        "sync_us": s_sync / 1e3,
        "api_us": s_api / 1e3,
        "graph_us": (g_all if g_all is not None else np.zeros(m, dtype=np.int64)) / 1e3,
        "host_us": host / 1e3,
        "launch_us": own_launch / 1e3,
        "queue_us": (b - call_end) / 1e3,
    }


def classify_windows(win: pd.DataFrame, cov: dict[str, Coverage], comm: Coverage | None, overhead: Coverage | None) -> pd.DataFrame:
    """`win`: a, b, device_id, next_tid, next_launch_ns and next_launch_end_ns (NO_TIME if unknown), next_graph.
    Returns cause, sync_us, api_us, graph_us, host_us, launch_us, queue_us per window. The components
    partition the window exactly: [a, launch) is the thread's own time (sync, graph, other API calls by
    precedence, the rest host), [launch, launch end) the launch call (graph_us for a graph), the rest queue."""
    cols = {c: win[c].to_numpy() for c in ("a", "b", "next_tid", "next_launch_ns", "next_launch_end_ns", "next_graph", "device_id") if c in win}
    out = _classify(cols, cov, comm, overhead)
    names = np.array(CAUSE_NAMES, dtype=object)
    return pd.DataFrame({"cause": names[out["cause"]], **{k: v for k, v in out.items() if k != "cause"}})


def _host_nvtx(trace: Trace, tid: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Innermost NVTX push/pop range (text) on each thread at each time, '' when none. The tree is built of the
    ranges that can bear on the answers, which are then those of the tree of all ranges: a range's depth and
    parent depend only on ranges before it, a query only on the ranges starting at or before it, and a climb
    that leaves its block (ranges joined where they overlap or touch) ends with none; so the blocks holding
    no query, and the ranges of a block after its last query, are left out."""
    out = np.full(len(ts), "", dtype=object)
    if not trace.has("nvtx") or len(ts) == 0:
        return out
    n = trace.nvtx()
    start, end, gtid = n["start_ns"].to_numpy(), n["end_ns"].to_numpy(), n["global_tid"].to_numpy()
    closed = (n["kind"] == "push_pop").to_numpy() & (end > start)
    if bool(closed.all()):  # every range: no copies to select them
        rows = np.flatnonzero(before_queries_in_blocks(gtid, start, end, tid, ts))
    else:
        rows = np.flatnonzero(closed)
        rows = rows[before_queries_in_blocks(gtid[rows], start[rows], end[rows], tid, ts)]
    tree = build_tree(pd.DataFrame({"start_ns": start[rows], "end_ns": end[rows], "global_tid": gtid[rows], "row": rows}))
    pos = tree.innermost(tid, ts)
    ok = pos >= 0
    picked = tree.frame["row"].to_numpy()[pos[ok]]
    out[ok] = n["text"].iloc[picked].astype(object).fillna("").astype(str).to_numpy()
    return out


def _comm_coverage(kernels: pd.DataFrame) -> Coverage | None:
    """Per device, the time covered by communication kernels (classes in COMM_CLASSES), found per distinct class."""
    is_comm = map_distinct(kernels["kernel_class"], lambda c: c in COMM_CLASSES, bool, False)
    if not is_comm.any():
        return None
    return Coverage(kernels["device_id"].to_numpy()[is_comm], kernels["start_ns"].to_numpy()[is_comm], kernels["end_ns"].to_numpy()[is_comm])


def gap_report(ctx: AnalysisContext, min_bubble_us: float = DEFAULT_MIN_BUBBLE_US, top: int = 20) -> GapReport:
    """Inter-step gaps and bubbles inside steps of the selected device(s), each with a cause (kept in
    the frame cache: see `kept`)."""
    return kept_or_computed(ctx, "gaps", (min_bubble_us, top), GapReport, lambda: _gap_report(ctx, min_bubble_us, top))


def _gap_report(ctx: AnalysisContext, min_bubble_us: float, top: int) -> GapReport:
    trace, m = ctx.trace, ctx.mapping
    ops = m.gpu_ops
    steps = m.steps
    notes: list[str] = []
    if len(steps) == 0:
        notes.append("no steps were found, so there are no inter-step gaps or bubbles to report")
        return GapReport(
            empty_frame(DEVICE_COLUMNS),
            empty_frame(GAP_COLUMNS),
            empty_frame(BUBBLE_COLUMNS),
            empty_frame(CAUSE_COLUMNS),
            pd.DataFrame(columns=["device_id", "step", "bubbles", "bubble_us"]),
            None,
            min_bubble_us,
            notes,
        )
    api = trace.api(("start_ns", "end_ns", "global_tid", "correlation_id", "name")) if trace.has("api") else None
    if api is None:
        notes.append("no CUDA API table: causes cannot be determined")
    comm = _comm_coverage(m.kernels)
    po = trace.profiler_overhead()
    overhead = Coverage(po["global_tid"].to_numpy(), po["start_ns"].to_numpy(), po["end_ns"].to_numpy()) if len(po) else None
    t0 = int(steps["start_ns"].min())

    w = _in_step(ops)
    gaps = _inter_step_gaps(w, steps, t0)
    host_nvtx = _host_nvtx(trace, gaps["next_tid"].to_numpy(), _mid_gap(gaps)) if len(gaps) else None
    # the transient peaks one after the other: the NVTX tree, the bubbles, the API coverage, the chunks of windows
    bub = _bubbles(w, min_bubble_us)
    cov = _api_coverage(api) if api is not None else None
    names = np.array(CAUSE_NAMES, dtype=object)
    if len(gaps) and cov is not None:
        cls = _classify({c: gaps[c].to_numpy() for c in gaps.columns}, cov, comm, overhead)
        gaps["cause"] = names[cls["cause"]]  # gaps (one per step) carry the cause as text
        for c in ("sync_us", "api_us", "graph_us", "host_us", "launch_us", "queue_us"):
            gaps[c] = cls[c]
    elif len(gaps):
        gaps["cause"] = "unknown (no API table)"
        for c in ("sync_us", "api_us", "graph_us", "host_us", "launch_us", "queue_us"):
            gaps[c] = np.nan
    if host_nvtx is not None:
        gaps["host_nvtx"] = host_nvtx
    # bubbles (up to one per operation) are never a frame: the cause of each as a code, then what is reported of them
    causes_of = _BubbleCauses(bub, _bubble_causes(w, bub, cov, comm, overhead), w, cov is not None)
    causes = _cause_table(gaps, causes_of)
    devices = _device_table(steps, gaps, causes_of.main_cause(), bub.per_step)
    worst = int(devices.sort_values("gap_median_us", ascending=False)["device_id"].iloc[0]) if len(devices) and devices["gap_median_us"].notna().any() else None
    gap_out = gaps[[c.name for c in GAP_COLUMNS]] if len(gaps) else empty_frame(GAP_COLUMNS)
    bub_out = _largest_bubbles(bub, causes_of, w, t0, top) if len(bub) else empty_frame(BUBBLE_COLUMNS)
    if not len(gaps):
        notes.append("only one step per device: no inter-step gap")
    return GapReport(devices, gap_out.reset_index(drop=True), bub_out, causes, bub.per_step, worst, min_bubble_us, notes)


def _mid_gap(gaps: pd.DataFrame) -> np.ndarray:
    """The middle of the launching thread's part of each gap (until it launched the next work)."""
    a, b, launch = gaps["a"].to_numpy(), gaps["b"].to_numpy(), gaps["next_launch_ns"].to_numpy()
    return a + np.where(launch != NO_TIME, np.clip(launch, a, b) - a, b - a) // 2


class _InStep:
    """The GPU operations inside steps as plain arrays, ordered by (device, start, end): only the columns the
    gap analysis reads, so no frame of millions of rows is filtered, grouped or copied (when every operation
    is inside a step and the frame is in that order, the arrays are the frame's own)."""

    def __init__(self, ops: pd.DataFrame) -> None:
        step = ops["step"].to_numpy()
        inside = step >= 0
        keep: np.ndarray | None = None if bool(inside.all()) else np.flatnonzero(inside)

        def col(name: str, dtype: Any = None) -> np.ndarray:
            values = ops[name].to_numpy(dtype)
            return values if keep is None else values[keep]

        start, end = col("start_ns"), col("end_ns")
        if not _by_start_end(start, end):
            o = np.lexsort((end, start))  # gpu_ops is sorted: this only runs for a frame that is not
            keep = o if keep is None else keep[o]
            start, end = start[o], end[o]
        dev = col("device_id")
        self.time_order: np.ndarray | None = None  # positions in (start, end) order, when the device sort moved them
        if len(dev) and bool((dev != dev[0]).any()):
            o = np.argsort(dev, kind="stable")  # by device, keeping the (start, end) order inside each
            keep = o if keep is None else keep[o]
            start, end, dev = start[o], end[o], dev[o]
            self.time_order = np.empty(len(o), dtype=np.int64)
            self.time_order[o] = np.arange(len(o))
        self.keep = keep  # positions in `ops` (None: the same positions)
        self.ops = ops
        self.start, self.end, self.device = start, end, dev
        self.step = col("step")
        self.has_launch = col("has_launch")
        self.api_start = col("api_start_ns")
        self.api_end = col("api_end_ns")
        self.global_tid = col("global_tid")
        self.graph = col("graph", bool)

    def __len__(self) -> int:
        return len(self.start)

    def rows(self, ix: np.ndarray) -> np.ndarray:
        """Positions in `ops` of the operations at `ix`."""
        return ix if self.keep is None else self.keep[ix]

    def launch_ns(self, ix: np.ndarray) -> np.ndarray:
        return np.where(self.has_launch[ix], self.api_start[ix], NO_TIME)

    def launch_end_ns(self, ix: np.ndarray) -> np.ndarray:
        return np.where(self.has_launch[ix], self.api_end[ix], NO_TIME)

    def labels(self, ix: np.ndarray) -> np.ndarray:
        """ "kind/op" (or the op alone outside layers) of the operations at `ix`."""
        rows = self.rows(ix)
        kinds = self.ops["layer_kind"].iloc[rows]
        opnames = self.ops["op"].iloc[rows]
        out = []
        for k, o in zip(kinds.tolist(), opnames.tolist()):
            k = "" if k is None or k != k else str(k)
            o = "" if o is None or o != o else str(o)
            out.append(f"{k}/{o}" if k else o)
        return np.asarray(out, dtype=object)


def _by_start_end(start: np.ndarray, end: np.ndarray) -> bool:
    """Whether the rows are in (start, end) order (equal starts, which are few, checked on their ends alone)."""
    if len(start) < 2:
        return True
    if not bool(np.all(start[1:] >= start[:-1])):
        return False
    tie = np.flatnonzero(start[1:] == start[:-1])
    return bool(np.all(end[tie + 1] >= end[tie]))


def _in_step(ops: pd.DataFrame) -> _InStep:
    return _InStep(ops)


def _first_last(w: _InStep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The steps (sorted), and per step the position in `w` of its first operation (by start, then end) and
    of its last (the latest end; on ties the last in that order)."""
    by_time = w.time_order
    st = w.step if by_time is None else w.step[by_time]
    if len(st) > 1 and not bool(np.all(st[1:] >= st[:-1])):
        o = np.argsort(st, kind="stable")  # by step, in (start, end) order inside each
        by_time = o if by_time is None else by_time[o]
        st = st[o]
    order = by_time  # positions in `w` by step, then (start, end); None: w's own order
    bounds = np.r_[0, np.flatnonzero(st[1:] != st[:-1]) + 1]
    ids = st[bounds]
    e = w.end if order is None else w.end[order]
    emax = np.maximum.reduceat(e, bounds)
    # the last position of each step's run holding its latest end
    at_max = np.flatnonzero(e == np.repeat(emax, np.diff(np.r_[bounds, len(st)])))
    last = at_max[np.searchsorted(at_max, np.r_[bounds[1:], len(st)]) - 1]
    if order is None:
        return ids, bounds, last
    return ids, order[bounds], order[last]


def _inter_step_gaps(w: _InStep, steps: pd.DataFrame, t0: int) -> pd.DataFrame:
    if len(w) == 0:
        return pd.DataFrame()
    ids, first_pos, last_pos = _first_last(w)
    at = pd.Index(ids)
    s = steps.sort_values(["device_id", "start_ns"])
    rows = []
    for dev, grp in s.groupby("device_id"):  # one pass per device
        step_ids = grp["step"].to_numpy()
        if len(step_ids) < 2:
            continue
        # only neighbours in the full sequence: a gap never spans a step left out (warm-up, outside --window)
        adjacent = np.diff(grp["ordinal"].to_numpy()) == 1
        prev, nxt = step_ids[:-1][adjacent], step_ids[1:][adjacent]
        if len(prev) == 0:
            continue
        lp = last_pos[at.get_indexer(prev)]
        fp = first_pos[at.get_indexer(nxt)]
        a = w.end[lp]
        b = w.start[fp]
        rows.append(
            pd.DataFrame(
                {
                    "device_id": int(dev),
                    "step_before": prev,
                    "step_after": nxt,
                    "a": a,
                    "b": b,
                    "start_ms": (a - t0) / 1e6,
                    "gap_us": (b - a) / 1e3,
                    "next_tid": w.global_tid[fp],
                    "next_launch_ns": w.launch_ns(fp),
                    "next_launch_end_ns": w.launch_end_ns(fp),
                    "next_graph": w.graph[fp],
                    "next_op": w.ops["op"].iloc[w.rows(fp)].astype(str).to_numpy(),
                }
            )
        )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


AFTER_NEAR = 64
"""Operations before a reported bubble looked at directly for the one that ended the reach (else a search)."""


@dataclass
class _Bubbles:
    """Idle windows inside steps (same device, same step) of at least min_bubble_us, in (device, start) order:
    the position in `w` of the operation after each (`hit`), the reach of `w` (a window starts at the reach
    before its operation: reach[hit - 1]), the windows' lengths in µs, and the table of bubbles per step."""

    hit: np.ndarray
    reach: np.ndarray
    us: np.ndarray
    per_step: pd.DataFrame

    def __len__(self) -> int:
        return len(self.hit)

    def after(self, w: _InStep, rows: np.ndarray) -> np.ndarray:
        """Position in `w` of the operation that ends the reach before bubbles `rows` (the last one that
        reached it): the last operation before the bubble whose end is the reach there."""
        p = self.hit[rows] - 1
        near = p[:, None] - np.arange(AFTER_NEAR)  # most often one of the few operations just before the bubble
        ok = (near >= 0) & (w.end[np.maximum(near, 0)] == self.reach[np.maximum(near, 0)])
        found = ok.any(axis=1)
        out = np.where(found, near[np.arange(len(p)), np.argmax(ok, axis=1)], -1)
        if not bool(found.all()):
            reached = np.flatnonzero(w.end == self.reach)  # a device's first operation always is one
            out[~found] = reached[np.searchsorted(reached, p[~found], side="right") - 1]
        return out


def _bubbles(w: _InStep, min_bubble_us: float) -> _Bubbles:
    """The bubbles of all devices in one sweep: the reach (latest end so far) restarts at each device, by
    laying the devices end to end on one axis."""
    n = len(w)
    if n == 0:
        e = np.zeros(0, dtype=np.int64)
        return _Bubbles(e, e, np.zeros(0), pd.DataFrame(columns=["device_id", "step", "bubbles", "bubble_us"]))
    start, end, step, dev = w.start, w.end, w.step, w.device
    multi = w.time_order is not None  # more than one device
    new_dev = np.r_[True, dev[1:] != dev[:-1]] if multi else None
    if new_dev is None:
        reach = np.maximum.accumulate(end)
    else:  # the reach of each device's operations: a running maximum that restarts at each device's first operation
        lo = int(min(start.min(), end.min()))
        span = int(max(start.max(), end.max())) - lo + 1
        dcode = np.cumsum(new_dev) - 1
        if span * (int(dcode[-1]) + 2) < 2**62:
            reach = np.maximum.accumulate(dcode * span + (end - lo)) - dcode * span + lo
        else:  # pragma: no cover - absurd time spans: one pass per device
            reach = np.empty(n, dtype=np.int64)
            for a_, b_ in zip(np.nonzero(new_dev)[0], np.r_[np.nonzero(new_dev)[0][1:], n]):
                reach[a_:b_] = np.maximum.accumulate(end[a_:b_])
    idle = start[1:] - reach[:-1]  # before the operation at 1..n-1
    same = step[1:] == step[:-1]
    if new_dev is not None:
        same &= ~new_dev[1:]
    threshold = min_bubble_us * 1e3
    # idle times are integers: compared with the threshold rounded up, the same (and no float copy of them)
    same &= idle >= (math.ceil(threshold) if math.isfinite(threshold) and abs(threshold) < 2**53 else threshold)
    hit = np.flatnonzero(same)
    del same
    us = idle[hit] / 1e3
    del idle
    hit += 1
    return _Bubbles(hit, reach, us, _per_step(w, hit, us, new_dev))


def _per_step(w: _InStep, hit: np.ndarray, us: np.ndarray, new_dev: np.ndarray | None) -> pd.DataFrame:
    """Per device and step (every step with operations, sorted): the bubbles and their time. The sums are
    pandas' group sums, in the bubbles' order."""
    step, dev = w.step, w.device
    change = np.r_[True, step[1:] != step[:-1]]
    if new_dev is not None:
        change |= new_dev
    rising = step[1:] >= step[:-1]
    if new_dev is not None:
        rising |= new_dev[1:]
    if bool(rising.all()):  # each (device, step) is one run of `w`, and the bubbles of a run are consecutive
        first = np.flatnonzero(change)
        counts = np.diff(np.r_[np.searchsorted(hit, first, side="left"), len(hit)])
        group = np.repeat(np.arange(len(first), dtype=np.int32 if len(first) < 2**31 else np.int64), counts)
    else:  # steps interleaved in time: number the (device, step) pairs
        _, dcode = np.unique(dev, return_inverse=True)
        lo, span = int(step.min()), int(step.max()) - int(step.min()) + 1
        key = dcode.astype(np.int64) * span + (step - lo)
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
        group = inv.ravel()[hit]
        counts = np.bincount(group, minlength=len(first))
    sums = _group_sums(us, group, len(first)) if len(hit) else np.zeros(len(first))
    return pd.DataFrame({"device_id": dev[first].astype(np.int64), "step": step[first], "bubbles": counts.astype(np.int64), "bubble_us": sums})


BUBBLE_CHUNK = 1 << 17
"""Bubbles classified at a time: the arrays of one chunk stay small (and in cache) however many there are."""


def _bubble_causes(w: _InStep, bub: _Bubbles, cov: dict[str, Coverage] | None, comm: Coverage | None, overhead: Coverage | None) -> np.ndarray:
    """The cause of each bubble, as an index into CAUSE_NAMES (zeros without an API table)."""
    codes = np.zeros(len(bub), dtype=np.int8)
    if cov is None:
        return codes
    for lo in range(0, len(bub), BUBBLE_CHUNK):  # a few chunks, each vectorised
        h = bub.hit[lo : lo + BUBBLE_CHUNK]
        win = {
            "a": bub.reach[h - 1],
            "b": w.start[h],
            "device_id": w.device[h],
            "next_tid": w.global_tid[h],
            "next_launch_ns": w.launch_ns(h),
            "next_launch_end_ns": w.launch_end_ns(h),
            "next_graph": w.graph[h],
        }
        codes[lo : lo + len(h)] = _classify(win, cov, comm, overhead, codes_only=True)["cause"]
    return codes


def _group_sums(values: np.ndarray, codes: np.ndarray, n: int) -> np.ndarray:
    """pandas' group sums of `values` per code 0..n-1 (compensated, in row order: what a group-by of a frame of
    them gives), 0.0 for codes without rows. The codes go in as a categorical: no factorisation of the rows."""
    cats = pd.Categorical.from_codes(codes, categories=pd.RangeIndex(n))
    return pd.Series(values, copy=False).groupby(cats, observed=False).sum().to_numpy(np.float64)


class _BubbleCauses:
    """The bubbles' causes (codes into `names`) and their counts and time per cause, over all devices and per
    device: pandas' group sums in the bubbles' order, as the group-bys of a frame of them would give."""

    def __init__(self, bub: _Bubbles, codes: np.ndarray, w: _InStep, known: bool) -> None:
        self.codes = codes
        self.names = list(CAUSE_NAMES) if known else ["unknown (no API table)"]
        self.known = known
        k = len(self.names)
        self.size = np.bincount(codes, minlength=k)
        self.sum = _group_sums(bub.us, codes, k)
        dev = w.device[bub.hit[:1]] if w.time_order is None else w.device[bub.hit]  # one device: no gather
        devices = np.unique(dev)
        self.per_device = {int(d): (self.size, self.sum) for d in devices}
        if len(devices) > 1:  # the sums of each device's own bubbles, in their order
            key = np.searchsorted(devices, dev) * k + codes
            size = np.bincount(key, minlength=k * len(devices)).reshape(-1, k)
            total = _group_sums(bub.us, key, k * len(devices)).reshape(-1, k)
            self.per_device = {int(d): (size[i], total[i]) for i, d in enumerate(devices.tolist())}

    def cause_groups(self) -> pd.DataFrame:
        """size and sum per cause name that occurs, in name order."""
        seen = np.flatnonzero(self.size)
        return pd.DataFrame({"size": self.size[seen], "sum": self.sum[seen]}, index=[self.names[int(c)] for c in seen])

    def main_cause(self) -> dict[int, str]:
        """Per device, the cause covering most bubble time (the first in name order on ties)."""
        out = {}
        for d, (size, total) in self.per_device.items():
            seen = np.flatnonzero(size)
            if len(seen):
                out[d] = self.names[int(seen[int(np.argmax(total[seen]))])]
        return out


def _largest_bubbles(bub: _Bubbles, causes: _BubbleCauses, w: _InStep, t0: int, top: int) -> pd.DataFrame:
    """The `top` largest bubbles with the ops around them (labels built for those rows only)."""
    rows = _largest(bub.us, top)
    h = bub.hit[rows]
    picked = pd.DataFrame({"device_id": w.device[h], "step": w.step[h], "start_ms": (bub.reach[h - 1] - t0) / 1e6, "bubble_us": bub.us[rows]}, index=rows)
    if causes.known:
        picked["cause"] = pd.Categorical.from_codes(causes.codes[rows], categories=CAUSE_NAMES)
    else:
        picked["cause"] = causes.names[0]
    out = picked.assign(after=w.labels(bub.after(w, rows)), before=w.labels(h), cause=picked["cause"].astype(object).astype(str))
    out["device_id"] = out["device_id"].astype(np.int64)
    return out[[c.name for c in BUBBLE_COLUMNS]].reset_index(drop=True)


def _largest(values: np.ndarray, top: int) -> np.ndarray:
    """Positions of the `top` largest values, largest first and equal ones in their order (the earliest first):
    a selection, then a sort of those at least as large as the top-th only. (A sort of all of them listed
    equal bubbles in an order that depended on the CPU's SIMD sort.)"""
    n = len(values)
    k = min(top, n) if top >= 0 else max(n + top, 0)  # as DataFrame.head(top)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.flatnonzero(values >= np.partition(values, n - k)[n - k]) if k < n else np.arange(n)
    return rows[np.lexsort((rows, -values[rows]))][:k]


def _cause_table(gaps: pd.DataFrame, bubbles: _BubbleCauses) -> pd.DataFrame:
    rows = []
    parts = []
    if len(gaps):
        parts.append(("gap", gaps.groupby("cause", observed=True)["gap_us"].agg(["size", "sum"])))
    if len(bubbles.codes):
        parts.append(("bubble", bubbles.cause_groups()))
    for kind, by_cause in parts:
        g = by_cause.sort_values("sum", ascending=False)
        total = float(g["sum"].sum()) or 1.0
        for cause, r in g.iterrows():
            rows.append((kind, str(cause), int(r["size"]), float(r["sum"]), float(r["sum"]) / total * 100))
    return pd.DataFrame(rows, columns=[c.name for c in CAUSE_COLUMNS]) if rows else empty_frame(CAUSE_COLUMNS)


def _main_cause(df: pd.DataFrame, col: str) -> str:
    if len(df) == 0:
        return ""
    return str(df.groupby("cause", observed=True)[col].sum().idxmax())


def _device_table(steps: pd.DataFrame, gaps: pd.DataFrame, bubble_cause: dict[int, str], per_step: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for dev, s in steps.groupby("device_id"):
        g = gaps[gaps["device_id"] == dev] if len(gaps) else gaps
        ps = per_step[per_step["device_id"] == dev] if len(per_step) else per_step
        gu = g["gap_us"] if len(g) else pd.Series(dtype=float)
        rows.append(
            {
                "device_id": int(dev),
                "steps": len(s),
                "gap_median_us": float(gu.median()) if len(gu) else float("nan"),
                "gap_p90_us": float(gu.quantile(0.9)) if len(gu) else float("nan"),
                "gap_max_us": float(gu.max()) if len(gu) else float("nan"),
                "gap_cause": _main_cause(g, "gap_us") if len(g) else "",
                "bubbles_per_step": float(ps["bubbles"].mean()) if len(ps) else 0.0,
                "bubble_us_per_step": float(ps["bubble_us"].median()) if len(ps) else 0.0,
                "bubble_cause": bubble_cause.get(int(dev), ""),
                "step_wall_us": float(s["wall_ns"].median() / 1e3),
                "step_period_us": step_period_ns(s) / 1e3,
            }
        )
    return pd.DataFrame(rows, columns=[c.name for c in DEVICE_COLUMNS])
