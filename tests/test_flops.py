"""The FLOP model against Megatron-LM's num_floating_point_operations, transcribed independently here."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nsysparse.models.config import PRESETS, ModelSpec, from_hf, load_model
from nsysparse.models.flops import Workload, megatron_flops, op_table, step_flops


def megatron_reference(args, batch_size):
    """Megatron-LM megatron/training/training.py transformer_flops() (MHA/GQA and MLA, MoE, MTP, GDN),
    written out from the source for this test. args fields follow Megatron's argument names."""
    num_dense_layers, num_moe_layers, routed, last_is_moe = args.num_layers, 0, 0, 0
    if args.num_experts:
        pattern = [1 if (i >= args.first_dense and (i - args.first_dense) % args.moe_layer_freq == 0) else 0 for i in range(args.num_layers)]
        num_moe_layers = sum(pattern)
        num_dense_layers = args.num_layers - num_moe_layers
        routed = args.moe_router_topk
        last_is_moe = pattern[-1]
    mtp = args.mtp_num_layers
    num_moe_layers += last_is_moe * mtp
    num_dense_layers += (1 - last_is_moe) * mtp
    num_layers = args.num_layers + mtp
    ffn_x = 3 if args.swiglu else 2
    s = args.seq_length
    if args.mla:
        q_term = (
            args.q_lora_rank * (args.hidden_size + args.num_attention_heads * (args.qk_head_dim + args.qk_pos_emb_head_dim) + 1)
            if args.q_lora_rank
            else args.hidden_size * args.num_attention_heads * (args.qk_head_dim + args.qk_pos_emb_head_dim)
        )
        attn = (
            3
            * 2
            * (
                q_term
                + args.kv_lora_rank * (args.hidden_size + args.num_attention_heads * (args.qk_head_dim + args.v_head_dim) + 1)
                + args.hidden_size * args.qk_pos_emb_head_dim
                + args.num_attention_heads * args.v_head_dim * args.hidden_size
                + s * args.num_attention_heads * (args.qk_head_dim + args.qk_pos_emb_head_dim) / 2
                + s * args.num_attention_heads * args.v_head_dim / 2
            )
        )
    else:
        q = args.kv_channels * args.num_attention_heads
        kv = args.kv_channels * args.num_query_groups
        attn = 3 * 2 * (args.hidden_size * (q + 2 * kv) + q * s / 2 * 2 + q * args.hidden_size)
    if args.linear_attention_freq:
        pat = [0 if (i + 1) % args.linear_attention_freq == 0 else 1 for i in range(num_layers)]
        n_lin = sum(pat)
        qk = args.linear_key_head_dim * args.linear_num_key_heads
        v = args.linear_value_head_dim * args.linear_num_value_heads
        nv = args.linear_num_value_heads
        lin = (
            3
            * 2
            * (
                args.hidden_size * (2 * qk + 2 * v + 2 * nv)
                + args.linear_conv_kernel_dim * (2 * qk + v)
                + nv * args.linear_value_head_dim**2 * 4
                + args.hidden_size * v
            )
        )
        self_attn = lin * n_lin + attn * (num_layers - n_lin)
    else:
        self_attn = attn * num_layers
    return (
        batch_size
        * s
        * (
            3
            * 2
            * args.hidden_size
            * (
                args.ffn_hidden_size * ffn_x * num_dense_layers
                + args.moe_ffn_hidden_size * routed * ffn_x * num_moe_layers
                + args.shared * ffn_x * num_moe_layers
            )
            + self_attn
            + 3 * 2 * mtp * (3 * args.hidden_size + 2 * args.hidden_size * args.hidden_size)
            + 3 * 2 * args.hidden_size * args.padded_vocab_size * (mtp + 1)
        )
    )


def megatron_args(spec: ModelSpec, seq: int) -> SimpleNamespace:
    return SimpleNamespace(
        num_layers=spec.num_hidden_layers,
        hidden_size=spec.hidden_size,
        num_attention_heads=spec.num_attention_heads,
        num_query_groups=spec.num_key_value_heads,
        kv_channels=spec.head_dim,
        ffn_hidden_size=spec.intermediate_size,
        swiglu=spec.swiglu,
        num_experts=spec.num_experts,
        moe_router_topk=spec.num_experts_per_tok,
        moe_ffn_hidden_size=spec.moe_intermediate_size,
        shared=spec.shared_expert_intermediate_size,
        first_dense=spec.first_k_dense,
        moe_layer_freq=spec.moe_layer_freq,
        mla=spec.is_mla,
        q_lora_rank=spec.q_lora_rank,
        kv_lora_rank=spec.kv_lora_rank,
        qk_head_dim=spec.qk_nope_head_dim,
        qk_pos_emb_head_dim=spec.qk_rope_head_dim,
        v_head_dim=spec.v_head_dim,
        mtp_num_layers=spec.mtp_layers,
        linear_attention_freq=spec.full_attention_interval,
        linear_key_head_dim=spec.linear_key_head_dim,
        linear_num_key_heads=spec.linear_num_key_heads,
        linear_value_head_dim=spec.linear_value_head_dim,
        linear_num_value_heads=spec.linear_num_value_heads,
        linear_conv_kernel_dim=spec.linear_conv_kernel_dim,
        seq_length=seq,
        padded_vocab_size=spec.vocab_size,
    )


@pytest.mark.parametrize("name", [*PRESETS, "llama-mini", "ds-mini"])
@pytest.mark.parametrize("seq", [512, 4096])
def test_totals_equal_megatron(name, seq):
    spec = load_model(name).spec
    assert megatron_flops(spec, batch=8, seq=seq) == pytest.approx(megatron_reference(megatron_args(spec, seq), 8), rel=1e-12)


def test_dense_closed_form():
    """24·L·B·s·h² + 2·L·B·s²·h + 2·B·s·h·V forward, ×3 for training (GPT: MHA, 4h GELU MLP)."""
    L, B, s, h, V = 24, 4, 2048, 2048, 50304
    gpt = ModelSpec(
        "gpt",
        hidden_size=h,
        num_hidden_layers=L,
        num_attention_heads=16,
        num_key_value_heads=16,
        head_dim=128,
        intermediate_size=4 * h,
        vocab_size=V,
        swiglu=False,
    )
    fwd = 24 * L * B * s * h**2 + 2 * L * B * s**2 * h + 2 * B * s * h * V
    assert step_flops(gpt, Workload("train", batch=B, seq=s)) == pytest.approx(3 * fwd, rel=1e-12)
    assert step_flops(gpt, Workload("prefill", batch=B, seq=s)) == pytest.approx(fwd - 2 * B * s * h * V + 2 * B * h * V, rel=1e-12)
    full = step_flops(gpt, Workload("train", batch=B, seq=s, causal="full"))
    assert full - 3 * fwd == pytest.approx(3 * 2 * L * B * s**2 * h, rel=1e-12)


def test_deepseek_v3_flops_per_token():
    """models.md: ≈ 260 GFLOP per token for fwd+bwd at 4K context."""
    per_token = megatron_flops(PRESETS["deepseek-v3"], batch=1, seq=4096) / 4096
    assert 255e9 < per_token < 265e9


def test_op_table_matches_the_generator_manifest(tmp_path):
    """The workload plan counts the same matmuls (plus the router, which totals leave out)."""
    import json
    from pathlib import Path

    man = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "dense_train_step" / "manifest.json").read_text())
    lm = load_model(str(Path(__file__).resolve().parents[1] / "fixtures" / "dense_train_step" / "manifest.json"))
    r = man["run"]
    assert step_flops(lm.spec, Workload("train", batch=r["batch"], seq=r["seq"])) == pytest.approx(man["flops"]["per_step"], rel=1e-9)


def test_hf_config_parsing():
    ds = from_hf(
        {
            "hidden_size": 7168,
            "num_hidden_layers": 61,
            "num_attention_heads": 128,
            "num_key_value_heads": 128,
            "vocab_size": 129280,
            "intermediate_size": 18432,
            "n_routed_experts": 256,
            "num_experts_per_tok": 8,
            "moe_intermediate_size": 2048,
            "n_shared_experts": 1,
            "first_k_dense_replace": 3,
            "moe_layer_freq": 1,
            "q_lora_rank": 1536,
            "kv_lora_rank": 512,
            "qk_nope_head_dim": 128,
            "qk_rope_head_dim": 64,
            "v_head_dim": 128,
            "num_nextn_predict_layers": 1,
            "hidden_act": "silu",
        },
        "dsv3",
    )
    assert megatron_flops(ds, 2, 1024) == pytest.approx(megatron_flops(PRESETS["deepseek-v3"], 2, 1024))
    assert ds.layer_kinds().count("moe") == 58


def test_decode_op_table_is_per_instance():
    t = op_table(PRESETS["deepseek-v3"], Workload("decode", batch=24, kv_len=4096))
    moe = t[(t["layer_kind"] == "moe")].set_index("op")
    assert moe.loc["o_proj", "count_per_forward"] == 58
    assert moe.loc["o_proj", "flops"] == pytest.approx(2 * 24 * 128 * 128 * 7168)
    assert moe.loc["fmha", "bytes"] > 24 * 4096 * 576 * 2  # reads the latent cache
