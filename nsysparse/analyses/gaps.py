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

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nsysparse.analyses.context import AnalysisContext
from nsysparse.columns import Column, empty_frame
from nsysparse.distinct import map_distinct
from nsysparse.intervals import Coverage
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
    The three share one thread axis, so a window's keys are computed once for all of them."""
    # classify each distinct API name once (0 api, 1 sync, 2 graph), then broadcast through the codes
    cats = map_distinct(api["name"], lambda n: 1 if SYNC_API.match(n) else (2 if GRAPH_API.match(n) else 0), np.int8, 0)
    gtid, start, end = api["global_tid"].to_numpy(), api["start_ns"].to_numpy(), api["end_ns"].to_numpy()
    full, parts = Coverage.nested(gtid, start, end, {"sync": cats == 1, "sync+graph": cats >= 1})
    return {"all": full, **parts}


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


def _classify(win: dict[str, np.ndarray], cov: dict[str, Coverage], comm: Coverage | None, overhead: Coverage | None) -> dict[str, np.ndarray]:
    """The arrays of `classify_windows`, with `cause` as an index into CAUSE_NAMES (int8)."""
    a = np.asarray(win["a"], dtype=np.int64)
    b = np.asarray(win["b"], dtype=np.int64)
    tid = np.asarray(win["next_tid"], dtype=np.int64)
    launch = np.asarray(win["next_launch_ns"], dtype=np.int64)
    launch_end = np.asarray(win["next_launch_end_ns"], dtype=np.int64) if "next_launch_end_ns" in win else np.full(len(a), NO_TIME, dtype=np.int64)
    known = launch != NO_TIME
    end = np.where(known, np.clip(launch, a, b), b)  # the thread's time that counts: until it launched
    call_end = np.where(known & (launch_end != NO_TIME), np.clip(launch_end, end, b), end)
    q = cov["all"].query(tid, a, end)  # keys shared by the three nested coverages
    s_sync = cov["sync"].covered_at(q)
    s_graph = cov["sync+graph"].covered_at(q) - s_sync
    s_api = cov["all"].covered_at(q) - s_sync - s_graph
    host = (end - a) - s_sync - s_graph - s_api
    graph_node = np.asarray(win["next_graph"], dtype=bool)
    s_launch = call_end - end
    s_queue = b - call_end
    launch_graph = np.where(graph_node, s_launch, 0)  # the cudaGraphLaunch that replays the next work
    calls = cov["all"].count_starts_at(q)
    trickle = (calls >= 1) & (host / (calls + 1) < TRICKLE_FREE_NS)
    prof = overhead.covered(tid, a, b) if overhead is not None else np.zeros(len(a), dtype=np.int64)
    dep = known & (launch < a)
    g_all = s_graph + launch_graph
    # a collective that starts at the end of the window also counts: it waited for its peers
    dev = np.asarray(win["device_id"], dtype=np.int64)
    coll = comm.covered(dev, a, b + COLLECTIVE_SLACK_NS) > 0 if comm is not None else np.zeros(len(a), dtype=bool)
    # The precedence, written once: the first rule that holds names the cause (CAUSES lists them in this order).
    rules = (
        ~known,
        dep & graph_node,  # idle between nodes of a graph already launched: graph scheduling, not the host
        dep & coll,
        dep,
        prof >= PROFILER_SHARE * (b - a),
        known & (end - a < LAUNCH_LATENCY_NS),
        (g_all >= np.maximum(host, s_api)) & (g_all > 0),  # the thread was in cudaGraphLaunch (the next work's included)
        (s_sync >= np.maximum(host, s_api)) & (s_sync > 0),
        (s_api >= host) | trickle,
    )
    which = np.select(list(rules), [np.int8(i) for i in range(len(rules))], default=np.int8(len(rules))).astype(np.int8)
    return {
        "cause": _CAUSE_INDEX[which],
        "sync_us": s_sync / 1e3,
        "api_us": s_api / 1e3,
        "graph_us": g_all / 1e3,
        "host_us": host / 1e3,
        "launch_us": (s_launch - launch_graph) / 1e3,
        "queue_us": s_queue / 1e3,
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
    """Innermost NVTX push/pop range (text) on each thread at each time, '' when none."""
    out = np.full(len(ts), "", dtype=object)
    if not trace.has("nvtx") or len(ts) == 0:
        return out
    n = trace.nvtx()
    pp = n[(n["kind"] == "push_pop") & (n["end_ns"] > n["start_ns"])]
    tree = build_tree(pp[["start_ns", "end_ns", "global_tid", "text"]])
    pos = tree.innermost(tid, ts)
    texts = tree.frame["text"].astype(object).fillna("").astype(str).to_numpy()
    ok = pos >= 0
    out[ok] = texts[pos[ok]]
    return out


def _comm_coverage(kernels: pd.DataFrame) -> Coverage | None:
    """Per device, the time covered by communication kernels (classes in COMM_CLASSES), found per distinct class."""
    is_comm = map_distinct(kernels["kernel_class"], lambda c: c in COMM_CLASSES, bool, False)
    if not is_comm.any():
        return None
    return Coverage(kernels["device_id"].to_numpy()[is_comm], kernels["start_ns"].to_numpy()[is_comm], kernels["end_ns"].to_numpy()[is_comm])


def gap_report(ctx: AnalysisContext, min_bubble_us: float = DEFAULT_MIN_BUBBLE_US, top: int = 20) -> GapReport:
    """Inter-step gaps and bubbles inside steps of the selected device(s), each with a cause."""
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
    cov = _api_coverage(api) if api is not None else None
    comm = _comm_coverage(m.kernels)
    po = trace.profiler_overhead()
    overhead = Coverage(po["global_tid"].to_numpy(), po["start_ns"].to_numpy(), po["end_ns"].to_numpy()) if len(po) else None
    t0 = int(steps["start_ns"].min())

    w = _in_step(ops)
    gaps = _inter_step_gaps(w, steps, t0)
    bubbles, per_step, windows, ends = _bubbles(w, t0, min_bubble_us)
    names = np.array(CAUSE_NAMES, dtype=object)
    for frame, arrays in ((gaps, None), (bubbles, windows)):
        if len(frame) and cov is not None:
            cols = arrays if arrays is not None else {c: frame[c].to_numpy() for c in frame.columns}
            cls = _classify(cols, cov, comm, overhead)
            # gaps (one per step) carry the cause as text; bubbles (up to one per kernel) as a categorical
            frame["cause"] = names[cls["cause"]] if frame is gaps else pd.Categorical.from_codes(cls["cause"], categories=CAUSE_NAMES)
            for c in ("sync_us", "api_us", "graph_us", "host_us", "launch_us", "queue_us"):
                frame[c] = cls[c]
        elif len(frame):
            frame["cause"] = "unknown (no API table)"
            for c in ("sync_us", "api_us", "graph_us", "host_us", "launch_us", "queue_us"):
                frame[c] = np.nan
    if len(gaps):
        mid = (
            gaps["a"].to_numpy()
            + np.where(
                gaps["next_launch_ns"].to_numpy() != NO_TIME,
                np.clip(gaps["next_launch_ns"].to_numpy(), gaps["a"].to_numpy(), gaps["b"].to_numpy()) - gaps["a"].to_numpy(),
                gaps["b"].to_numpy() - gaps["a"].to_numpy(),
            )
            // 2
        )
        gaps["host_nvtx"] = _host_nvtx(trace, gaps["next_tid"].to_numpy(), mid)
    causes = _cause_table(gaps, bubbles)
    devices = _device_table(steps, gaps, bubbles, per_step)
    worst = int(devices.sort_values("gap_median_us", ascending=False)["device_id"].iloc[0]) if len(devices) and devices["gap_median_us"].notna().any() else None
    gap_out = gaps[[c.name for c in GAP_COLUMNS]] if len(gaps) else empty_frame(GAP_COLUMNS)
    bub_out = _largest_bubbles(bubbles, ends, w, top) if len(bubbles) else empty_frame(BUBBLE_COLUMNS)
    if not len(gaps):
        notes.append("only one step per device: no inter-step gap")
    return GapReport(devices, gap_out.reset_index(drop=True), bub_out, causes, per_step, worst, min_bubble_us, notes)


class _InStep:
    """The GPU operations inside steps as plain arrays, ordered by (device, start, end): only the columns the
    gap analysis reads, so no frame of millions of rows is filtered, grouped or copied."""

    def __init__(self, ops: pd.DataFrame) -> None:
        step = ops["step"].to_numpy()
        keep = np.nonzero(step >= 0)[0]
        start, end = ops["start_ns"].to_numpy()[keep], ops["end_ns"].to_numpy()[keep]
        if len(keep) > 1 and not bool(np.all((start[1:] > start[:-1]) | ((start[1:] == start[:-1]) & (end[1:] >= end[:-1])))):
            o = np.lexsort((end, start))  # gpu_ops is sorted: this only runs for a frame that is not
            keep, start, end = keep[o], start[o], end[o]
        dev = ops["device_id"].to_numpy()[keep]
        self.time_order: np.ndarray | None = None  # positions in (start, end) order, when the device sort moved them
        if len(dev) and bool((dev != dev[0]).any()):
            o = np.argsort(dev, kind="stable")  # by device, keeping the (start, end) order inside each
            keep, start, end, dev = keep[o], start[o], end[o], dev[o]
            self.time_order = np.empty(len(o), dtype=np.int64)
            self.time_order[o] = np.arange(len(o))
        self.rows = keep  # positions in `ops`
        self.ops = ops
        self.start, self.end, self.device = start, end, dev
        self.step = step[keep]
        self.has_launch = ops["has_launch"].to_numpy()[keep]
        self.api_start = ops["api_start_ns"].to_numpy()[keep]
        self.api_end = ops["api_end_ns"].to_numpy()[keep]
        self.global_tid = ops["global_tid"].to_numpy()[keep]
        self.graph = ops["graph"].to_numpy(bool)[keep]

    def __len__(self) -> int:
        return len(self.rows)

    def launch_ns(self, ix: np.ndarray) -> np.ndarray:
        return np.where(self.has_launch[ix], self.api_start[ix], NO_TIME)

    def launch_end_ns(self, ix: np.ndarray) -> np.ndarray:
        return np.where(self.has_launch[ix], self.api_end[ix], NO_TIME)

    def labels(self, ix: np.ndarray) -> np.ndarray:
        """ "kind/op" (or the op alone outside layers) of the operations at `ix`."""
        rows = self.rows[ix]
        kinds = self.ops["layer_kind"].iloc[rows]
        opnames = self.ops["op"].iloc[rows]
        out = []
        for k, o in zip(kinds.tolist(), opnames.tolist()):
            k = "" if k is None or k != k else str(k)
            o = "" if o is None or o != o else str(o)
            out.append(f"{k}/{o}" if k else o)
        return np.asarray(out, dtype=object)


def _in_step(ops: pd.DataFrame) -> _InStep:
    return _InStep(ops)


def _first_last(w: _InStep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The steps (sorted), and per step the position in `w` of its first operation (by start, then end) and
    of its last (the latest end; on ties the last in that order)."""
    by_time = w.time_order if w.time_order is not None else np.arange(len(w))
    order = by_time[np.argsort(w.step[by_time], kind="stable")]  # by step, in (start, end) order inside each
    st = w.step[order]
    bounds = np.r_[0, np.nonzero(np.diff(st))[0] + 1]
    ids = st[bounds]
    first = order[bounds]
    e = w.end[order]
    emax = np.maximum.reduceat(e, bounds)
    grp = np.repeat(np.arange(len(bounds)), np.diff(np.r_[bounds, len(st)]))
    last = order[np.maximum.reduceat(np.where(e == emax[grp], np.arange(len(st)), -1), bounds)]
    return ids, first, last


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
                    "next_op": w.ops["op"].iloc[w.rows[fp]].astype(str).to_numpy(),
                }
            )
        )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _bubbles(w: _InStep, t0: int, min_bubble_us: float) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Idle windows inside steps (same device, same step) of at least min_bubble_us: a frame of device_id,
    step, start_ms, bubble_us, one row per window in (device, start) order; the bubbles per step; the
    windows' arrays for their classification; the positions in `w` of the operations before and after each. All devices in one sweep: the reach (latest end so far) restarts
    at each device, by laying the devices end to end on one axis."""
    n = len(w)
    if n == 0:
        e = np.zeros(0, dtype=np.int64)
        return pd.DataFrame(), pd.DataFrame(columns=["device_id", "step", "bubbles", "bubble_us"]), {}, (e, e)
    start, end, step, dev = w.start, w.end, w.step, w.device
    new_dev = np.r_[True, dev[1:] != dev[:-1]]
    # the reach of each device's operations: a running maximum that restarts at each device's first operation
    lo = int(min(start.min(), end.min()))
    span = int(max(start.max(), end.max())) - lo + 1
    dcode = np.cumsum(new_dev) - 1
    if span * (int(dcode[-1]) + 2) < 2**62:
        reach = np.maximum.accumulate(dcode * span + (end - lo)) - dcode * span + lo
    else:  # pragma: no cover - absurd time spans: one pass per device
        reach = np.empty(n, dtype=np.int64)
        for a_, b_ in zip(np.nonzero(new_dev)[0], np.r_[np.nonzero(new_dev)[0][1:], n]):
            reach[a_:b_] = np.maximum.accumulate(end[a_:b_])
    idx = np.arange(n)
    # the operation that ends the reach (the last one that reached it), restarting per device
    holder = np.maximum.accumulate(np.where(end == reach, idx, np.where(new_dev, idx, 0)))
    idle = np.zeros(n, dtype=np.int64)
    idle[1:] = start[1:] - reach[:-1]
    same = np.zeros(n, dtype=bool)
    same[1:] = (step[1:] == step[:-1]) & ~new_dev[1:]
    hit = np.nonzero(same & (idle >= min_bubble_us * 1e3))[0]
    prev = holder[hit - 1]
    a = reach[hit - 1]
    b = start[hit]
    bubbles = pd.DataFrame({"device_id": dev[hit], "step": step[hit], "start_ms": (a - t0) / 1e6, "bubble_us": idle[hit] / 1e3})
    windows = {
        "a": a,
        "b": b,
        "device_id": dev[hit],
        "next_tid": w.global_tid[hit],
        "next_launch_ns": w.launch_ns(hit),
        "next_launch_end_ns": w.launch_end_ns(hit),
        "next_graph": w.graph[hit],
    }
    per_step = []
    for d in np.unique(dev).tolist():  # one pass per device, for the table of bubbles per step
        mine = dev[hit] == d
        bs = pd.DataFrame({"step": step[hit][mine], "us": idle[hit][mine] / 1e3}).groupby("step")["us"].agg(["size", "sum"])
        allsteps = pd.Index(np.unique(step[dev == d]), name="step")
        bs = bs.reindex(allsteps, fill_value=0)
        per_step.append(
            pd.DataFrame({"device_id": int(d), "step": bs.index.to_numpy(), "bubbles": bs["size"].to_numpy(np.int64), "bubble_us": bs["sum"].to_numpy(float)})
        )
    return bubbles, pd.concat(per_step, ignore_index=True), windows, (prev, hit)


def _largest_bubbles(bubbles: pd.DataFrame, ends: tuple[np.ndarray, np.ndarray], w: _InStep, top: int) -> pd.DataFrame:
    """The `top` largest bubbles with the ops around them (labels built for those rows only)."""
    # the same sort as of the whole frame (the same order among equal sizes), of its one sorted column
    rows = pd.DataFrame({"bubble_us": bubbles["bubble_us"].to_numpy()}).sort_values("bubble_us", ascending=False).head(top).index.to_numpy()
    picked = bubbles.iloc[rows]
    prev, hit = ends
    out = picked.assign(after=w.labels(prev[rows]), before=w.labels(hit[rows]), cause=picked["cause"].astype(object).astype(str))
    out["device_id"] = out["device_id"].astype(np.int64)
    return out[[c.name for c in BUBBLE_COLUMNS]].reset_index(drop=True)


def _cause_table(gaps: pd.DataFrame, bubbles: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for kind, df, col in (("gap", gaps, "gap_us"), ("bubble", bubbles, "bubble_us")):
        if len(df) == 0:
            continue
        g = df.groupby("cause", observed=True)[col].agg(["size", "sum"]).sort_values("sum", ascending=False)
        total = float(g["sum"].sum()) or 1.0
        for cause, r in g.iterrows():
            rows.append((kind, str(cause), int(r["size"]), float(r["sum"]), float(r["sum"]) / total * 100))
    return pd.DataFrame(rows, columns=[c.name for c in CAUSE_COLUMNS]) if rows else empty_frame(CAUSE_COLUMNS)


def _main_cause(df: pd.DataFrame, col: str) -> str:
    if len(df) == 0:
        return ""
    return str(df.groupby("cause", observed=True)[col].sum().idxmax())


def _device_table(steps: pd.DataFrame, gaps: pd.DataFrame, bubbles: pd.DataFrame, per_step: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for dev, s in steps.groupby("device_id"):
        g = gaps[gaps["device_id"] == dev] if len(gaps) else gaps
        bub = bubbles[bubbles["device_id"] == dev] if len(bubbles) else bubbles
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
                "bubble_cause": _main_cause(bub, "bubble_us") if len(bub) else "",
                "step_wall_us": float(s["wall_ns"].median() / 1e3),
                "step_period_us": step_period_ns(s) / 1e3,
            }
        )
    return pd.DataFrame(rows, columns=[c.name for c in DEVICE_COLUMNS])
