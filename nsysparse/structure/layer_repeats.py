"""Layers without NVTX or matching templates: the repeated blocks inside one step, kinds told by content.

Inside one step (its kernel names in launch order), the decoder layers are the unit that repeats back to back
(structure.loops' periods; dense and MoE layers share their attention half). Each layer period
covering the most kernels is taken, then others whose copies lie elsewhere (a training step has forward and
backward layers). Layer starts are the places where a period's unit begins (its first kernels: the attention
block), so a layer that is no exact copy (the dense first layer of a MoE model) is found too. A layer's kind comes
from its content: a router (top-k) or expert kernels make it `moe`, attention makes it `dense` (`_bwd` when it holds
backward kernels); a repeated block with neither is no layer.
"""

from __future__ import annotations

import numpy as np

from nsysparse.structure.loops import _drop_close, _prefix_matches, periods

LAYER_PREFIX_KERNELS = 10
"""A layer starts where the first kernels (up to this many) of a repeating layer unit recur."""
MAX_LAYER_PERIODS = 4
"""At most this many distinct layer units per step (forward and backward layers, dense and MoE ones...)."""


def repeated_layers(
    codes: np.ndarray, is_gemm: np.ndarray, is_moe: np.ndarray, is_attn: np.ndarray, is_bwd: np.ndarray, is_norm: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """Per position of one step's sequence: its layer ordinal (-1 outside layers), and each layer's kind.
    A repeated block with neither attention nor MoE kernels is no layer (a piece of one, or an optimizer loop).
    `is_norm` marks norm kernels: among equally good layer starts, one at an attention norm is taken (a norm from
    which attention comes before any other norm: the MLP norm has the next layer's attention norm first)."""
    n = len(codes)
    ordinal = np.full(n, -1, dtype=np.int32)
    found = [q for q in periods(codes, is_gemm) if q.copies >= 2]
    if not found:
        return ordinal, []
    lead = _attention_norms(is_norm, is_attn) if is_norm is not None else None
    taken = np.zeros(n, dtype=bool)
    starts_all: list[np.ndarray] = []
    ends_all: list[np.ndarray] = []
    for q in sorted(found, key=lambda q: -q.coverage)[: MAX_LAYER_PERIODS * 2]:
        if len(starts_all) >= MAX_LAYER_PERIODS:
            break
        inside = taken[q.lo[0] : q.hi[-1]].mean() if q.hi[-1] > q.lo[0] else 1.0
        if inside > 0.5:
            continue  # a repeat inside layers already found (a sub-layer pair such as q/k norms)
        k = min(LAYER_PREFIX_KERNELS, q.length // 2)
        a = _layer_start(codes, q.widest, q.length, k, lead)
        starts = _drop_close(_prefix_matches(codes, codes[a : a + k]), q.length // 2)
        starts = starts[~taken[starts]]
        if len(starts) < 2:
            continue
        starts = _at_norm(starts, q.length, lead)
        nxt = np.append(starts[1:], n)
        # a layer runs to the next one when that follows within half a unit more (the first layer may hold the
        # rotary table), else one unit long
        follows = (nxt - starts <= q.length + q.length // 2) & (np.arange(len(starts)) < len(starts) - 1)
        ends = np.where(follows, nxt, np.minimum(nxt, starts + q.length))
        edge = np.zeros(n + 1, dtype=np.int64)
        np.add.at(edge, starts, 1)
        np.add.at(edge, ends, -1)
        taken |= np.cumsum(edge)[:n] > 0
        starts_all.append(starts)
        ends_all.append(ends)
    if not starts_all:
        return ordinal, []
    first = np.concatenate(starts_all)
    last = np.concatenate(ends_all)
    order = np.argsort(first, kind="stable")
    first, last = first[order], last[order]
    last = np.minimum(last, np.append(first[1:], n))  # layers never overlap
    pos = np.arange(n)

    def per_layer(flag: np.ndarray, f: np.ndarray, e: np.ndarray) -> np.ndarray:
        i = np.searchsorted(f, pos, side="right") - 1
        ok = (i >= 0) & (pos < e[np.clip(i, 0, None)])
        return np.bincount(i[ok], weights=flag[ok].astype(float), minlength=len(f)) > 0

    moe, attn = per_layer(is_moe, first, last), per_layer(is_attn, first, last)
    keep = moe | attn
    first, last, moe, bwd = first[keep], last[keep], moe[keep], per_layer(is_bwd, first, last)[keep]
    i = np.searchsorted(first, pos, side="right") - 1
    ok = (i >= 0) & (pos < last[np.clip(i, 0, None)]) if len(first) else np.zeros(n, dtype=bool)
    ordinal[ok] = i[ok]
    kinds = [("moe" if m else "dense") + ("_bwd" if b else "") for m, b in zip(moe.tolist(), bwd.tolist())]
    return ordinal, kinds


def _layer_start(codes: np.ndarray, a: int, p: int, k: int, is_norm: np.ndarray | None = None) -> int:
    """Where in the unit [a, a + p) a layer starts: the rotation whose first k kernels recur most often in the
    step (the attention block, shared by dense and MoE layers), the earliest of those that begins with a norm
    kernel when one does (compiled layers repeat by class, so every rotation recurs as often), else the earliest."""
    best, best_n, best_norm = a, -1, False
    for o in range(p):  # one unit's positions (a layer's kernels), not the trace's
        at = a + o
        if at + k > len(codes):
            break
        n = len(_drop_close(_prefix_matches(codes, codes[at : at + k]), p // 2))  # at most one start per layer
        norm = is_norm is not None and bool(is_norm[at])
        if n > best_n or (n == best_n and norm and not best_norm):
            best, best_n, best_norm = at, n, norm
    return best


def _attention_norms(is_norm: np.ndarray, is_attn: np.ndarray) -> np.ndarray:
    """Norm kernels that begin an attention block: the next attention kernel comes before the next norm kernel."""
    norms = np.nonzero(is_norm)[0]
    attn = np.nonzero(is_attn)[0]
    out = np.zeros(len(is_norm), dtype=bool)
    if len(norms) == 0 or len(attn) == 0:
        return out
    nxt_attn = np.searchsorted(attn, norms, side="right")
    ok = nxt_attn < len(attn)
    nxt_norm = np.append(norms[1:], len(is_norm))
    ok &= attn[np.clip(nxt_attn, 0, len(attn) - 1)] < nxt_norm
    out[norms[ok]] = True
    return out


def _at_norm(starts: np.ndarray, p: int, is_norm: np.ndarray | None) -> np.ndarray:
    """Move every layer start back to the last attention norm at or before it, less than a unit away, when every
    start has one: a layer begins with its attention norm. Compiled layers repeat by class, so their unit can begin
    anywhere in the layer (and the first layer holds the rotary table, so it is longer); eager ATen norms are no
    norm-class kernels and keep their starts."""
    if is_norm is None or bool(is_norm[starts].all()):
        return starts
    norms = np.nonzero(is_norm)[0]
    if len(norms) == 0:
        return starts
    j = np.searchsorted(norms, starts, side="right") - 1
    cand = norms[np.clip(j, 0, None)]
    if not bool(((j >= 0) & (starts - cand < p)).all()) or len(np.unique(cand)) != len(cand):
        return starts
    return cand


def content_kind(is_moe: np.ndarray, is_attn: np.ndarray, is_bwd: np.ndarray) -> str:
    """The kind of one layer from its kernels: moe (router or expert kernels), dense (attention), else unknown;
    `_bwd` when it holds backward kernels."""
    kind = "moe" if bool(is_moe.any()) else ("dense" if bool(is_attn.any()) else "unknown")
    return kind + ("_bwd" if kind != "unknown" and bool(is_bwd.any()) else "")
