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

from nsysparse import intervals
from nsysparse.distinct import map_distinct

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


def nvtx_step_windows(nvtx: pd.DataFrame, pattern: str) -> pd.DataFrame:
    """Outermost ranges matching `pattern` per process: step, pid, name, cpu_start_ns, cpu_end_ns."""
    cols = ["step", "pid", "name", "cpu_start_ns", "cpu_end_ns"]
    if nvtx is None or len(nvtx) == 0:
        return pd.DataFrame(columns=cols)
    rx = re.compile(pattern)
    rng = nvtx[(nvtx["kind"] != "mark") & (nvtx["end_ns"] >= nvtx["start_ns"])]
    texts = rng["text"].astype(object).fillna("").astype(str)
    hit = texts.map(lambda s: bool(rx.search(s))) if len(texts) < 50 else _match_by_category(rng["text"], rx)
    cand = rng[hit.to_numpy()]
    if len(cand) == 0:
        return pd.DataFrame(columns=cols)
    cand = cand.sort_values(["pid", "start_ns", "end_ns"], ascending=[True, True, False])
    pid = cand["pid"].to_numpy()
    e = cand["end_ns"].to_numpy()
    # outermost only: drop a range contained in an earlier range of the same process
    reach = np.zeros(len(cand), dtype=np.int64)
    out_keep = np.ones(len(cand), dtype=bool)
    for p in np.unique(pid):  # one pass per process (few), vectorised inside
        m = np.nonzero(pid == p)[0]
        run_max = np.maximum.accumulate(e[m])
        prev = np.concatenate(([np.iinfo(np.int64).min], run_max[:-1]))
        out_keep[m] = e[m] > prev
        reach[m] = run_max
    cand = cand[out_keep]
    out = (
        pd.DataFrame(
            {
                "pid": cand["pid"].to_numpy(),
                "name": cand["text"].astype(str).to_numpy(),
                "cpu_start_ns": cand["start_ns"].to_numpy(),
                "cpu_end_ns": cand["end_ns"].to_numpy(),
            }
        )
        .sort_values(["cpu_start_ns", "pid"])
        .reset_index(drop=True)
    )
    out.insert(0, "step", np.arange(len(out)))
    return out


def _match_by_category(text: pd.Series, rx: re.Pattern[str]) -> pd.Series:
    return pd.Series(map_distinct(text, lambda t: bool(rx.search(t)), bool, False), index=text.index)


def assign_windows(keys: np.ndarray, ts: np.ndarray, valid: np.ndarray, windows: pd.DataFrame, key_col: str = "pid") -> np.ndarray:
    """Step index of each launch (key, ts), or -1. Windows sharing a key must not overlap."""
    out = np.full(len(ts), -1, dtype=np.int64)
    if len(windows) == 0:
        return out
    for key, w in windows.groupby(key_col):  # one pass per process/device
        m = (keys == key) & valid
        if not m.any():
            continue
        w = w.sort_values("cpu_start_ns")
        idx = intervals.assign_to_windows(ts[m], w["cpu_start_ns"].to_numpy(), w["cpu_end_ns"].to_numpy() + 1)
        out[m] = np.where(idx >= 0, w["step"].to_numpy()[np.clip(idx, 0, None)], -1)
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
        if lengths[i] < EDGE_FRAGMENT * med and sigs[i] != modal:
            keep[i] = False
    return cuts[keep], ends[keep], int(lengths[~keep].sum())


def infer_step_windows(k: pd.DataFrame, codes: np.ndarray) -> StepWindows:
    """Infer steps per device from kernels `k` (sorted by start; needs has_launch, api_start_ns, pid).

    Each step's launch window runs from its first launch to the next step's first launch; kernels
    without a launch record (time-sliced exports) fall back to GPU-time windows (gpu_only)."""
    cols = ["step", "pid", "device_id", "name", "cpu_start_ns", "cpu_end_ns", "gpu_only"]
    parts, notes, methods = [], [], []
    big = np.iinfo(np.int64).max
    kernel_seg = np.full(len(k), -1, dtype=np.int64)
    seg_base = 0
    for dev, grp in k.groupby("device_id", sort=True):  # one pass per device
        idx = grp.index.to_numpy()
        cuts, method, conf, why = infer_cuts(grp["start_ns"].to_numpy(), grp["end_ns"].to_numpy(), codes[idx])
        notes.append(f"device {dev}: {why}")
        if len(cuts) == 0:
            continue
        cuts, ends, dropped = _trim_edges(cuts, len(grp), codes[idx])
        if dropped:
            notes.append(f"device {dev}: {dropped} kernels before the first or after the last full step are not in any step")
        methods.append((method, conf))
        has = grp["has_launch"].to_numpy()
        launch = np.where(has, grp["api_start_ns"].to_numpy(), big)
        first_launch = np.minimum.reduceat(launch, cuts)
        gpu_only = first_launch == big
        gstart = grp["start_ns"].to_numpy()[cuts]
        cpu_s = np.where(gpu_only, gstart, first_launch)
        last = int(max(launch[has].max() if has.any() else 0, grp["end_ns"].max()))
        cpu_e = np.append(cpu_s[1:] - 1, last)
        parts.append(
            pd.DataFrame(
                {
                    "pid": int(grp["pid"].mode().iloc[0]),
                    "device_id": int(dev),
                    "name": "",
                    "cpu_start_ns": cpu_s,
                    "cpu_end_ns": cpu_e,
                    "gpu_only": gpu_only,
                    "seg": seg_base + np.arange(len(cuts)),
                }
            )
        )
        pos = np.arange(len(grp))
        local = np.searchsorted(cuts, pos, side="right") - 1
        local = np.where((local >= 0) & (pos < ends[np.clip(local, 0, None)]), local, -1)
        kernel_seg[k.index.get_indexer(idx)] = np.where(local >= 0, seg_base + local, -1)
        seg_base += len(cuts)
    if not parts:
        return StepWindows(pd.DataFrame(columns=cols), "none", 0.0, notes)
    frame = pd.concat(parts, ignore_index=True).sort_values(["cpu_start_ns", "device_id"]).reset_index(drop=True)
    frame.insert(0, "step", np.arange(len(frame)))
    step_of_seg = np.empty(seg_base, dtype=np.int64)
    step_of_seg[frame["seg"].to_numpy()] = frame["step"].to_numpy()
    kernel_step = np.where(kernel_seg >= 0, step_of_seg[np.clip(kernel_seg, 0, None)] if seg_base else -1, -1)
    method = methods[0][0] if len({m for m, _ in methods}) == 1 else "inferred-mixed"
    return StepWindows(frame[cols], method, min(c for _, c in methods), notes, kernel_step)
