"""The FLOP model against Megatron-LM's num_floating_point_operations, transcribed independently here."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from nsysparse.models.config import PRESETS, ModelSpec, from_hf, from_workload, load_model
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


@pytest.mark.parametrize("name", list(PRESETS))
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


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MANIFESTS = sorted(p.parent.name for p in FIXTURES.glob("*/manifest.json"))


def manifest_workload(run: dict) -> Workload:
    return Workload(run["phase"], batch=run["batch"], seq=run["seq"], kv_len=run["kv_len"])


def stored_minus_megatron(model: dict, run: dict) -> float:
    """What the committed manifests' FLOPs (written by the generator's own formula, before it used
    models.flops) counted beyond Megatron's convention, from the manifest's raw model block: the MoE
    router GEMM (2·t·h·experts per MoE layer, MTP's included), which Megatron leaves out, minus the
    norm terms Megatron counts (its MLA "+1" terms, 2·t·q_lora_rank and 2·t·kv_lora_rank per layer,
    and the MTP module's 3h: two input norms and a final norm), which that formula left out."""
    if model["kind"] != "moe":
        return 0.0
    t = run["batch"] if run["phase"] == "decode" else run["batch"] * run["seq"]
    h, mtp = model["hidden"], model["mtp_layers"] if run["phase"] != "train" else 0
    moe_layers = model["layers"] - model["first_dense"] + mtp  # the MTP block is an MoE block here
    layers = model["layers"] + mtp
    router = moe_layers * 2 * t * h * model["experts"]
    norms = layers * 2 * t * (model["q_lora_rank"] + model["kv_lora_rank"]) + mtp * 2 * t * 3 * h
    return float(router - norms)


@pytest.mark.parametrize("name", MANIFESTS)
def test_fixture_manifest_flops_against_the_flop_model(name):
    """Every committed manifest's flops.per_step against models.flops for its model and run. The dense
    fixtures agree exactly. The MoE fixtures' stored numbers come from the generator's former formula,
    which counted the router GEMM and not the MLA/MTP norms; they differ from models.flops by exactly
    that, and models.flops is the one that follows Megatron (test_moe_fixture_follows_megatron)."""
    path = FIXTURES / name / "manifest.json"
    man = json.loads(path.read_text())
    lm = load_model(str(path))
    w = manifest_workload(man["run"])
    ours = step_flops(lm.spec, w)
    stored = man["flops"]["per_step"]
    mult = 3 if w.phase == "train" else 1
    assert stored == lm.flops_per_step
    assert stored - ours == pytest.approx(mult * stored_minus_megatron(man["model"], man["run"]), rel=1e-12, abs=0)
    if man["model"]["kind"] == "dense":
        assert ours == stored
    # op by op: every matmul the manifest lists has the FLOPs models.flops gives it
    table = op_table(lm.spec, w)
    by_op = {(k, o): n * f for k, o, n, f in zip(table["layer_kind"], table["op"], table["count_per_forward"], table["flops"])}
    for row in man["flops"]["forward_by_op"]:
        assert by_op[(row["layer_kind"], row["op"])] == pytest.approx(row["flops"], rel=1e-12), row


def test_moe_fixture_follows_megatron():
    """Megatron's formula is for training (every token through the LM head, × 3). A prefill forward of
    the same model and sequence differs from a third of it only in the LM heads (main and MTP), which
    project the last token of each sequence: models.flops matches that on moe_prefill_layer, and the
    manifest's stored number (router in, norms out) does not."""
    path = FIXTURES / "moe_prefill_layer" / "manifest.json"
    man = json.loads(path.read_text())
    spec, r = load_model(str(path)).spec, man["run"]
    b, s, h, v = r["batch"], r["seq"], spec.hidden_size, spec.vocab_size
    heads = (spec.mtp_layers + 1) * 2 * h * v * (b * s - b)
    expected = megatron_reference(megatron_args(spec, s), b) / 3 - heads
    assert step_flops(spec, manifest_workload(r)) == pytest.approx(expected, rel=1e-12)
    assert man["flops"]["per_step"] != pytest.approx(expected, rel=1e-6)


def test_new_manifest_flops_are_the_flop_model():
    """A manifest the generator writes now (no torch needed for it) for each fixture's model and run
    stores models.flops's numbers, and its model block reads back as the same ModelSpec."""
    from nsysparse.workload.config import run_from
    from nsysparse.workload.run import build_manifest

    for name in MANIFESTS:
        old = json.loads((FIXTURES / name / "manifest.json").read_text())
        spec, run = run_from(old)
        new = json.loads(json.dumps(build_manifest(spec, run, old["environment"], old["grouped_gemm"])))
        new["preset"] = old["preset"]
        back = from_workload(new["model"], new["preset"])
        assert back == spec == load_model(old["preset"]).spec
        w = manifest_workload(new["run"])
        assert new["flops"]["per_step"] == step_flops(spec, w)
        assert new["flops"]["per_step_full_attention"] == step_flops(spec, Workload(w.phase, batch=w.batch, seq=w.seq, kv_len=w.kv_len, causal="full"))
        assert new["flops"]["forward_per_step"] * (3 if w.phase == "train" else 1) == new["flops"]["per_step"]


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
