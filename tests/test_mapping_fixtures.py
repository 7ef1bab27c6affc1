"""Issue-4 accuracy on the generator's fixtures: steps, layers, per-op time, unmapped share."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import FIXTURES, fixture_trace

from nsysparse.analyses.context import AnalysisContext, StructureOptions
from nsysparse.analyses.layers import layer_report


def mapped(name, nvtx="auto"):
    """The fixture's analysis context, mapped (the trace is closed again)."""
    with AnalysisContext.open(fixture_trace(name), options=StructureOptions(nvtx=nvtx)) as ctx:
        _ = ctx.mapping
    return ctx


def per_op_us(ctx):
    k = ctx.mapping.kernels[ctx.mapping.kernels["step"] >= 0]
    return k.groupby([k["layer_kind"].astype(str), k["op"].astype(str)])["dur_ns"].sum() / k["step"].nunique() / 1e3


def expected(name):
    return json.loads((FIXTURES / name / "manifest.json").read_text())["structure"]


def check_counts(m, name):
    st = expected(name)
    r = layer_report(m)
    assert r.steps == st["steps"]
    assert r.layer_kinds == {k: float(v) for k, v in st["layer_kinds_per_step"].items()}
    assert r.unmapped_share < 0.03
    return r


def check_ops_close(ref, test, tolerance):
    j = pd.concat([per_op_us(ref), per_op_us(test)], axis=1, keys=["ref", "test"]).fillna(0.0)
    big = j[j["ref"] >= 10.0]
    dev = (big["test"] / big["ref"] - 1).abs()
    assert len(big) >= 40
    assert dev.max() <= tolerance, dev.sort_values().tail(3)


def test_moe_decode_without_nvtx_matches_its_op_nvtx_twin():
    ref = mapped("moe_decode_op")
    m = mapped("moe_decode_nonvtx")
    assert m.mapping.step_source == "inferred-repeat" and m.mapping.step_confidence >= 0.9
    assert m.mapping.layer_source == "template"
    check_counts(m, "moe_decode_nonvtx")
    check_ops_close(ref, m, 0.03)


def test_cuda_graph_fixture_matches_its_op_nvtx_twin():
    ref = mapped("moe_decode_graph_op")
    m = mapped("moe_decode_graph")
    assert m.mapping.layer_source == "nvtx"  # capture-time layer ranges reached through graph node creation
    check_counts(m, "moe_decode_graph")
    check_ops_close(ref, m, 0.03)
    blind = mapped("moe_decode_graph_op", nvtx="off")
    check_counts(blind, "moe_decode_graph_op")
    check_ops_close(ref, blind, 0.03)


@pytest.mark.parametrize("name", ["moe_decode_op", "dense_decode_op", "moe_decode_graph_op"])
def test_templates_name_every_kernel_as_nvtx_does(name):
    """On one trace, template naming (NVTX used for steps only) equals NVTX op naming kernel by kernel."""
    ref = mapped(name)
    tpl = mapped(name, nvtx="steps")
    assert (ref.mapping.kernels["source"] == "nvtx").mean() > 0.99
    assert (tpl.mapping.kernels["source"] == "template").mean() > 0.99
    same = (ref.mapping.kernels["op"].astype(str) == tpl.mapping.kernels["op"].astype(str)) & (
        ref.mapping.kernels["layer_kind"].astype(str) == tpl.mapping.kernels["layer_kind"].astype(str)
    )
    assert same.all(), ref.mapping.kernels.loc[~same, ["short_name", "op"]].head()


@pytest.mark.parametrize("name", ["dense_train_step", "moe_prefill_layer", "dense_decode_op", "moe_decode_op_gap3ms"])
def test_structure_of_the_other_fixtures(name):
    m = mapped(name)
    check_counts(m, name)
    assert (m.mapping.kernels["source"] == "unmapped").sum() == 0


def test_training_ops_cover_forward_backward_optimizer():
    m = mapped("dense_train_step")
    ops = set(m.mapping.kernels["op"].astype(str))
    assert {"backward", "optimizer", "loss", "lm_head", "fmha", "mlp_up"} <= ops
    # step time is one forward + backward + AdamW: its kernels all belong to the step
    assert (m.mapping.kernels["step"] >= 0).all()


def test_reconciliation_adds_up():
    r = layer_report(mapped("moe_decode_op"))
    lines = r.reconciliation
    total = lines["us_per_step"].iloc[:-1].sum()
    assert total == pytest.approx(lines["us_per_step"].iloc[-1], abs=0.01)
    assert set(lines["component"].iloc[:3]) == {"layers: dense", "layers: moe", "layers: mtp"}
