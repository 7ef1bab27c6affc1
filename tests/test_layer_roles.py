"""Roles inside layers found by repetition, on sequences built with their true op per kernel (the expected names
come from the construction, not from nsysparse)."""

from __future__ import annotations

import pytest

from nsysparse.analyses.context import AnalysisContext
from nsysparse.structure.inductor import inductor_names
from nsysparse.structure.layer_roles import layer_roles, train_roles

GEMM = "nvjet_sm90_tst_8x64_64x16_4x1_v_bz_TNN"
FMHA = "cudnn_generated_fort_native_sdpa_sm80_flash_fprop_wmma_f16_knob_3_64x64x64_4x1x1_kernel0_0"
ROTARY_TABLE = [("triton_poi_fused__to_copy_expand_unsqueeze_1", "rope"), ("triton_poi_fused__to_copy_unsqueeze_2", "rope"), ("gemmk1_kernel", "rope")]


def compiled_llama_layer(i: int, first: bool) -> list[tuple[str, str]]:
    """A TorchInductor decode layer (separate q/k/v, the rope fused between k and v): (kernel name, true op)."""
    ks = [(f"triton_per_fused__to_copy_add_mean_mul_pow_rsqrt_{10 + 2 * i}", "attn_norm"), (GEMM, "q_proj")]
    ks += ROTARY_TABLE if first else []
    ks += [(GEMM, "k_proj"), (f"triton_poi_fused_cat_cos_mul_sin_{30 + i}", "rope"), (GEMM, "v_proj"), (FMHA, "fmha"), (GEMM, "o_proj")]
    ks += [(f"triton_per_fused__to_copy_add_mean_mul_pow_rsqrt_{11 + 2 * i}", "ffn_norm"), (GEMM, "mlp_up"), (GEMM, "mlp_up")]
    return ks + [("triton_poi_fused_mul_silu_9", "mlp_act"), (GEMM, "mlp_down")]


def compiled_fused_layer(i: int, first: bool) -> list[tuple[str, str]]:
    """The same with a fused QKV and a fused gate/up projection."""
    ks = [(f"triton_per_fused__to_copy_add_mean_mul_pow_rsqrt_{10 + 2 * i}", "attn_norm"), (GEMM, "qkv_proj")]
    ks += ROTARY_TABLE if first else []
    ks += [(f"triton_poi_fused_cat_cos_mul_sin_{30 + i}", "rope"), (FMHA, "fmha"), (GEMM, "o_proj")]
    ks += [(f"triton_per_fused__to_copy_add_mean_mul_pow_rsqrt_{11 + 2 * i}", "ffn_norm"), (GEMM, "mlp_up")]
    return ks + [("triton_poi_fused_mul_silu_9", "mlp_act"), (GEMM, "mlp_down")]


def build_steps(builder, path, layer, rotary_in_first: bool):
    """12 decode steps of 4 layers, the final norm and the LM head, separated by host gaps."""
    step = [k for i in range(4) for k in layer(i, rotary_in_first and i == 0)]
    step += [("triton_per_fused__to_copy_add_mean_mul_pow_rsqrt_99", "final_norm"), ("nvjet_sm90_tst_64x8_64x16_2x1_v_bz_TNT", "lm_head")]
    b = builder()
    b.gpu()
    t = 1_000_000
    for _ in range(12):
        for name, _op in step:
            b.kernel(t, t + 2_000, name)
            t += 2_500
        t += 400_000
    return b.write(path), step


@pytest.mark.parametrize(
    "layer, rotary",
    [(compiled_llama_layer, True), (compiled_fused_layer, True), (compiled_fused_layer, False)],
    ids=["qkv-separate", "fused", "fused-no-table"],
)
def test_compiled_layers_start_at_their_attention_norm(builder, tmp_path, layer, rotary):
    """Compiled layers repeat by class from any rotation; the layer must start at the attention norm (not the MLP
    norm, whichever rotation recurs as often), so every step has 4 layers and every kernel its true op."""
    path, step = build_steps(builder, tmp_path / "t.sqlite", layer, rotary)
    with AnalysisContext.open(path) as ctx:
        k = ctx.mapping.kernels.sort_values("start_ns")
    steps = sorted(set(k["step"]) - {-1})
    assert len(steps) >= 10
    for s in steps[2:6]:
        one = k[k["step"] == s]
        assert one["layer_id"][one["layer_id"] >= 0].nunique() == 4
        assert one["op"].astype(str).tolist() == [op for _, op in step]


def test_training_tail_without_embedding_backward_is_the_optimizer():
    """A training step whose embedding backward is not seen (frozen embedding, a fused kernel): the kernels from the
    first optimizer-class kernel on are the optimizer, not the first layer's norm."""
    fwd = ["norm", "gemm", "fmha", "gemm", "norm", "gemm", "act", "gemm", "gemm", "loss"]
    names = ["attn_norm", "q_proj", "fmha", "o_proj", "ffn_norm", "mlp_up", "mlp_act", "mlp_down", "lm_head", ""]
    # backward: loss, then two GEMMs per forward GEMM (lm_head, mlp_down, mlp_up, o_proj, q_proj) in reverse
    bwd = ["loss", "gemm", "gemm", "gemm", "gemm", "act", "gemm", "gemm", "reduce", "gemm", "gemm", "fmha_bwd", "gemm", "gemm"]
    tail = ["ew", "reduce", "optimizer", "optimizer"]
    classes = fwd + bwd + tail
    out = train_roles(classes, names + [""] * (len(bwd) + len(tail)))
    assert out[-2:] == ["optimizer", "optimizer"]
    assert out[len(fwd) + 1 : len(fwd) + 3] == ["lm_head", "lm_head"]
    assert out[len(fwd) + len(bwd) - 2 : len(fwd) + len(bwd)] == ["q_proj", "q_proj"]


def test_layer_roles_edges():
    # a copy between the attention core and the output projection is the core's output layout
    assert layer_roles(["norm", "gemm", "ew", "fmha", "copy", "gemm", "ew"]) == ["attn_norm", "qkv_proj", "rope", "fmha", "fmha", "o_proj", "o_proj"]
    # a layer without an MLP: its residual add belongs to the output projection
    assert layer_roles(["norm", "gemm", "fmha", "gemm", "ew"])[-1] == "o_proj"
    # no attention core: no roles (never a guess)
    assert layer_roles(["norm", "gemm", "gemm", "ew"]) == ["", "", "", ""]
    assert layer_roles([]) == []


def write_module(folder, name, lines):
    out = folder / name / "output_code.py"
    out.parent.mkdir(parents=True)
    out.write_text("\n".join(lines) + "\n")


def test_inductor_names_per_graph_and_per_launch(tmp_path):
    """A kernel name two graphs use for different fusions gives no class; an extern call's comment is not given to
    the next Triton launch; a folder that records no ATen ops is a usage error."""
    write_module(tmp_path, "a", ["# Topologically Sorted Source Nodes: [v], Original ATen: [aten.mean, aten.pow, aten.rsqrt]", "triton_per_fused_0.run(a)"])
    write_module(
        tmp_path,
        "b",
        [
            "# Topologically Sorted Source Nodes: [c], Original ATen: [aten.cos, aten.sin]",
            "triton_per_fused_0.run(a)",
            "# Topologically Sorted Source Nodes: [mm], Original ATen: [aten.mm]",
            "extern_kernels.mm(buf0, buf1, out=buf2)",
            "triton_poi_fused_2.run(a)",
            "# Topologically Sorted Source Nodes: [s], Original ATen: [aten.mul, aten.silu]",
            "    stream0 = get_raw_stream(0)",
            "    triton_poi_fused_3.run(a)",
        ],
    )
    names = inductor_names(tmp_path)
    assert "triton_per_fused_0" not in names and "triton_poi_fused_2" not in names
    assert names["triton_poi_fused_3"] == "triton_poi_fused_mul_silu_0"
    empty = tmp_path / "empty"
    write_module(empty, "g", ["def call(args):", "    triton_poi_fused_0.run(a)"])
    from nsysparse.errors import UsageError

    with pytest.raises(UsageError, match="record no ATen ops"):
        inductor_names(empty)


def test_a_bare_mtp_range_is_a_layer(builder, tmp_path):
    """An NVTX range named just `mtp` (or `model.mtp`) is the MTP layer, not ops outside layers; ranges of MTP
    ops (`mtp_norm`) are not layers."""
    b = builder()
    b.gpu()
    t = 1_000_000
    for _ in range(3):
        s0 = t
        for layer in ("layer_0_dense", "layer_1_dense", "model.mtp"):
            l0 = t
            for name in (GEMM, FMHA, GEMM):
                b.kernel(t + 10_000, t + 12_000, name, api_start=t + 1_000, api_end=t + 2_000)
                t += 20_000
            if layer == "model.mtp":
                b.push(l0 + 500, l0 + 15_000, "mtp_norm")
            b.push(l0, t - 1_000, layer)
        b.push(s0 - 500, t, "forward")
        t += 500_000
    path = b.write(tmp_path / "t.sqlite")
    with AnalysisContext.open(path) as ctx:
        m = ctx.full_mapping
    kinds = m.layers.groupby("step")["layer_kind"].apply(lambda x: sorted(map(str, x)))
    assert len(kinds) == 3 and all(v == ["dense", "dense", "mtp"] for v in kinds)
    assert (m.kernels["layer_id"] >= 0).all()
