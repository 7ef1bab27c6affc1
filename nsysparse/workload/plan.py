"""What a run does, without torch: the op sequence per layer kind, the NVTX names, and analytic FLOPs.

FLOPs come from the one FLOP model, `nsysparse.models.flops` (Megatron-LM's convention: 2 FLOPs per
multiply-add, causal attention pairs halved with the full count recorded too, training = 3 × forward,
the MoE router GEMM listed per op but left out of totals), applied to the model as it runs: MTP modules
are built for inference only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from nsysparse.models.config import ModelSpec
from nsysparse.models.flops import Workload, forward_flops, op_table, step_flops
from nsysparse.workload.config import RunConfig, Structure


def attention_ops(model: ModelSpec, phase: str) -> list[str]:
    if not model.is_mla:
        ops = ["attn_norm", "q_proj", "k_proj", "v_proj", "rope"]
        ops += ["kv_cache"] if phase != "train" else []
        return ops + ["fmha", "o_proj"]
    ops = ["attn_norm", "q_a_kv_a", "q_a_norm", "kv_a_norm", "q_proj_b"]
    if phase == "decode":
        return ops + ["bmm_uk", "rope", "kv_cache", "fmha", "bmm_uv", "o_proj"]
    return ops + ["kv_proj_b", "rope"] + (["kv_cache"] if phase == "prefill" else []) + ["fmha", "o_proj"]


def mlp_ops(model: ModelSpec, kind: str) -> list[str]:
    if kind == "dense":
        return ["ffn_norm", "mlp_up", "mlp_act", "mlp_down"]
    ops = ["ffn_norm", "gate_topk"]
    if model.shared_expert_intermediate_size:
        ops += ["shared_up", "shared_act", "shared_down"]
    return ops + ["dispatch", "moe_up", "moe_act", "moe_down", "combine"]


def layer_ops(model: ModelSpec, phase: str, kind: str) -> list[str]:
    if kind == "mtp":
        inner = model.layer_kinds()[-1]
        return ["mtp_norm", "mtp_proj", *attention_ops(model, phase), *mlp_ops(model, inner), "final_norm", "lm_head", "sample"]
    return [*attention_ops(model, phase), *mlp_ops(model, kind)]


def mtp_layers_run(model: ModelSpec, run: RunConfig) -> int:
    """MTP modules the generator builds: inference only (training runs the trunk and its loss)."""
    return model.mtp_layers if run.phase != "train" else 0


def structure(model: ModelSpec, run: RunConfig) -> Structure:
    kinds = model.layer_kinds()
    names = [f"layer_{i}_{k}" for i, k in enumerate(kinds)]
    mtp = mtp_layers_run(model, run)
    names += [f"layer_{len(kinds) + j}_mtp" for j in range(mtp)]
    per_kind = dict(Counter(kinds))
    if mtp:
        per_kind["mtp"] = mtp
    seq = {k: layer_ops(model, run.phase, k) for k in per_kind}
    other = ["embed", "final_norm", "lm_head"] + (["loss", "backward", "optimizer"] if run.phase == "train" else ["sample"])
    step = "train_step_{i}" if run.phase == "train" else "forward_{i}"
    return Structure(step_name=step, steps=run.steps, layer_names=names, layer_kinds_per_step=per_kind, op_sequence=seq, other_ops=other)


def workload(run: RunConfig, causal: str = "half") -> Workload:
    return Workload(run.phase, batch=run.batch, seq=run.seq, kv_len=run.kv_len, causal=causal)


def flops_summary(model: ModelSpec, run: RunConfig) -> dict[str, Any]:
    ran = replace(model, mtp_layers=mtp_layers_run(model, run))
    w = workload(run)
    table = op_table(ran, w)
    table = table[table["flops"] > 0]
    by_op: dict[tuple[str, str, bool], float] = {}
    for kind, op, n, f, meg in zip(table["layer_kind"], table["op"], table["count_per_forward"], table["flops"], table["in_megatron"]):
        key = (str(kind), str(op), bool(meg))
        by_op[key] = by_op.get(key, 0.0) + float(n * f)
    return {
        "convention": (
            "nsysparse.models.flops (Megatron-LM's num_floating_point_operations): 2 FLOPs per multiply-add;"
            " causal attention pairs halved (full count also given); MoE router GEMM listed per op, not in totals; training = 3 x forward"
        ),
        "forward_per_step": forward_flops(ran, w),
        "per_step": step_flops(ran, w),
        "per_step_full_attention": step_flops(ran, workload(run, "full")),
        "forward_by_op": [{"layer_kind": k, "op": o, "flops": v, "in_totals": meg} for (k, o, meg), v in sorted(by_op.items())],
    }
