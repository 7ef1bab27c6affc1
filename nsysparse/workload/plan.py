"""What a run does, without torch: the op sequence per layer kind, the NVTX names, and analytic FLOPs.

FLOPs are counted from the model's own matmul shapes (2 FLOPs per multiply-add). Attention counts QK^T
and PV; for causal prefill/training the pair count is halved (Megatron's convention since 2025-03),
with the full count recorded too. Training = forward × 3 (backward = 2 × forward). Element-wise work
(norms, activations, softmax) is not counted, as in Megatron.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from nsysparse.workload.config import ModelConfig, RunConfig, Structure


def attention_ops(model: ModelConfig, phase: str) -> list[str]:
    if model.kind == "dense":
        ops = ["attn_norm", "q_proj", "k_proj", "v_proj", "rope"]
        ops += ["kv_cache"] if phase != "train" else []
        return ops + ["fmha", "o_proj"]
    ops = ["attn_norm", "q_a_kv_a", "q_a_norm", "kv_a_norm", "q_proj_b"]
    if phase == "decode":
        return ops + ["bmm_uk", "rope", "kv_cache", "fmha", "bmm_uv", "o_proj"]
    return ops + ["kv_proj_b", "rope"] + (["kv_cache"] if phase == "prefill" else []) + ["fmha", "o_proj"]


def mlp_ops(model: ModelConfig, kind: str) -> list[str]:
    if kind == "dense":
        return ["ffn_norm", "mlp_up", "mlp_act", "mlp_down"]
    ops = ["ffn_norm", "gate_topk"]
    if model.shared_experts:
        ops += ["shared_up", "shared_act", "shared_down"]
    return ops + ["dispatch", "moe_up", "moe_act", "moe_down", "combine"]


def layer_ops(model: ModelConfig, phase: str, kind: str) -> list[str]:
    if kind == "mtp":
        inner = model.layer_kinds()[-1]
        return ["mtp_norm", "mtp_proj", *attention_ops(model, phase), *mlp_ops(model, inner), "final_norm", "lm_head", "sample"]
    return [*attention_ops(model, phase), *mlp_ops(model, kind)]


def structure(model: ModelConfig, run: RunConfig) -> Structure:
    kinds = model.layer_kinds()
    names = [f"layer_{i}_{k}" for i, k in enumerate(kinds)]
    mtp = model.mtp_layers if run.phase != "train" else 0
    names += [f"layer_{len(kinds) + j}_mtp" for j in range(mtp)]
    per_kind = dict(Counter(kinds))
    if mtp:
        per_kind["mtp"] = mtp
    seq = {k: layer_ops(model, run.phase, k) for k in per_kind}
    other = ["embed", "final_norm", "lm_head"] + (["loss", "backward", "optimizer"] if run.phase == "train" else ["sample"])
    step = "train_step_{i}" if run.phase == "train" else "forward_{i}"
    return Structure(step_name=step, steps=run.steps, layer_names=names, layer_kinds_per_step=per_kind, op_sequence=seq, other_ops=other)


def _pairs(model: ModelConfig, run: RunConfig, causal_half: bool) -> float:
    """Query-key pairs per sequence batch that attention touches."""
    if run.phase == "decode":
        return float(run.batch * run.kv_len)
    s = run.seq
    return run.batch * (s * s / 2 if causal_half else s * s)


def forward_flops_by_op(model: ModelConfig, run: RunConfig, causal_half: bool = True) -> dict[tuple[str, str], float]:
    """Forward FLOPs per (layer_kind, op) for one step (all layers of that kind summed)."""
    t = run.tokens_per_step
    h, m = model.hidden, model
    pairs = _pairs(model, run, causal_half)
    out: Counter[tuple[str, str]] = Counter()

    def attn(kind: str, n: int) -> None:
        if m.kind == "dense":
            qd, kvd = m.heads * m.head_dim, m.kv_heads * m.head_dim
            out[(kind, "q_proj")] += n * 2 * t * h * qd
            out[(kind, "k_proj")] += n * 2 * t * h * kvd
            out[(kind, "v_proj")] += n * 2 * t * h * kvd
            out[(kind, "fmha")] += n * 2 * 2 * m.heads * m.head_dim * pairs
            out[(kind, "o_proj")] += n * 2 * t * qd * h
            return
        nh, rope, nope, lora = m.heads, m.qk_rope_dim, m.qk_nope_dim, m.kv_lora_rank
        out[(kind, "q_a_kv_a")] += n * 2 * t * h * (m.q_lora_rank + lora + rope)
        out[(kind, "q_proj_b")] += n * 2 * t * m.q_lora_rank * nh * (nope + rope)
        if run.phase == "decode":  # absorbed MLA: attention in the latent space
            out[(kind, "bmm_uk")] += n * 2 * t * nh * nope * lora
            out[(kind, "fmha")] += n * 2 * nh * ((lora + rope) + lora) * pairs
            out[(kind, "bmm_uv")] += n * 2 * t * nh * lora * m.v_head_dim
        else:
            out[(kind, "kv_proj_b")] += n * 2 * t * lora * nh * (nope + m.v_head_dim)
            out[(kind, "fmha")] += n * 2 * nh * ((nope + rope) + m.v_head_dim) * pairs
        out[(kind, "o_proj")] += n * 2 * t * nh * m.v_head_dim * h

    def mlp(kind: str, inner: str, n: int) -> None:
        if inner == "dense":
            out[(kind, "mlp_up")] += n * 2 * t * h * 2 * m.ffn
            out[(kind, "mlp_down")] += n * 2 * t * m.ffn * h
            return
        out[(kind, "gate_topk")] += n * 2 * t * h * m.experts
        fs = m.moe_ffn * m.shared_experts
        if fs:
            out[(kind, "shared_up")] += n * 2 * t * h * 2 * fs
            out[(kind, "shared_down")] += n * 2 * t * fs * h
        out[(kind, "moe_up")] += n * 2 * t * m.top_k * h * 2 * m.moe_ffn
        out[(kind, "moe_down")] += n * 2 * t * m.top_k * m.moe_ffn * h

    counts = Counter(model.layer_kinds())
    for kind, n in counts.items():
        attn(kind, n)
        mlp(kind, kind, n)
    head_tokens = t if run.phase == "train" else run.batch
    out[("other", "lm_head")] += 2 * head_tokens * h * m.vocab
    mtp = model.mtp_layers if run.phase != "train" else 0
    if mtp:
        attn("mtp", mtp)
        mlp("mtp", model.layer_kinds()[-1], mtp)
        out[("mtp", "mtp_proj")] += mtp * 2 * t * 2 * h * h
        out[("mtp", "lm_head")] += mtp * 2 * run.batch * h * m.vocab
    return dict(out)


def flops_summary(model: ModelConfig, run: RunConfig) -> dict[str, Any]:
    half = forward_flops_by_op(model, run, causal_half=True)
    full = forward_flops_by_op(model, run, causal_half=False)
    mult = 3 if run.phase == "train" else 1
    return {
        "convention": "2 FLOPs per multiply-add; matmuls only; causal attention pairs halved (full count also given); training = 3 x forward",
        "forward_per_step": sum(half.values()),
        "per_step": mult * sum(half.values()),
        "per_step_full_attention": mult * sum(full.values()),
        "forward_by_op": [{"layer_kind": k, "op": o, "flops": v} for (k, o), v in sorted(half.items())],
    }
