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
from nsysparse.distinct import dense_codes, map_distinct
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
    thread's time, so overlapping calls (a runtime call and the driver call inside it) count once."""
    # classify each distinct API name once (0 api, 1 sync, 2 graph), then broadcast through the codes
    cats = map_distinct(api["name"], lambda n: 1 if SYNC_API.match(n) else (2 if GRAPH_API.match(n) else 0), np.int8, 0)
    gtid, start, end = api["global_tid"].to_numpy(), api["start_ns"].to_numpy(), api["end_ns"].to_numpy()
    out = {}
    for label, m in (("sync", cats == 1), ("sync+graph", cats >= 1)):
        out[label] = Coverage(gtid[m], start[m], end[m], count_starts=False)
    out["all"] = Coverage(gtid, start, end)
    return out


def classify_windows(win: pd.DataFrame, cov: dict[str, Coverage], comm: Coverage | None, overhead: Coverage | None) -> pd.DataFrame:
    """`win`: a, b, device_id, next_tid, next_launch_ns and next_launch_end_ns (NO_TIME if unknown), next_graph.
    Returns cause, sync_us, api_us, graph_us, host_us, launch_us, queue_us per window. The components
    partition the window exactly: [a, launch) is the thread's own time (sync, graph, other API calls by
    precedence, the rest host), [launch, launch end) the launch call (graph_us for a graph), the rest queue."""
    a = win["a"].to_numpy(np.int64)
    b = win["b"].to_numpy(np.int64)
    tid = win["next_tid"].to_numpy(np.int64)
    launch = win["next_launch_ns"].to_numpy(np.int64)
    launch_end = win["next_launch_end_ns"].to_numpy(np.int64) if "next_launch_end_ns" in win else np.full(len(a), NO_TIME, dtype=np.int64)
    known = launch != NO_TIME
    end = np.where(known, np.clip(launch, a, b), b)  # the thread's time that counts: until it launched
    call_end = np.where(known & (launch_end != NO_TIME), np.clip(launch_end, end, b), end)
    s_sync = cov["sync"].covered(tid, a, end)
    s_graph = cov["sync+graph"].covered(tid, a, end) - s_sync
    s_api = cov["all"].covered(tid, a, end) - s_sync - s_graph
    host = (end - a) - s_sync - s_graph - s_api
    graph_node = win["next_graph"].to_numpy(bool)
    s_launch = call_end - end
    s_queue = b - call_end
    launch_graph = np.where(graph_node, s_launch, 0)  # the cudaGraphLaunch that replays the next work
    calls = cov["all"].count_starts(tid, a, end)
    trickle = (calls >= 1) & (host / (calls + 1) < TRICKLE_FREE_NS)
    prof = overhead.covered(tid, a, b) if overhead is not None else np.zeros(len(a), dtype=np.int64)
    dep = known & (launch < a)
    g_all = s_graph + launch_graph
    # a collective that starts at the end of the window also counts: it waited for its peers
    coll = comm.covered(win["device_id"].to_numpy(np.int64), a, b + COLLECTIVE_SLACK_NS) > 0 if comm is not None else np.zeros(len(a), dtype=bool)
    # The precedence, written once: the first rule that holds names the cause (GAP_CAUSE lists them in this order).
    rules = (
        ("unknown (no launch record)", ~known),
        ("graph", dep & graph_node),  # idle between nodes of a graph already launched: graph scheduling, not the host
        ("collective wait", dep & coll),
        ("gpu dependency", dep),
        ("profiler", prof >= PROFILER_SHARE * (b - a)),
        ("launch latency", known & (end - a < LAUNCH_LATENCY_NS)),
        ("graph", (g_all >= np.maximum(host, s_api)) & (g_all > 0)),  # the thread was in cudaGraphLaunch (the next work's included)
        ("sync", (s_sync >= np.maximum(host, s_api)) & (s_sync > 0)),
        ("launch-bound", (s_api >= host) | trickle),
    )
    cause = np.select([cond for _, cond in rules], [np.array(name, dtype=object) for name, _ in rules], default="host work").astype(object)
    return pd.DataFrame(
        {
            "cause": cause,
            "sync_us": s_sync / 1e3,
            "api_us": s_api / 1e3,
            "graph_us": g_all / 1e3,
            "host_us": host / 1e3,
            "launch_us": (s_launch - launch_graph) / 1e3,
            "queue_us": s_queue / 1e3,
        }
    )


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
    ck = m.kernels[m.kernels["kernel_class"].astype(str).isin(COMM_CLASSES)]
    comm = Coverage(ck["device_id"].to_numpy(), ck["start_ns"].to_numpy(), ck["end_ns"].to_numpy()) if len(ck) else None
    po = trace.profiler_overhead()
    overhead = Coverage(po["global_tid"].to_numpy(), po["start_ns"].to_numpy(), po["end_ns"].to_numpy()) if len(po) else None
    t0 = int(steps["start_ns"].min())

    in_step = ops[ops["step"] >= 0]
    gaps = _inter_step_gaps(in_step, steps, t0)
    bubbles, per_step = _bubbles(in_step, t0, min_bubble_us)
    for frame in (gaps, bubbles):
        if len(frame) and cov is not None:
            cls = classify_windows(frame, cov, comm, overhead)
            for c in cls.columns:
                frame[c] = cls[c].to_numpy()
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
    bub_out = (
        bubbles.sort_values("bubble_us", ascending=False).head(top)[[c.name for c in BUBBLE_COLUMNS]].reset_index(drop=True)
        if len(bubbles)
        else empty_frame(BUBBLE_COLUMNS)
    )
    if not len(gaps):
        notes.append("only one step per device: no inter-step gap")
    return GapReport(devices, gap_out.reset_index(drop=True), bub_out, causes, per_step, worst, min_bubble_us, notes)


def _first_last(in_step: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per step: its first GPU operation (by start) and its last (by end)."""
    ordered = _by_start(in_step)
    first = ordered.drop_duplicates("step", keep="first").set_index("step")
    step = ordered["step"].to_numpy()
    end = ordered["end_ns"].to_numpy()
    # the op with the latest end in each step (the last such op on ties, as a stable sort by end gives)
    o = np.lexsort((np.arange(len(end)), end, step))
    last_pos = o[np.r_[np.nonzero(np.diff(step[o]))[0], len(o) - 1]] if len(o) else o
    last = ordered.iloc[last_pos].set_index("step")
    return first, last


def _by_start(df: pd.DataFrame) -> pd.DataFrame:
    """`df` ordered by (start, end); gpu_ops already is, so usually no sort happens."""
    s, e = df["start_ns"].to_numpy(), df["end_ns"].to_numpy()
    if len(s) < 2 or bool(np.all((s[1:] > s[:-1]) | ((s[1:] == s[:-1]) & (e[1:] >= e[:-1])))):
        return df
    return df.iloc[np.lexsort((e, s))]


def _inter_step_gaps(in_step: pd.DataFrame, steps: pd.DataFrame, t0: int) -> pd.DataFrame:
    if len(in_step) == 0:
        return pd.DataFrame()
    first, last = _first_last(in_step)
    s = steps.sort_values(["device_id", "start_ns"])
    rows = []
    for dev, grp in s.groupby("device_id"):  # one pass per device
        ids = grp["step"].to_numpy()
        if len(ids) < 2:
            continue
        # only neighbours in the full sequence: a gap never spans a step left out (warm-up, outside --window)
        adjacent = np.diff(grp["ordinal"].to_numpy()) == 1
        prev, nxt = ids[:-1][adjacent], ids[1:][adjacent]
        if len(prev) == 0:
            continue
        a = last.loc[prev, "end_ns"].to_numpy()
        b = first.loc[nxt, "start_ns"].to_numpy()
        f = first.loc[nxt]
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
                    "next_tid": f["global_tid"].to_numpy(),
                    "next_launch_ns": np.where(f["has_launch"].to_numpy(), f["api_start_ns"].to_numpy(), NO_TIME),
                    "next_launch_end_ns": np.where(f["has_launch"].to_numpy(), f["api_end_ns"].to_numpy(), NO_TIME),
                    "next_graph": f["graph"].to_numpy(bool),
                    "next_op": f["op"].astype(str).to_numpy(),
                }
            )
        )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _bubbles(in_step: pd.DataFrame, t0: int, min_bubble_us: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Idle windows inside steps (same device, same step) of at least min_bubble_us."""
    parts, per_step = [], []
    for dev, g in in_step.groupby("device_id", sort=True):  # one pass per device (groupby keeps row order)
        g = _by_start(g)
        start = g["start_ns"].to_numpy()
        end = g["end_ns"].to_numpy()
        step = g["step"].to_numpy()
        reach = np.maximum.accumulate(end)
        idx = np.arange(len(g))
        holder = np.maximum.accumulate(np.where(end == reach, idx, 0))  # op that ends the reach
        idle = np.zeros(len(g), dtype=np.int64)
        idle[1:] = start[1:] - reach[:-1]
        same = np.zeros(len(g), dtype=bool)
        same[1:] = step[1:] == step[:-1]
        hit = np.nonzero(same & (idle >= min_bubble_us * 1e3))[0]
        prev = holder[hit - 1]

        def label(ix: np.ndarray, g: pd.DataFrame = g) -> np.ndarray:
            """ "kind/op" at rows ix, built once per distinct (kind, op) pair."""
            kc, kv = dense_codes(g["layer_kind"])
            oc, ov = dense_codes(g["op"])
            kc, oc = kc[ix], oc[ix]
            pair, inv = np.unique(kc * len(ov) + oc, return_inverse=True)
            names = [f"{kv[p // len(ov)]}/{ov[p % len(ov)]}" if kv[p // len(ov)] else ov[p % len(ov)] for p in pair.tolist()]
            return np.asarray(names, dtype=object)[inv.ravel()] if len(ix) else np.zeros(0, dtype=object)

        parts.append(
            pd.DataFrame(
                {
                    "device_id": int(dev),
                    "step": step[hit],
                    "a": reach[hit - 1],
                    "b": start[hit],
                    "start_ms": (reach[hit - 1] - t0) / 1e6,
                    "bubble_us": idle[hit] / 1e3,
                    "after": label(prev),
                    "before": label(hit),
                    "next_tid": g["global_tid"].to_numpy()[hit],
                    "next_launch_ns": np.where(g["has_launch"].to_numpy()[hit], g["api_start_ns"].to_numpy()[hit], NO_TIME),
                    "next_launch_end_ns": np.where(g["has_launch"].to_numpy()[hit], g["api_end_ns"].to_numpy()[hit], NO_TIME),
                    "next_graph": g["graph"].to_numpy(bool)[hit],
                }
            )
        )
        b = pd.DataFrame({"step": step[hit], "us": idle[hit] / 1e3}).groupby("step")["us"].agg(["size", "sum"])
        allsteps = pd.Index(np.unique(step), name="step")
        b = b.reindex(allsteps, fill_value=0)
        per_step.append(
            pd.DataFrame({"device_id": int(dev), "step": b.index.to_numpy(), "bubbles": b["size"].to_numpy(np.int64), "bubble_us": b["sum"].to_numpy(float)})
        )
    bubbles = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    steps_df = pd.concat(per_step, ignore_index=True) if per_step else pd.DataFrame(columns=["device_id", "step", "bubbles", "bubble_us"])
    return bubbles, steps_df


def _cause_table(gaps: pd.DataFrame, bubbles: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for kind, df, col in (("gap", gaps, "gap_us"), ("bubble", bubbles, "bubble_us")):
        if len(df) == 0:
            continue
        g = df.groupby("cause")[col].agg(["size", "sum"]).sort_values("sum", ascending=False)
        total = float(g["sum"].sum()) or 1.0
        for cause, r in g.iterrows():
            rows.append((kind, str(cause), int(r["size"]), float(r["sum"]), float(r["sum"]) / total * 100))
    return pd.DataFrame(rows, columns=[c.name for c in CAUSE_COLUMNS]) if rows else empty_frame(CAUSE_COLUMNS)


def _main_cause(df: pd.DataFrame, col: str) -> str:
    if len(df) == 0:
        return ""
    return str(df.groupby("cause")[col].sum().idxmax())


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
