"""Op names inside a decoder layer found by repetition, from the roles its kernels play (no template needed).

A transformer layer runs, in order: the attention norm, the attention projections, rotary embedding, the
KV-cache write, the attention core, the output projection and its residual add, the MLP norm, then a dense MLP
(gate/up projections, activation, down projection and its residual add) or a MoE block (router GEMM,
softmax/top-k, experts). With the attention kernel as the anchor, the matrix multiplies before it are the
projections (one: fused QKV; three: Q, K, V), the first after it is the output projection, and the rest are the
MLP's (the last one is down) or, after a router top-k, the experts'. The kernels between them take the name of the
role they sit in; two spans are split further: the copies just before attention are the KV-cache write, and the
MLP norm is told from the residual add before it by having the attention norm's kernels (the op names follow
rules/vocabulary.toml: o_proj and mlp_down include their residual adds). A layer without an attention kernel gets
no names.
"""

from __future__ import annotations

import difflib
import itertools

from nsysparse.structure.classes import LAYER_GEMM_CLASSES

ATTENTION_CORE = ("fmha",)
"""Kernel classes of the attention core, the anchor of a forward layer's roles (a backward layer runs in reverse:
train_roles names it from the forward)."""
ROUTER_CLASSES = ("topk", "moe_route")
"""Kernel classes of a MoE router's selection."""
PROJECTIONS = {1: ("qkv_proj",), 3: ("q_proj", "k_proj", "v_proj")}
"""Names of the matrix multiplies before attention, by how many there are."""


def layer_roles(classes: list[str]) -> list[str]:
    """One op name per kernel of one layer (classes in launch order); "" where no role is known."""
    n = len(classes)
    ops = [""] * n
    attn = [i for i, c in enumerate(classes) if c in ATTENTION_CORE]
    gemm = [i for i, c in enumerate(classes) if c in LAYER_GEMM_CLASSES]
    if not attn or any(c == "fmha_bwd" for c in classes):
        return ops
    a0, a1 = attn[0], attn[-1]
    pre = [g for g in gemm if g < a0]
    post = [g for g in gemm if g > a1]
    names = PROJECTIONS.get(len(pre))
    if names is None or not post:
        return ops
    fill(ops, 0, pre[0], "attn_norm")
    for g, name in zip(pre, names):
        ops[g] = name
    for i in range(pre[0], a0):  # fused kernels that say what they are (TorchInductor's rotary and cache fusions)
        if classes[i] in NAMED_CLASSES:
            ops[i] = classes[i]
    for x, y in itertools.pairwise(pre):
        if any(classes[i] == "reduce" for i in range(x + 1, y)):
            fill(ops, x + 1, y, "qk_norm")  # per-head norms between the projections (Qwen3)
    writes = [i for i in range(pre[-1] + 1, a0) if classes[i] == "kv_cache"]
    if writes:  # dedicated cache writes (index_copy_ into a static cache, reshape_and_cache): the positions they
        # write at (an arange fill and its adds) start the KV write, the attention function's own preparation
        # after them (repeat_kv copies, the mask) belongs to the attention core
        fills = [i for i in range(pre[-1] + 1, writes[0]) if classes[i] == "fill"]
        kv, end = (fills[0] if fills else writes[0]), writes[-1] + 1
        fill(ops, end, a0, "fmha")
    else:
        kv, end = _kv_cache_start(classes, pre[-1] + 1, a0), a0
    fill(ops, pre[-1] + 1, kv, "rope")
    fill(ops, kv, end, "kv_cache")
    fill(ops, a0, post[0], "fmha")  # the core and its output's layout copies
    o = post[0]
    ops[o] = "o_proj"
    rest = post[1:]
    if not rest:
        fill(ops, o + 1, n, "o_proj")  # a layer without an MLP: the residual add
        return ops
    norm = _norm_start(classes, o + 1, rest[0], classes[: pre[0]])
    fill(ops, o + 1, norm, "o_proj")  # the residual add after the output projection
    fill(ops, norm, rest[0], "ffn_norm")
    router = [i for i, c in enumerate(classes) if c in ROUTER_CLASSES and i > o]
    if router and rest[0] < router[0]:
        limit = rest[1] if len(rest) > 1 else n
        end = max(i for i in router if i < limit) + 1
        while end < limit and classes[end] in ROUTER_TAIL:
            end += 1  # the top-k weights' normalisation and cast
        fill(ops, rest[0], end, "gate_topk")
        fill(ops, end, n, "experts")  # dispatch, expert GEMMs, combine and the residual add
        return ops
    down = rest[-1]
    for g in rest[:-1]:
        ops[g] = "mlp_up"
    fill(ops, rest[0] + 1, down, "mlp_act")  # between and after the gate/up projections: activation and product
    fill(ops, down, n, "mlp_down")  # the down projection with its residual add
    return ops


NAMED_CLASSES = ("rope", "kv_cache")
"""Kernel classes that are their op wherever they sit between the projections and the attention core."""
ROUTER_TAIL = ("reduce", "ew", "cast", "softmax")
"""Kernel classes that may follow a router's top-k inside the router (renormalising the weights, casting them)."""
KV_WRITE_CLASSES = ("copy", "kv_cache")
"""Kernel classes of a KV-cache write: the run of them just before the attention core (torch.cat or index_copy_
into the cache, reshape_and_cache)."""


def _kv_cache_start(classes: list[str], a: int, b: int) -> int:
    """Start of the KV-cache write in [a, b): the trailing run of KV_WRITE_CLASSES before the attention core at b.
    A run that fills the whole span is the cache write only if one of them is a dedicated cache kernel (the rotary
    embedding's own copies are never the last kernels before attention unless nothing else is there)."""
    i = b
    while i > a and classes[i - 1] in KV_WRITE_CLASSES:
        i -= 1
    if i == a and "kv_cache" not in classes[a:b]:
        return b
    return i


def _norm_start(classes: list[str], a: int, b: int, attn_norm: list[str]) -> int:
    """Start of the MLP norm in [a, b): the layer's attention norm has the same kernels as the MLP norm, so the MLP
    norm is the last len(attn_norm) kernels before b when their classes are the attention norm's; what precedes it
    after the output projection is the projection's residual add. Without that match the whole span is the norm."""
    k = len(attn_norm)
    if 0 < k <= b - a and classes[b - k : b] == attn_norm:
        return b - k
    return a


def fill(ops: list[str], a: int, b: int, name: str) -> None:
    """Name positions [a, b) that have no name yet."""
    for i in range(a, b):  # one layer's kernels (tens), named once per distinct layer sequence
        if not ops[i]:
            ops[i] = name


def step_roles(classes: list[str], in_layer: list[bool]) -> list[str]:
    """Names of a forward's kernels outside its layers: the embedding lookup before the first layer, the rotary
    table computed before the first layer (from the matrix multiply before its cos/sin kernels, class rope), the
    final norm between the last layer and the LM head, the LM head (the last matrix multiply after the last layer)."""
    n = len(classes)
    ops = [""] * n
    layered = [i for i, x in enumerate(in_layer) if x]
    if not layered:
        return ops
    first, last = layered[0], layered[-1]
    for i in range(first):  # the prelude's kernels
        if classes[i] in ("gather", "embedding"):
            ops[i] = "embed"
    trig = [i for i in range(first) if classes[i] == "rope"]
    if trig:  # the rotary table (positions x inverse frequencies, then cos and sin) runs up to the first layer
        g = max([i for i in range(trig[0]) if classes[i] in LAYER_GEMM_CLASSES], default=trig[0])
        while g > 0 and classes[g - 1] in ("copy", "cast"):
            g -= 1  # the positions and frequencies made float for the product
        fill(ops, g, first, "rope")
    head = [i for i in range(last + 1, n) if classes[i] in LAYER_GEMM_CLASSES]
    if head:
        ops[head[-1]] = "lm_head"
        fill(ops, last + 1, head[-1], "final_norm")
    return ops


NORM_OPS = ("attn_norm", "ffn_norm", "final_norm", "qk_norm")
"""Ops whose backward is a norm backward (a span of element-wise kernels with a reduction)."""
NO_GRAD_OPS = ("rope", "embed")
"""Forward matrix multiplies with no backward (the rotary table's positions x frequencies)."""


def train_roles(classes: list[str], names: list[str]) -> list[str]:
    """Names of a training step's loss, backward and optimizer kernels, from its named forward (`names`: the forward
    kernels' op names, "" elsewhere). The forward ends at the first loss kernel; what follows the LM head up to it is
    `loss`. Autograd runs the forward's matrix multiplies in reverse, each as two (input and weight gradients), so
    backward matrix multiply j is the op of forward one len - 1 - j // 2 when the counts agree (else the backward
    keeps its class names). The kernels between two of them belong to the forward ops between: attention-backward
    kernels to fmha, a span with a reduction to the norm there, the rest to the most frequent other op there (the
    rope, the activation) or, when there is none, to the matrix multiply before them. Before the first backward matrix multiply: the loss's backward; after the last: the
    first layer's norm and the embedding's backward, then the optimizer (whatever follows the embedding backward,
    or from its first optimizer-class kernel when no embedding backward is seen)."""
    n = len(classes)
    out = [""] * n
    loss = [i for i, c in enumerate(classes) if c == "loss"]
    if not loss:
        return out
    fend = loss[0] + 1
    head = [i for i in range(fend) if names[i] == "lm_head"]
    if head:
        fill(out, head[-1] + 1, fend, "loss")
    mm = ("gemm", "grouped_gemm")  # a split-K reduction belongs to the matrix multiply before it
    fwd = [i for i in range(fend) if classes[i] in mm and names[i] and names[i] not in NO_GRAD_OPS]
    bwd = [i for i in range(fend, n) if classes[i] in mm]
    if not fwd or len(bwd) != 2 * len(fwd):
        return out
    for j, g in enumerate(bwd):
        out[g] = names[fwd[len(fwd) - 1 - j // 2]]
        while g + 1 < n and classes[g + 1] == "splitk":
            g += 1
            out[g] = out[g - 1]
    fill(out, fend, bwd[0], "loss")
    for p in range(len(fwd) - 1, 0, -1):  # the span after the backward of forward GEMM p, before that of p - 1
        a, b = bwd[2 * (len(fwd) - 1 - p) + 1] + 1, bwd[2 * (len(fwd) - p)]
        between = [names[i] for i in range(fwd[p - 1] + 1, fwd[p]) if names[i]]
        first_of_group = names[fwd[p - 1]] != names[fwd[p]]
        _name_span(out, classes, a, b, between, names[fwd[p]], first_of_group)
    tail = bwd[-1] + 1
    opt = [i for i in range(tail, n) if classes[i] == "optimizer"]
    emb = [i for i in range(tail, opt[0] if opt else n) if classes[i] in ("embedding", "gather")]
    stop = emb[0] + 1 if emb else (opt[0] if opt else n)  # the optimizer follows the embedding's backward
    between = [names[i] for i in range(fwd[0]) if names[i]]
    _name_span(out, classes, tail, stop, between, names[fwd[0]], True)
    if emb:
        out[emb[0]] = "embed"
    if emb or opt:
        fill(out, stop, n, "optimizer")
    return out


SHARED_INPUT_OPS = ("q_proj", "qkv_proj", "mlp_up")
"""Projections whose input feeds other projections too: after the backward of the first of them (the last in
backward order), an element-wise kernel sums the input gradients of the group, and belongs to it."""


def _name_span(out: list[str], classes: list[str], a: int, b: int, between: list[str], before: str, first_of_group: bool) -> None:
    """Name backward kernels [a, b) from the forward ops between their two matrix multiplies (see train_roles);
    `first_of_group`: the matrix multiply before the span is the first in forward order of its op's group."""
    if before in SHARED_INPUT_OPS and first_of_group and a < b and classes[a] == "ew":
        out[a] = before
    norms = [x for x in between if x in NORM_OPS]
    rest = [x for x in between if x not in NORM_OPS and x != "fmha"]
    other = max(dict.fromkeys(rest), key=rest.count) if rest else before
    for i in range(a, b):
        c = classes[i]
        if c == "fmha_bwd":
            out[i] = "fmha"
        elif c in ("embedding", "gather") and "embed" in between:
            out[i] = "embed"
    if norms and any(classes[i] in ("reduce", "norm_bwd") for i in range(a, b)):
        fill(out, a, b, max(dict.fromkeys(norms), key=norms.count))
    fill(out, a, b, other)


def aligned_roles(ref_classes: list[str], ref_names: list[str], classes: list[str]) -> list[str]:
    """Names for a layer that is no exact copy, from a named layer: kernels in the blocks the two sequences (of
    alignment keys: classes, or finer) share take the reference's names. Kernels only this layer has, among its projections (before the attention
    core), are the rotary table: the first layer computes it where compiled code first uses it. Other extra
    kernels get no name."""
    out = [""] * len(classes)
    for block in difflib.SequenceMatcher(None, ref_classes, classes, autojunk=False).get_matching_blocks():
        for o in range(block.size):
            out[block.b + o] = ref_names[block.a + o]
    projections = [i for i, x in enumerate(out) if x in PROJECTIONS[1] + PROJECTIONS[3]]
    core = [i for i, x in enumerate(out) if x == "fmha"]
    if projections and core and "rope" in out:
        fill(out, projections[0], core[0], "rope")
    return out
