"""Op names inside a decoder layer found by repetition, from the roles its kernels play (no template needed).

A transformer layer runs, in order: the attention norm, the attention projections, rotary embedding, the
attention core, the output projection, the MLP norm, then a dense MLP (gate/up projections, activation, down
projection) or a MoE block (router GEMM, softmax/top-k, experts). With the attention kernel as the anchor, the
matrix multiplies before it are the projections (one: fused QKV; three: Q, K, V), the first after it is the output
projection, and the rest are the MLP's (the last one is down) or, after a router top-k, the experts'. The kernels
between them take the name of the role they sit in. A layer without an attention kernel gets no names.
"""

from __future__ import annotations

import itertools

GEMM_CLASSES = ("gemm", "splitk", "grouped_gemm")
"""Kernel classes that are a layer's matrix multiplies."""
ATTENTION_CORE = ("fmha",)
"""Kernel classes of the attention core, the anchor of a layer's roles (forward layers only: a backward layer runs
its roles in reverse and keeps its class names)."""
ROUTER_CLASSES = ("topk", "moe_route")
"""Kernel classes of a MoE router's selection."""
PROJECTIONS = {1: ("qkv_proj",), 3: ("q_proj", "k_proj", "v_proj")}
"""Names of the matrix multiplies before attention, by how many there are."""


def layer_roles(classes: list[str]) -> list[str]:
    """One op name per kernel of one layer (classes in launch order); "" where no role is known."""
    n = len(classes)
    ops = [""] * n
    attn = [i for i, c in enumerate(classes) if c in ATTENTION_CORE]
    gemm = [i for i, c in enumerate(classes) if c in GEMM_CLASSES]
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
    for x, y in itertools.pairwise(pre):
        if any(classes[i] == "reduce" for i in range(x + 1, y)):
            fill(ops, x + 1, y, "qk_norm")  # per-head norms between the projections (Qwen3)
    if pre[-1] + 1 < a0:
        fill(ops, pre[-1] + 1, a0, "rope")
    fill(ops, a0, a1 + 1, "fmha")
    o = post[0]
    ops[o] = "o_proj"
    rest = post[1:]
    router = [i for i, c in enumerate(classes) if c in ROUTER_CLASSES and i > o]
    if router and rest and rest[0] < router[0]:
        gate = rest[0]
        fill(ops, o + 1, gate, "ffn_norm")
        fill(ops, gate, (rest[1] if len(rest) > 1 else n), "gate_topk")
        if len(rest) > 1:
            fill(ops, rest[1], n, "experts")
        return ops
    if not rest:
        return ops
    fill(ops, o + 1, rest[0], "ffn_norm")
    down = rest[-1]
    for g in rest[:-1]:
        ops[g] = "mlp_up"
    if len(rest) > 1 and rest[-2] + 1 < down:
        fill(ops, rest[-2] + 1, down, "mlp_act")
    fill(ops, down, n, "mlp_down")  # the down projection with its residual add
    return ops


def fill(ops: list[str], a: int, b: int, name: str) -> None:
    """Name positions [a, b) that have no name yet."""
    for i in range(a, b):  # one layer's kernels (tens), named once per distinct layer sequence
        if not ops[i]:
            ops[i] = name


def step_roles(classes: list[str], in_layer: list[bool]) -> list[str]:
    """Names of a forward's kernels outside its layers: the embedding lookup before the first layer, the final norm
    between the last layer and the LM head, the LM head (the last matrix multiply after the last layer)."""
    n = len(classes)
    ops = [""] * n
    layered = [i for i, x in enumerate(in_layer) if x]
    if not layered:
        return ops
    first, last = layered[0], layered[-1]
    for i in range(first):  # the prelude's kernels
        if classes[i] in ("gather", "embedding"):
            ops[i] = "embed"
    head = [i for i in range(last + 1, n) if classes[i] in GEMM_CLASSES]
    if head:
        ops[head[-1]] = "lm_head"
        fill(ops, last + 1, head[-1], "final_norm")
    return ops
