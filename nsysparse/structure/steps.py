"""Steps (forward passes / training iterations): from NVTX ranges, or inferred from the kernel sequence.

A step is a CPU launch window per process: GPU work belongs to the step during which it was launched
(so kernels launched by other threads, e.g. autograd's, belong to their iteration). With NVTX, windows
are the outermost ranges whose text matches the step pattern. Without, steps are inferred per device:
1. idle gaps: the largest relative jump in the sorted inter-kernel idle gaps splits steps, when the
   resulting segments repeat the same kernel sequence;
2. otherwise periodicity: the step period is the largest regular spacing of a kernel name that recurs
   at a constant interval, checked against the whole sequence; the phase is where idle gaps are largest.
The result carries a confidence in [0, 1] and the method used.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nsysparse.distinct import map_distinct
from nsysparse.structure.classes import EMBED_CLASSES, MATMUL_CLASSES, TRAIN_CLASSES
from nsysparse.structure.loops import find_loop_steps
from nsysparse.structure.runs import searchsorted_right

# A step-like word (forward, step, decode, ...) in a range that is not a framework op annotation:
# names with "::" (aten::, flash_attn::_flash_attn_forward, FSDP::pre_forward, autograd::engine::...)
# or emit_nvtx's ", op_id = N" are ops inside a step, never the step itself.
DEFAULT_STEP_PATTERN = (
    r"(?i)^(?!.*::)(?!.*\bop_id\s*=)(?:ProfilerStep|.*(?:^|[^a-z])(?:forward|step|iteration|iter|decode|train|prefill|execute_\w+|generate)(?:[^a-z]|$))"
)
"""Steps are NVTX ranges matching this (option: --step-pattern)."""
MIN_STEP_GAP_NS = 20_000
"""Idle gaps shorter than this never separate inferred steps."""
MIN_JUMP = 3.0
"""An idle gap splits steps only when it is at least this many times the next smaller gap (a decisive jump)."""
MAX_GAPS_SCANNED = 20_000
"""How many of the largest idle gaps are scanned for the decisive jump."""
MIN_AGREEMENT = 0.5
"""Gap-split steps are accepted when at least this share of them has the most common kernel sequence."""
GAP_CONFIDENCE_FLOOR = 0.7
"""Confidence of gap-split steps at the smallest decisive jump (rises to 1 at a 10× jump), times the agreement."""
PERIOD_MIN_REPEATS = 3
"""A kernel name must recur at least this many times at a constant spacing to propose a period."""
PERIOD_MIN_MATCH = 0.9
"""A proposed period is accepted when this share of the sequence equals itself shifted by the period."""
PERIOD_CONFIDENCE_SCALE = 0.9
"""Period-found steps are never more confident than this (times the match and agreement)."""
EDGE_FRAGMENT = 0.5
"""A first or last segment shorter than this share of the median step (and not the common sequence) is a fragment."""


@dataclass
class StepWindows:
    """Launch windows: step i of process pid covers launches in [cpu_start, cpu_end)."""

    frame: pd.DataFrame  # step, pid, device_id, name, cpu_start_ns, cpu_end_ns
    source: str  # nvtx | inferred-gaps | inferred-period | none
    confidence: float
    notes: list[str] = field(default_factory=list)
    kernel_step: np.ndarray | None = None  # inferred steps: step of each kernel (by position), -1 before the first


CONTAINER_WORDS = re.compile(r"(?i)(?<![a-z])(?:generate|generation|sample|sampling|serve)(?![a-z])")
"""A container whose name says it generates (its first step is the prefill, the rest decode); a container whose
name says train (an epoch of training steps) makes its steps train steps."""


def _outermost(pid: np.ndarray, end: np.ndarray) -> np.ndarray:
    """For ranges sorted by (pid, start, -end): True where a range is not inside an earlier one of its process."""
    keep = np.ones(len(pid), dtype=bool)
    for p in np.unique(pid):  # one pass per process (few), vectorised inside
        m = np.nonzero(pid == p)[0]
        run_max = np.maximum.accumulate(end[m])
        keep[m] = end[m] > np.concatenate(([np.iinfo(np.int64).min], run_max[:-1]))
    return keep


def _containers(cand: pd.DataFrame, outer: np.ndarray) -> np.ndarray:
    """Outermost ranges that hold two or more ranges of one text (a generate call holding its forwards, an
    epoch holding its iterations): those are containers, not steps. Vectorised per distinct inner text."""
    pid = cand["pid"].to_numpy()
    start = cand["start_ns"].to_numpy()
    end = cand["end_ns"].to_numpy()
    codes, _ = pd.factorize(cand["text"].astype(str))
    o = np.nonzero(outer)[0]
    most = np.zeros(len(o), dtype=np.int64)
    inner = ~outer
    for p in np.unique(pid[o]):  # processes (few) × distinct texts of nested candidates (few)
        op = o[pid[o] == p]
        at = np.nonzero(np.isin(o, op))[0]
        for c in np.unique(codes[inner & (pid == p)]):
            st = np.sort(start[inner & (pid == p) & (codes == c)])
            count = np.searchsorted(st, end[op], side="right") - np.searchsorted(st, start[op], side="left")
            most[at] = np.maximum(most[at], count)
    flag = np.zeros(len(cand), dtype=bool)
    flag[o[most >= 2]] = True
    return flag


def _nvtx_phase(names: np.ndarray, container: np.ndarray, first_in_container: np.ndarray) -> np.ndarray:
    """A step's phase from its own name, else from its container: the first step of a generate-like call is its
    prefill and the others decode; otherwise other."""
    low = np.char.lower(names.astype(str))
    cont = pd.Series(container.astype(str))
    gen = map_distinct(cont, lambda t: bool(CONTAINER_WORDS.search(t)), bool, False) if len(cont) else np.zeros(0, dtype=bool)
    train = np.char.find(np.char.lower(container.astype(str)), "train") >= 0
    phase = np.full(len(names), "other", dtype=object)
    phase[gen & first_in_container] = "prefill"
    phase[gen & ~first_in_container] = "decode"
    phase[train] = "train"
    for word in ("train", "decode", "prefill"):
        phase[np.char.find(low, word) >= 0] = word
    return phase


def nvtx_step_windows(nvtx: pd.DataFrame, pattern: str, ignore_domains: tuple[str, ...] = (), keep: np.ndarray | None = None) -> pd.DataFrame:
    """Step ranges per process: step, pid, name, cpu_start_ns, cpu_end_ns, phase, container.

    Candidates are ranges matching `pattern` outside library domains (and where `keep` holds, when given). The
    outermost are steps, unless they hold repeated candidates (a `generate` call holding its `forward`s): then
    those inner ranges are the steps. The row filters are per distinct kind, domain and text (masks over the
    frame); only the candidates are copied."""
    cols = ["step", "pid", "name", "cpu_start_ns", "cpu_end_ns", "phase", "container"]
    if nvtx is None or len(nvtx) == 0:
        return pd.DataFrame(columns=cols)
    rx = re.compile(pattern)
    ok = ~map_distinct(nvtx["kind"], lambda kind: kind == "mark", bool, False) & (nvtx["end_ns"].to_numpy() >= nvtx["start_ns"].to_numpy())
    if keep is not None:
        ok &= keep
    if ignore_domains and "domain" in nvtx:
        ok &= ~map_distinct(nvtx["domain"], lambda d: d in ignore_domains, bool, False)
    if int(ok.sum()) < 50:
        rng = nvtx[ok]
        cand = rng[rng["text"].astype(object).fillna("").astype(str).map(lambda s: bool(rx.search(s))).to_numpy()]
    else:
        cand = nvtx[ok & map_distinct(nvtx["text"], lambda t: bool(rx.search(t)), bool, False)]
    if len(cand) == 0:
        return pd.DataFrame(columns=cols)
    cand = cand.sort_values(["pid", "start_ns", "end_ns"], ascending=[True, True, False]).reset_index(drop=True)
    pid = cand["pid"].to_numpy()
    container_text = np.full(len(cand), "", dtype=object)
    container_id = np.full(len(cand), -1, dtype=np.int64)
    alive = np.ones(len(cand), dtype=bool)
    for _ in range(4):  # nesting levels of containers (a benchmark loop of generate calls, ...)
        idx = np.nonzero(alive)[0]
        outer = np.zeros(len(cand), dtype=bool)
        outer[idx[_outermost(pid[idx], cand["end_ns"].to_numpy()[idx])]] = True
        sub = cand[alive]
        cont = np.zeros(len(cand), dtype=bool)
        cont[idx] = _containers(sub, outer[idx])
        if not cont.any():
            break
        # the container's text goes to every candidate inside it (containers are outermost: disjoint per process)
        st, en = cand["start_ns"].to_numpy(), cand["end_ns"].to_numpy()
        texts = cand["text"].astype(str).to_numpy()
        for p in np.unique(pid[cont]):  # processes (few), vectorised over containers and candidates
            cs = np.nonzero(cont & (pid == p))[0]
            cs = cs[np.argsort(st[cs], kind="stable")]
            mine = np.nonzero(alive & (pid == p))[0]
            j = np.searchsorted(st[cs], st[mine], side="right") - 1
            inside = (j >= 0) & (en[mine] <= en[cs[np.clip(j, 0, None)]])
            at = cs[np.clip(j, 0, None)][inside]
            container_text[mine[inside]] = texts[at]
            container_id[mine[inside]] = at
        alive &= ~cont
    steps = cand[outer & alive]
    cont_of = container_text[(outer & alive)]
    cont_id = container_id[(outer & alive)]
    out = pd.DataFrame(
        {
            "pid": steps["pid"].to_numpy(),
            "name": steps["text"].astype(str).to_numpy(),
            "cpu_start_ns": steps["start_ns"].to_numpy(),
            "cpu_end_ns": steps["end_ns"].to_numpy(),
            "container": cont_of,
            "cid": cont_id,
        }
    )
    out = out.sort_values(["cpu_start_ns", "pid"]).reset_index(drop=True)
    first = ~out["cid"].duplicated().to_numpy()  # the first step of each container instance (each generate call), per process: ids are unique
    out["phase"] = _nvtx_phase(out["name"].to_numpy(), out["container"].to_numpy(), first)
    out.insert(0, "step", np.arange(len(out)))
    return out[cols]


def assign_windows(keys: np.ndarray, ts: np.ndarray, valid: np.ndarray, windows: pd.DataFrame, key_col: str = "pid") -> np.ndarray:
    """Step index of each launch (key, ts), or -1. Windows sharing a key must not overlap."""
    out = np.full(len(ts), -1, dtype=np.int64)
    if len(windows) == 0:
        return out
    for key, w in windows.groupby(key_col):  # one pass per process/device
        m = (keys == key) & valid
        rows = None if m.all() else np.flatnonzero(m)  # usually one process launches everything
        if rows is not None and len(rows) == 0:
            continue
        w = w.sort_values("cpu_start_ns")
        t = ts.astype(np.int64, copy=False) if rows is None else ts[rows].astype(np.int64, copy=False)
        # as intervals.assign_to_windows: the last window starting at or before each launch, if it ends after it
        idx = searchsorted_right(w["cpu_start_ns"].to_numpy(np.int64), t)
        idx -= 1  # -1 (before every window) picks the sentinels appended below
        step = np.append(w["step"].to_numpy(np.int64), -1)[idx]
        step[t >= np.append(w["cpu_end_ns"].to_numpy(np.int64) + 1, np.iinfo(np.int64).min)[idx]] = -1
        if rows is None:
            out = step
        else:
            out[rows] = step
    return out


def _idle_gaps(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Idle time before each kernel (0 for the first): start_i − max(end_0..i−1), floored at 0."""
    if len(start) == 0:
        return np.zeros(0, dtype=np.int64)
    reach = np.maximum.accumulate(end)
    g = np.zeros(len(start), dtype=np.int64)
    g[1:] = np.maximum(start[1:] - reach[:-1], 0)
    return g


def _signature_agreement(codes: np.ndarray, cuts: np.ndarray) -> tuple[float, int]:
    """Share of complete segments (between cuts) whose code sequence equals the most common one."""
    if len(cuts) < 2:
        return 0.0, 0
    segs = [codes[a:b].tobytes() for a, b in itertools.pairwise(cuts)]
    counts = pd.Series(segs).value_counts()
    return float(counts.iloc[0]) / len(segs), len(segs)


def infer_cuts(start: np.ndarray, end: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, str, float, str]:
    """Kernel indices where steps begin (sorted by start), the method, a confidence and an explanation."""
    n = len(start)
    if n < 4:
        return np.zeros(0, dtype=np.int64), "none", 0.0, "too few kernels to find steps"
    gaps = _idle_gaps(start, end)
    # 1. gaps: the largest relative jump among the biggest gaps
    top = np.sort(gaps[1:])[::-1][: min(n - 1, MAX_GAPS_SCANNED)]
    best = None
    for j in range(min(len(top) - 1, MAX_GAPS_SCANNED)):
        if top[j] < MIN_STEP_GAP_NS:
            break
        ratio = top[j] / top[j + 1] if top[j + 1] > 0 else float("inf")  # no idle at all inside steps
        if ratio >= MIN_JUMP and (best is None or ratio > best[1]):
            best = (j, ratio)
        if top[j + 1] <= 0:
            break
    if best is not None:
        threshold = top[best[0]]
        cuts = np.nonzero(gaps >= threshold)[0]
        cuts = np.concatenate(([0], cuts)) if len(cuts) == 0 or cuts[0] != 0 else cuts
        bounds = np.append(cuts, n)
        agree, nseg = _signature_agreement(codes, bounds)
        if nseg >= 2 and agree >= MIN_AGREEMENT:
            # identical step sequences dominate; the gap separation (ratio of the step gap to the
            # largest gap inside steps) refines it: ratio 3 -> 0.84, 10 or more -> 1
            conf = agree * (GAP_CONFIDENCE_FLOOR + (1 - GAP_CONFIDENCE_FLOOR) * min(1.0, float(np.log10(min(best[1], 1e6)))))
            return cuts, "inferred-gaps", round(conf, 3), f"{nseg} idle gaps ≥ {threshold / 1e3:.1f} µs, {agree:.0%} of steps share one kernel sequence"
    # 2. periodicity of the kernel-name sequence
    period = _period(codes)
    if period:
        # phase: the offset whose preceding idle gaps are largest on average
        phase_gap = np.bincount(np.arange(n) % period, weights=gaps, minlength=period)
        phase = int(np.argmax(phase_gap))
        cuts = np.arange(phase, n, period, dtype=np.int64)
        bounds = np.append(cuts, n) if cuts[-1] != n else cuts
        agree, nseg = _signature_agreement(codes, bounds[: len(bounds) - 1] if len(bounds) > 2 else bounds)
        match = float(np.mean(codes[period:] == codes[:-period]))
        conf = round(match * (agree if nseg else 0.5) * PERIOD_CONFIDENCE_SCALE, 3)
        return cuts, "inferred-period", conf, f"kernel sequence repeats every {period} kernels ({match:.1%} match); no decisive idle gaps"
    return np.zeros(0, dtype=np.int64), "none", 0.0, "no decisive idle gaps and no repeating kernel sequence"


def _period(codes: np.ndarray, min_count: int = PERIOD_MIN_REPEATS) -> int | None:
    """Largest constant spacing of a code that recurs ≥ min_count times, confirmed on the sequence."""
    n = len(codes)
    if n < 8:
        return None
    order = np.argsort(codes, kind="stable")
    sc = codes[order]
    bounds = np.nonzero(np.diff(sc))[0] + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [n]))
    best = None
    for a, b in zip(starts, ends):  # one iteration per distinct kernel name
        if b - a < min_count:
            continue
        pos = order[a:b]
        d = np.diff(pos)
        if d.min() == d.max() and d[0] > 1:
            p = int(d[0])
            if best is None or p > best:
                best = p
    if best is None or best * 2 > n:
        return None
    match = float(np.mean(codes[best:] == codes[:-best]))
    return best if match >= PERIOD_MIN_MATCH else None


def _trim_edges(cuts: np.ndarray, n: int, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop a first or last segment that is a fragment: under half the median step length and not the
    common kernel sequence (e.g. set-up kernels before the first CUDA-graph replay). Returns the
    remaining cuts, each segment's end, and how many kernels were left out."""
    ends = np.append(cuts[1:], n)
    lengths = ends - cuts
    if len(cuts) < 3:
        return cuts, ends, 0
    sigs = [codes[a:b].tobytes() for a, b in zip(cuts, ends)]
    modal = pd.Series(sigs).value_counts().index[0]
    med = float(np.median(lengths))
    keep = np.ones(len(cuts), dtype=bool)
    for i in (0, len(cuts) - 1):
        if lengths[i] <= EDGE_FRAGMENT * med and sigs[i] != modal:
            keep[i] = False
    return cuts[keep], ends[keep], int(lengths[~keep].sum())


_BACKWARD = re.compile(r"(?i)backward|_bwd|bwd_|grad")


def _loop_flags(grp: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per kernel: matrix multiply, CUDA-graph node, embedding lookup, training kernel (classes from the rules)."""

    def of_class(classes: tuple[str, ...]) -> np.ndarray:  # per distinct class, not per kernel
        if "kernel_class" not in grp:
            return np.zeros(len(grp), dtype=bool)
        return map_distinct(grp["kernel_class"], lambda c: c in classes, bool, False)

    graph = grp["graph_node_id"].to_numpy() > 0 if "graph_node_id" in grp else np.zeros(len(grp), dtype=bool)
    train = of_class(TRAIN_CLASSES) | map_distinct(grp["name"], lambda t: bool(_BACKWARD.search(t)), bool, False)
    return of_class(MATMUL_CLASSES), graph, of_class(EMBED_CLASSES), train


def _device_steps(grp: pd.DataFrame, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, float, str]:
    """first, last (kernel positions in `grp`), phase, warmup, method, confidence and an explanation for one device:
    the loop finder (structure.loops) first, else the idle-gap / period cuts."""
    start = grp["start_ns"].to_numpy()
    end = grp["end_ns"].to_numpy()
    gaps = _idle_gaps(start, end)
    loop = find_loop_steps(codes, start, end, gaps, *_loop_flags(grp))
    if not isinstance(loop, str):
        return loop.first, loop.last, loop.phase, loop.warmup, "inferred-repeat", loop.confidence, loop.why
    cuts, method, conf, why = infer_cuts(start, end, codes)
    why = f"{loop}; {why}"
    if len(cuts) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=object), np.zeros(0, dtype=bool), "none", 0.0, why
    cuts, ends, _ = _trim_edges(cuts, len(grp), codes)
    return cuts, ends - 1, np.full(len(cuts), "other", dtype=object), np.zeros(len(cuts), dtype=bool), method, conf, why


def infer_step_windows(k: pd.DataFrame, codes: np.ndarray) -> StepWindows:
    """Infer steps per device from kernels `k` (sorted by start; needs has_launch, api_start_ns, pid, and the
    kernel_class of the rules). A step covers kernel positions [first, last]; its launch window runs from its
    first to its last launch, so copies launched meanwhile belong to it and the sampling after a forward does
    not. Kernels without a launch record (time-sliced exports) fall back to GPU-time windows (gpu_only)."""
    cols = ["step", "pid", "device_id", "name", "cpu_start_ns", "cpu_end_ns", "gpu_only", "phase"]
    parts, notes, methods = [], [], []
    big = np.iinfo(np.int64).max
    kernel_seg = np.full(len(k), -1, dtype=np.int64)
    seg_base = 0
    devices = k["device_id"].to_numpy()
    one = _constant(devices)  # one device: its kernels are the frame itself (no copy)
    used = [c for c in ("start_ns", "end_ns", "kernel_class", "graph_node_id", "name", "has_launch", "api_start_ns", "pid") if c in k]
    for dev in np.unique(devices).tolist():  # one pass per device, in device order
        idx = np.arange(len(k)) if one else np.flatnonzero(devices == dev)
        grp = k if one else k[used].take(idx)
        first, last, phase, warm, method, conf, why = _device_steps(grp, codes if one else codes[idx])
        notes.append(f"device {dev}: {why}")
        if len(first) == 0:
            continue
        methods.append((method, conf))
        has = grp["has_launch"].to_numpy()
        launch = grp["api_start_ns"].to_numpy()
        lo = np.where(has, launch, big)
        hi = np.where(has, launch, -big)
        # per step [first, last]: its first and last launch (steps never overlap)
        seg_lo = -_max_in(-lo, first, last)
        seg_hi = _max_in(hi, first, last)
        gpu_only = seg_lo == big
        gstart = grp["start_ns"].to_numpy()
        gend = grp["end_ns"].to_numpy()
        cpu_s = np.where(gpu_only, gstart[first], seg_lo)
        cpu_e = np.where(gpu_only | (seg_hi == -big), gend[last], seg_hi)
        # an iteration's window runs to the next one's first launch (copies launched after its kernels belong to
        # it); an inference forward's ends with its last launch (the sampling after it is not part of it)
        whole = ~np.isin(phase, ("decode", "prefill"))
        until_next = np.append(cpu_s[1:] - 1, max(int(hi.max()), int(gend.max())))
        cpu_e = np.where(whole, np.maximum(cpu_e, until_next), cpu_e)
        parts.append(
            pd.DataFrame(
                {
                    "pid": int(grp["pid"].mode().iloc[0]),
                    "device_id": int(dev),
                    "name": "",
                    "cpu_start_ns": cpu_s,
                    "cpu_end_ns": cpu_e,
                    "gpu_only": gpu_only,
                    "phase": phase,
                    "warmup": warm,
                    "seg": seg_base + np.arange(len(first)),
                }
            )
        )
        pos = np.arange(len(grp))
        local = np.searchsorted(first, pos, side="right") - 1
        local = np.where((local >= 0) & (pos <= last[np.clip(local, 0, None)]), local, -1)
        kernel_seg[idx] = np.where(local >= 0, seg_base + local, -1)
        seg_base += len(first)
    if not parts:
        return StepWindows(pd.DataFrame(columns=cols), "none", 0.0, notes)
    frame = pd.concat(parts, ignore_index=True).sort_values(["cpu_start_ns", "device_id"]).reset_index(drop=True)
    frame.insert(0, "step", np.arange(len(frame)))
    step_of_seg = np.empty(seg_base, dtype=np.int64)
    step_of_seg[frame["seg"].to_numpy()] = frame["step"].to_numpy()
    kernel_step = np.where(kernel_seg >= 0, step_of_seg[np.clip(kernel_seg, 0, None)] if seg_base else -1, -1)
    method = methods[0][0] if len({m for m, _ in methods}) == 1 else "inferred-mixed"
    return StepWindows(frame[cols], method, min(c for _, c in methods), notes, kernel_step)


def _constant(values: np.ndarray) -> bool:
    return len(values) == 0 or int(values.min()) == int(values.max())


def _max_in(values: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """max(values[first_i : last_i + 1]) per non-overlapping, sorted range (one reduceat over the range starts
    and the gaps between ranges)."""
    edges = np.empty(2 * len(first), dtype=np.int64)
    edges[0::2] = first
    edges[1::2] = np.minimum(last + 1, len(values) - 1)
    red = np.maximum.reduceat(values, edges)
    out = red[0::2]
    tail = last + 1 >= len(values)  # only the last range can run to the end; its clipped edge left out the last element
    if tail.any():
        out[tail] = np.maximum(out[tail], values[-1])
    return out
