"""Steps without NVTX: the iterations of the workload's loop, found by repetition at several scales.

A full capture holds set-up, warm-up, generate calls (one prefill and many decode forwards each) or training
iterations (forward, backward, optimizer). On one device's kernel sequence (start order, kernel names as codes):

1. **Periods.** Every spacing between two occurrences of a kernel name is a candidate period P. Where the
   sequence equals itself shifted by P for at least P kernels, it holds two or more back-to-back copies of a
   unit of P kernels (a tandem repeat). Periods whose units contain no matrix multiply (element-wise chains,
   optimizer loops) and multiples of a smaller period that repeats in the same place are dropped.
2. **The loop's period.** Layers, forwards and generate calls all repeat. A loop iteration ends with a host
   round trip (sampling, a sync, the Python loop), so the GPU idles longest at one position of the unit: the
   *boundary gap* (the largest median idle gap at one position of the unit, over its copies) is many times the
   unit's typical gap. The step period is the smallest period with a decisive boundary gap; layers inside a
   forward have none. The unit starts at that position.
3. **Steps.** Every copy of the unit is a step, and so is every place where the unit's first kernels recur
   (iterations that differ later, e.g. the first decode step after a prefill). Repeated layer bodies outside
   those steps are forwards of another kind: a prefill (inference) that starts at its embedding lookup.
4. **Extent.** A training iteration, or a forward of unknown kind, runs to the next one. A decode or prefill
   forward ends at its last matrix multiply (the LM head) or its last CUDA-graph kernel: the sampling and
   stopping checks after it are between steps.
5. **Phases.** train (the unit holds a loss, backward or optimizer kernels), prefill (the extra forward before a
   run of decode steps), decode, or other; `warmup_flags` marks the steps of a phase before it settles (its first
   STEADY_RUN steps none slower than WARMUP_FACTOR × the phase's median).

Everything is vectorised over the sequence; the loops run over candidate periods (at most MAX_CANDIDATES),
their regions and the positions of one unit, never over kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_UNIT_KERNELS = 4
"""A repeating unit has at least this many kernels (shorter repeats are element-wise chains, not loops)."""
MAX_CANDIDATES = 48
"""How many candidate periods are checked (the spacings covering the most kernels)."""
MIN_STEP_COPIES = 4
"""The loop's iterations repeat back to back at least this many times in all (generate calls or epochs repeat fewer times)."""
MIN_BOUNDARY_RATIO = 3.0
"""A loop iteration ends in a host round trip: the idle gap at its boundary is at least this many times the unit's
median position gap (an autotuner's back-to-back benchmark loops have none)."""
MIN_BODY_SHARE = 0.5
"""A unit is a model pass when smaller repeats (its layers) cover at least this share of it."""
PREFIX_KERNELS = 12
"""Iterations that are not exact copies are found where the unit's first kernels (up to this many) recur..."""
MIN_TEMPLATE_MATCH = 0.8
"""...and at least this share of the whole unit matches there, position by position."""
EMBED_SNAP_KERNELS = 16
"""An iteration starts at its embedding lookup when one lies this close after the largest idle gap (the tail of
an optimizer update or of the sampling comes before it)."""
WARMUP_FACTOR = 2.0
"""Leading steps whose wall time exceeds this multiple of their phase's median are warm-up..."""
STEADY_RUN = 3
"""...until this many consecutive steps of the phase are not."""
NON_PRIMITIVE_OVERLAP = 0.9
"""A period that is a multiple of a smaller one repeating over this share of its span adds nothing."""


@dataclass(frozen=True)
class Period:
    """A tandem-repeat period: its length and the sorted, disjoint regions [lo, hi) where the sequence repeats with it."""

    length: int
    lo: np.ndarray
    hi: np.ndarray

    @property
    def coverage(self) -> int:
        return int((self.hi - self.lo).sum())

    @property
    def copies(self) -> int:
        return int(((self.hi - self.lo) // self.length).sum())

    @property
    def widest(self) -> int:
        """Start of the widest region (its first copy is the reference unit)."""
        return int(self.lo[np.argmax(self.hi - self.lo)])


@dataclass(frozen=True)
class LoopSteps:
    """Steps found on one device: kernel index ranges [first, last] in start order, with phase and warm-up flag."""

    first: np.ndarray
    last: np.ndarray
    phase: np.ndarray  # prefill | decode | train | other
    warmup: np.ndarray
    period: int
    confidence: float
    why: str


def _union(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of intervals [s, e) as sorted, disjoint intervals (sort, then a cumulative-max sweep)."""
    if len(starts) == 0:
        return starts.astype(np.int64), ends.astype(np.int64)
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    reach = np.maximum.accumulate(e)
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] > reach[:-1]
    return s[new], np.maximum.reduceat(e, np.nonzero(new)[0])


def _covered(us: np.ndarray, ue: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For disjoint sorted intervals [us, ue): how much of each [a, b) they cover (prefix sums + searchsorted)."""
    if len(us) == 0:
        return np.zeros(len(a), dtype=np.int64)
    cum = np.concatenate(([0], np.cumsum(ue - us)))

    def upto(x: np.ndarray) -> np.ndarray:
        i = np.searchsorted(us, x, side="right") - 1
        ok = i >= 0
        j = np.clip(i, 0, None)
        return np.where(ok, cum[j] + np.clip(x - us[j], 0, ue[j] - us[j]), 0)

    return upto(b) - upto(a)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each run of True (from the positions where the mask flips)."""
    if len(mask) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    flips = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    edges = np.concatenate(([0], flips, [len(mask)])) if mask[0] else np.concatenate((flips, [len(mask)]))
    edges = edges[: len(edges) // 2 * 2]  # run starts and ends alternate; a trailing start (a False run's end) has no run
    return edges[0::2], edges[1::2] - edges[0::2]


def candidate_periods(codes: np.ndarray) -> np.ndarray:
    """Spacings between consecutive occurrences of each code, ranked by the kernels they could cover."""
    n = len(codes)
    if n < 2 * MIN_UNIT_KERNELS:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(codes, kind="stable")  # by code, positions ascending (np.lexsort((np.arange(n), codes)))
    same = codes[order][1:] == codes[order][:-1]
    d = (order[1:] - order[:-1])[same]
    vals, cnt = np.unique(d, return_counts=True)
    ok = (vals >= MIN_UNIT_KERNELS) & (cnt >= 2) & (vals * 2 <= n)
    vals, cnt = vals[ok], cnt[ok]
    return np.sort(vals[np.argsort(-(cnt * vals), kind="stable")][:MAX_CANDIDATES])


def periods(codes: np.ndarray, is_gemm: np.ndarray) -> list[Period]:
    """Primitive tandem-repeat periods whose units hold a matrix multiply, smallest first."""
    out: list[Period] = []
    gemm_prefix = np.concatenate(([0], np.cumsum(is_gemm)))
    for p in candidate_periods(codes).tolist():
        s, r = _runs(codes[:-p] == codes[p:])
        keep = r >= p
        if not keep.any():
            continue
        cand = Period(p, s[keep].astype(np.int64), (s[keep] + r[keep] + p).astype(np.int64))
        a0 = cand.widest
        if gemm_prefix[a0 + p] - gemm_prefix[a0] == 0:
            continue
        if any(p % q.length == 0 and _overlap(cand, q) >= NON_PRIMITIVE_OVERLAP * cand.coverage for q in out):
            continue
        out.append(cand)
    return out


def _inner_share(outer: Period, found: list[Period]) -> float:
    """Share of one unit of `outer` (its longest region's first copy) covered by regions of smaller periods."""
    smaller = [q for q in found if q.length < outer.length]
    if not smaller:
        return 0.0
    us, ue = _union(np.concatenate([q.lo for q in smaller]), np.concatenate([q.hi for q in smaller]))
    a = outer.widest
    return float(_covered(us, ue, np.array([a]), np.array([a + outer.length]))[0]) / outer.length


def choose_step_period(found: list[Period], codes: np.ndarray, gaps: np.ndarray) -> Period | None:
    """The loop's period, among periods that repeat at least MIN_STEP_COPIES times with a boundary gap:

    - a *model pass* is a unit mostly made of smaller repeats (its layers: MIN_BODY_SHARE);
    - a pass that holds back-to-back copies of a smaller pass is a *container* (a generate call, an epoch): out;
    - a period that repeats inside a pass's regions is a part of it (a layer): out;
    - of the rest, the one covering the most kernels (compiled forwards, whose layers are fused into distinct
      kernels, are no pass but still the loop; benchmark loops of an autotuner cover less)."""
    often = [q for q in found if q.copies >= MIN_STEP_COPIES and boundary(q, codes, gaps)[1] >= MIN_BOUNDARY_RATIO]
    passes = {id(q) for q in often if _inner_share(q, found) >= MIN_BODY_SHARE}
    containers = {
        id(q) for q in often if id(q) in passes for r in often if id(r) in passes and r.length < q.length and r.copies >= 2 * q.copies and _overlap(q, r) > 0
    }
    cands = [q for q in often if id(q) not in containers]
    outer = [q for q in cands if id(q) in passes]
    cands = [q for q in cands if id(q) in passes or not any(q.length < r.length and _overlap(q, r) > 0 for r in outer)]
    return max(cands, key=lambda q: q.coverage) if cands else None


def _overlap(a: Period, b: Period) -> int:
    """Kernels covered by both periods' regions."""
    return int(_covered(b.lo, b.hi, a.lo, a.hi).sum())


def _inside(period: Period, pos: np.ndarray) -> np.ndarray:
    """Whether each position lies in one of the period's regions."""
    r = np.searchsorted(period.lo, pos, side="right") - 1
    return (r >= 0) & (pos < period.hi[np.clip(r, 0, None)])


def _positions(period: Period, anchor_code: int, codes: np.ndarray) -> np.ndarray:
    """Positions of `anchor_code` inside the period's regions, each a copy's reference point."""
    pos = np.nonzero(codes == anchor_code)[0]
    return pos[_inside(period, pos)]


def boundary(period: Period, codes: np.ndarray, gaps: np.ndarray) -> tuple[int, float, np.ndarray]:
    """(offset of the unit's start from its anchor code, boundary-gap ratio, aligned unit starts).

    The anchor is a code that occurs once in the unit; every copy is aligned on it, the median idle gap before each
    position of the unit is taken over the copies, and the unit starts at the position where it is largest."""
    p = period.length
    s0 = period.widest
    unit = codes[s0 : s0 + p]
    _vals, first, cnt = np.unique(unit, return_index=True, return_counts=True)
    once = first[cnt == 1]
    if len(once) == 0:
        return 0, 0.0, np.zeros(0, dtype=np.int64)
    delta = int(once.min())
    anchors = _positions(period, int(unit[delta]), codes)
    offsets = np.arange(p) - delta
    idx = anchors[:, None] + offsets[None, :]
    inside = (idx >= 0) & (idx < len(codes))
    g = np.where(inside, gaps[np.clip(idx, 0, len(codes) - 1)], np.nan)
    med = np.nan_to_num(_nanmedian_columns(g), nan=0.0)  # the median over copies: warm-up copies (first launches) do not count
    j = int(np.argmax(med))
    typical = float(np.median(med))
    ratio = float(med[j] / typical) if typical > 0 else (float("inf") if med[j] > 0 else 0.0)
    starts = anchors + offsets[j]
    # only whole copies: a unit that starts and ends inside one region
    r = np.searchsorted(period.lo, starts, side="right") - 1
    whole = (r >= 0) & (starts + p <= period.hi[np.clip(r, 0, None)])
    return int(offsets[j]), ratio, starts[whole]


def _nanmedian_columns(g: np.ndarray) -> np.ndarray:
    """np.nanmedian(g, axis=0) for a 2-D array (NaN for an all-NaN column), by one sort of the columns: the mean of
    the two middle values of each column's non-NaN values (NaNs sort last). numpy's own median of these columns runs
    a Python call per column when there are many rows."""
    if g.shape[0] == 0:
        return np.full(g.shape[1], np.nan)
    srt = np.sort(g, axis=0)
    count = g.shape[0] - np.isnan(g).sum(axis=0)
    cols = np.arange(g.shape[1])
    lo, hi = srt[np.maximum((count - 1) // 2, 0), cols], srt[np.maximum(count // 2, 0), cols]
    with np.errstate(all="ignore"):
        return np.where(count > 0, (lo + hi) / 2, np.nan)


def _prefix_matches(codes: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Positions where the sequence starts with `template` (vectorised: one comparison per template kernel)."""
    k = len(template)
    n = len(codes)
    if k == 0 or n < k:
        return np.zeros(0, dtype=np.int64)
    ok = np.ones(n - k + 1, dtype=bool)
    for t, c in enumerate(template.tolist()):
        ok &= codes[t : n - k + 1 + t] == c
    return np.nonzero(ok)[0]


def find_loop_steps(
    codes: np.ndarray,
    start_ns: np.ndarray,
    end_ns: np.ndarray,
    gaps: np.ndarray,
    is_gemm: np.ndarray,
    is_graph: np.ndarray,
    is_embed: np.ndarray,
    is_train: np.ndarray,
) -> LoopSteps | str:
    """Steps of one device's kernels (all arrays in start order), or why no loop was found."""
    found = periods(codes, is_gemm)
    step = choose_step_period(found, codes, gaps)
    if step is None:
        often = sum(q.copies >= MIN_STEP_COPIES for q in found)
        return (
            f"no loop found ({len(found)} repeating units with a matrix multiply, {often} of them repeating {MIN_STEP_COPIES}+ times, "
            f"none with a boundary gap {MIN_BOUNDARY_RATIO:g}× its median)"
        )
    _, ratio, starts = boundary(step, codes, gaps)
    if len(starts) == 0:
        return f"no loop found (the {step.length}-kernel unit has no whole copy to align on)"
    p = step.length
    starts = _snap_to_embedding(starts, is_embed, p)
    s0 = int(starts[0])
    template = codes[s0 : s0 + p]
    extra = _prefix_matches(codes, template[: min(PREFIX_KERNELS, p // 2)])
    extra = extra[_template_share(codes, extra, template) >= MIN_TEMPLATE_MATCH]
    starts = np.unique(np.concatenate((starts, extra)))
    starts = _drop_close(starts, p // 2)
    train = bool(is_train[s0 : s0 + p].any())
    n = len(codes)
    nxt = np.append(starts[1:], n)
    pre_first = pre_last = np.zeros(0, dtype=np.int64)
    forward_last = _last_of_forward(starts, np.minimum(nxt, starts + p), is_gemm, is_graph)
    if not train:
        bodies = [q for q in found if q.length < p]
        pre_first, pre_last = _other_forwards(starts, forward_last, bodies, gaps, is_gemm, is_graph, is_embed, n)
    if train or len(pre_first) == 0:
        # an iteration of unknown kind (or a training iteration) runs to the next one; the first may be longer
        # (optimizer state is created), the last runs one unit (what follows it is no iteration of its own)
        runs_on = (nxt - starts <= 2 * p) & (nxt < n)
        last = np.where(runs_on, nxt, np.minimum(nxt, starts + p)) - 1
        phase = np.full(len(starts), "train" if train else "other", dtype=object)
    else:
        # a loop whose iterations follow an extra forward each time is a decode loop after its prefill: an inference
        # forward ends at its LM head (or graph), the sampling and stopping checks after it are between steps
        last = forward_last
        starts = np.concatenate((starts, pre_first))
        last = np.concatenate((last, pre_last))
        phase = np.concatenate((np.full(len(nxt), "decode", dtype=object), np.full(len(pre_first), "prefill", dtype=object)))
        order = np.argsort(starts, kind="stable")
        starts, last, phase = starts[order], last[order], phase[order]
    warm = warmup_flags(phase, end_ns[last] - start_ns[starts])
    conf = round(min(1.0, 0.5 + 0.5 * min(1.0, np.log10(max(ratio, 1.0)) / 2)) * min(1.0, step.copies / max(len(starts), 1)), 3)
    why = (
        f"a loop of {p} kernels repeats {step.copies} times back to back (boundary gap {ratio:.0f}× the unit's median); "
        f"{len(starts)} steps ({', '.join(f'{(phase == ph).sum()} {ph}' for ph in dict.fromkeys(phase.tolist()))}), {int(warm.sum())} warm-up"
    )
    return LoopSteps(starts.astype(np.int64), last.astype(np.int64), phase, warm, p, conf, why)


def _snap_to_embedding(starts: np.ndarray, is_embed: np.ndarray, p: int) -> np.ndarray:
    """Move unit starts to the unit's first embedding lookup when it comes within EMBED_SNAP_KERNELS (the same
    offset for every copy, taken from the first copy that has one). Vectorised: the next lookup after each start."""
    window = min(EMBED_SNAP_KERNELS, p)
    emb = np.nonzero(is_embed)[0]
    if len(emb) == 0 or len(starts) == 0:
        return starts
    nxt = emb[np.clip(np.searchsorted(emb, starts), 0, len(emb) - 1)]
    d = nxt - starts
    ok = (d >= 0) & (d < window)
    if not ok.any():
        return starts
    shifted = starts + int(d[np.argmax(ok)])
    return shifted[shifted < len(is_embed)]


def _template_share(codes: np.ndarray, at: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Per position in `at`: the share of `template` that the sequence starting there matches, position by position."""
    if len(at) == 0:
        return np.zeros(0)
    idx = at[:, None] + np.arange(len(template))[None, :]
    inside = idx < len(codes)
    same = inside & (codes[np.clip(idx, 0, len(codes) - 1)] == template[None, :])
    return same.mean(axis=1)


def _drop_close(starts: np.ndarray, min_gap: int) -> np.ndarray:
    """Keep starts at least `min_gap` kernels after the previous kept one (a vectorised greedy pass per round)."""
    if len(starts) < 2:
        return starts
    keep = np.ones(len(starts), dtype=bool)
    while True:
        live = np.nonzero(keep)[0]
        close = np.nonzero(np.diff(starts[live]) < min_gap)[0]
        if len(close) == 0:
            return starts[keep]
        # drop the later of each close pair, but not one whose own predecessor is dropped in this round (greedy)
        drop = close[~np.isin(close, close + 1)] + 1
        keep[live[drop]] = False


def _last_of_forward(first: np.ndarray, stop: np.ndarray, is_gemm: np.ndarray, is_graph: np.ndarray) -> np.ndarray:
    """Per forward [first, stop): its last matrix multiply or CUDA-graph kernel (the LM head or the graph's end)."""
    mark = is_gemm | is_graph
    idx = np.where(mark, np.arange(len(mark)), -1)
    run_max = np.maximum.accumulate(idx)
    last = run_max[np.clip(stop - 1, 0, len(mark) - 1)]
    return np.where(last >= first, last, stop - 1)


def _other_forwards(
    first: np.ndarray,
    last: np.ndarray,
    bodies: list[Period],
    gaps: np.ndarray,
    is_gemm: np.ndarray,
    is_graph: np.ndarray,
    is_embed: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Forwards outside the loop's steps: repeated layer bodies (regions of smaller periods) in the stretches
    between steps, preceded by an embedding lookup. Each starts at the last such lookup before its body and ends
    at its last matrix multiply or graph kernel before the next step. Vectorised over the bodies."""
    none = np.zeros(0, dtype=np.int64)
    if not bodies:
        return none, none
    bs, be = _union(np.concatenate([q.lo for q in bodies]), np.concatenate([q.hi for q in bodies]))
    k = np.searchsorted(first, bs, side="right")  # steps starting at or before each body
    prev_last = np.concatenate(([-1], last))[k]
    hi = np.concatenate((first, [n]))[k]
    lo = prev_last + 1
    ok = (bs > prev_last) & (be <= hi)  # not inside a step, and not running into the next one
    idx = np.arange(n)
    last_embed = np.maximum.accumulate(np.where(is_embed, idx, -1))
    f = last_embed[np.clip(bs - 1, 0, n - 1)]
    ok &= (bs > 0) & (f >= lo)  # repeats with no embedding lookup before them are no forward (an autotuner's benchmarks)
    mark = np.maximum.accumulate(np.where(is_gemm | is_graph, idx, -1))
    stop = mark[np.clip(hi - 1, 0, n - 1)]
    stop = np.where(stop >= be, stop, be - 1)
    f, stop = f[ok], stop[ok]
    if len(f) == 0:
        return none, none
    # bodies of one forward (e.g. its layers found by two periods) merge: a start inside the previous forward
    new = np.ones(len(f), dtype=bool)
    new[1:] = f[1:] > np.maximum.accumulate(stop)[:-1]
    heads = np.nonzero(new)[0]
    return f[heads].astype(np.int64), np.maximum.reduceat(stop, heads).astype(np.int64)


def warmup_flags(phase: np.ndarray, wall: np.ndarray, device: np.ndarray | None = None) -> np.ndarray:
    """Per step (in time order per device): warm-up = the steps of a phase before it settles, i.e. before its first
    STEADY_RUN consecutive steps none slower than WARMUP_FACTOR × the phase's median wall time; only when one of
    those leading steps is slow (a capture that starts in steady state has no warm-up)."""
    warm = np.zeros(len(phase), dtype=bool)
    dev = np.zeros(len(phase), dtype=np.int64) if device is None else device
    for d, ph in dict.fromkeys(zip(dev.tolist(), phase.tolist())):  # devices × phases (few)
        idx = np.nonzero((phase == ph) & (dev == d))[0]
        slow = wall[idx] > WARMUP_FACTOR * np.median(wall[idx])
        if len(idx) < 2 or not slow[0]:
            continue
        run = min(STEADY_RUN, len(idx) - 1)  # a phase of few steps (the prefills of three calls) settles sooner
        calm = np.convolve(~slow, np.ones(run, dtype=int), mode="valid") == run  # runs of calm steps
        settle = int(np.argmax(calm)) if calm.any() else len(idx)
        warm[idx[:settle]] = True
    return warm
