"""Op names on real framework traces without NVTX (corpus v2), checked against the twin's truth.

The twins of the eager fixtures carry module ranges, function ranges (rotary embedding, attention function,
KV-cache write) and, in training, backward module ranges (nsysparse/workload/hf.py `--nvtx functions`).
`corpus.truth_op` turns them into the vocabulary's op per kernel, independently of nsysparse's aliases and rules,
and `corpus.bare_labels` moves that truth onto the bare trace by (stream, position). nsysparse then analyses the
bare trace alone; its `ops` table must give every op the truth's time per step.
"""

from __future__ import annotations

from pathlib import Path

import corpus
import pytest

from nsysparse.analyses.context import AnalysisContext
from nsysparse.analyses.layers import layer_report
from nsysparse.analyses.ops import op_summary

EAGER = ["hf_llama_generate", "hf_qwen3moe_generate", "hf_llama_train", "hf_llama_static_generate"]
NO_OP_TRUTH = ["hf_llama_cudagraph_generate", "hf_llama_compile_generate", "hf_llama_compile_warm_generate"]
"""CUDA-graph replays and compiled forwards carry no module ranges in their twins: only the named share is checked."""
OP_FLOOR_US = 10.0  # the bar: every op of at least this much time per step
OP_TOLERANCE = 0.05
NAMED_SHARE = 0.95

pytestmark = pytest.mark.skipif(
    not all(n in corpus.fixture_names() for n in [*EAGER, "hf_llama_cudagraph_generate", "hf_llama_compile_generate", "hf_llama_compile_warm_generate"]),
    reason="corpus v2 not present",
)


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    return tmp_path_factory.mktemp("v2ops")


def truth_per_step(name: str, dest: Path) -> tuple[dict[str, float], dict[str, float], float]:
    """(truth µs per step by op, nsysparse's µs per step by op, nsysparse's named share), over the steps nsysparse
    counts (warm-up left out). The truth is summed over the same kernels nsysparse puts in those steps, so this
    checks naming only: step extents and warm-up are checked against the twin in tests/test_steps_v2.py."""
    fx = corpus.load(name, dest)
    lab = corpus.bare_labels(fx.bare, fx.twin)
    lab["truth_op"] = corpus.truth_op(lab)
    with AnalysisContext.open(fx.bare) as ctx:
        found = op_summary(ctx)
        share = layer_report(ctx).named_share
        k = ctx.mapping.kernels[["stream_id", "start_ns", "step"]].rename(columns={"stream_id": "stream"})
        nsteps = len(ctx.mapping.steps)
    k = k[k["step"] >= 0].merge(lab[["stream", "start_ns", "end_ns", "truth_op"]], on=["stream", "start_ns"], how="left")
    assert k["truth_op"].notna().all(), "every in-step kernel has a twin label"
    k["dur_us"] = (k["end_ns"] - k["start_ns"]) / 1e3
    truth = (k[k["truth_op"] != ""].groupby("truth_op")["dur_us"].sum() / nsteps).to_dict()
    got = dict(zip(found["op"].astype(str), found["total_us_per_step"].astype(float), strict=True))
    return truth, got, share


@pytest.mark.parametrize("name", EAGER)
def test_every_op_matches_the_twin(name, unpacked):
    truth, got, _ = truth_per_step(name, unpacked)
    big = {op: us for op, us in truth.items() if us >= OP_FLOOR_US}
    assert len(big) >= 10, f"{name}: too few ops to judge ({sorted(big)})"
    off = {op: (round(us, 2), round(got.get(op, 0.0), 2)) for op, us in big.items() if abs(got.get(op, 0.0) - us) > OP_TOLERANCE * us}
    assert not off, f"{name}: ops off by more than {OP_TOLERANCE:.0%} (truth µs/step, found µs/step): {off}"


@pytest.mark.parametrize("name", EAGER)
def test_named_share_without_nvtx(name, unpacked):
    _, _, share = truth_per_step(name, unpacked)
    assert share >= NAMED_SHARE, f"{name}: only {share:.1%} of in-step time named by a template or a role"


@pytest.mark.parametrize("name", NO_OP_TRUTH)
def test_named_share_of_graphs_and_compiled_code(name, unpacked):
    """CUDA-graph replays and TorchInductor code: the layers' kernels get op names by their roles too (a compiled
    layer repeats by kernel class, its first one holds the rotary table), so at least 95 % of in-step time is named."""
    fx = corpus.load(name, unpacked)
    with AnalysisContext.open(fx.bare) as ctx:
        share = layer_report(ctx).named_share
        ops = set(op_summary(ctx)["op"].astype(str))
    assert share >= NAMED_SHARE, f"{name}: only {share:.1%} named"
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "fmha", "mlp_up", "mlp_down", "lm_head"} <= ops, sorted(ops)


PROVENANCE = "hf_llama_compile_prov_generate_bare"


@pytest.mark.skipif(not (corpus.V2 / PROVENANCE / "provenance.tar.xz").exists(), reason="provenance fixture not present")
def test_compiled_ops_match_inductor_provenance(unpacked):
    """torch.compile decode steps (TorchInductor, CUDA graphs): the truth of each replayed kernel comes from the
    compile's own provenance (kernel -> FX nodes -> module and source function; corpus.provenance_launches), and
    nsysparse, from the bare trace alone, must give every op of at least 10 us/step its time within 5 %."""
    trace, prov = corpus.load_provenance(PROVENANCE, unpacked)
    launches = corpus.provenance_launches(prov)
    lab = corpus.replay_labels(trace, launches)
    with AnalysisContext.open(trace) as ctx:
        k = ctx.mapping.kernels[["stream_id", "start_ns", "step", "op"]].rename(columns={"stream_id": "stream"})
        share = layer_report(ctx).named_share
    k = k[k["step"] >= 0].merge(lab[["stream", "start_ns", "end_ns", "truth_op"]], on=["stream", "start_ns"], how="left")
    k = k[k["truth_op"].fillna("") != ""]  # the replayed compiled forwards (prefills run eagerly: no truth)
    n = k["step"].nunique()
    assert n >= 30, f"only {n} steps hold replays of the compiled graph"
    k["dur_us"] = (k["end_ns"] - k["start_ns"]) / 1e3
    truth = (k.groupby("truth_op")["dur_us"].sum() / n).to_dict()
    got = (k.groupby(k["op"].astype(str))["dur_us"].sum() / n).to_dict()
    big = {op: us for op, us in truth.items() if us >= OP_FLOOR_US}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "fmha", "rope", "mlp_up", "mlp_down"} <= set(big), sorted(big)
    off = {op: (round(us, 2), round(got.get(op, 0.0), 2)) for op, us in big.items() if abs(got.get(op, 0.0) - us) > OP_TOLERANCE * us}
    assert not off, f"compiled ops off by more than {OP_TOLERANCE:.0%} (truth, found us/step): {off}"
    assert share >= NAMED_SHARE


@pytest.mark.skipif(not (corpus.V2 / PROVENANCE / "provenance.tar.xz").exists(), reason="provenance fixture not present")
def test_compiled_layer_time_matches_inductor_provenance(unpacked):
    """The compiled decode layers' median GPU time within 3 % of the provenance truth (a true layer: the replay's
    kernels whose source nodes were traced in `model.layers.N`), with 4 layers in every replayed step."""
    trace, prov = corpus.load_provenance(PROVENANCE, unpacked)
    launches = corpus.provenance_launches(prov)
    layer_of = corpus.provenance_layers(prov)
    lab = corpus.replay_labels(trace, [(h, str(n)) for (h, _), n in zip(launches, layer_of, strict=True)])
    with AnalysisContext.open(trace) as ctx:
        k = ctx.mapping.kernels[["stream_id", "start_ns", "step", "layer_id", "dur_ns"]].rename(columns={"stream_id": "stream"})
    k = k[k["step"] >= 0].merge(lab[["stream", "start_ns", "truth_op"]].rename(columns={"truth_op": "truth_layer"}), on=["stream", "start_ns"])
    k = k[k["truth_layer"].fillna("") != ""]
    true = k[k["truth_layer"] != "-1"].groupby(["step", "truth_layer"])["dur_ns"].sum()
    found = k[k["layer_id"] >= 0].groupby(["step", "layer_id"])["dur_ns"].sum()
    assert (found.groupby(level="step").size() == 4).all()
    assert found.median() == pytest.approx(true.median(), rel=0.03), (found.median(), true.median())


def _per_step(k, found_col: str = "op") -> tuple[dict[str, float], dict[str, float]]:
    n = k["step"].nunique()
    truth = (k.groupby("truth_op")["dur_us"].sum() / n).to_dict()
    got = (k.groupby(k[found_col].astype(str))["dur_us"].sum() / n).to_dict()
    return truth, got


def test_graph_replays_match_the_eager_static_twin(unpacked):
    """CUDA-graph decode (torch.compile's cudagraphs backend) replays exactly the kernels of the same program run
    eagerly with the same static cache (hf_llama_static_generate): the eager twin's truth labels each replay by
    position, and nsysparse must name every op of at least 10 us/step within 5 % on the graph trace."""
    graph = corpus.load("hf_llama_cudagraph_generate", unpacked)
    eager = corpus.load("hf_llama_static_generate", unpacked)
    truth = corpus.replay_truth_from_eager(graph.bare, eager.twin)
    with AnalysisContext.open(graph.bare) as ctx:
        k = ctx.mapping.kernels[["stream_id", "start_ns", "end_ns", "step", "op"]].rename(columns={"stream_id": "stream"})
    k = k[k["step"] >= 0].merge(truth, on=["stream", "start_ns"], how="left")
    k = k[k["truth_op"].fillna("") != ""]
    assert k["step"].nunique() >= 30, "the decode replays are matched to eager forwards"
    k["dur_us"] = (k["end_ns"] - k["start_ns"]) / 1e3
    truth_us, got = _per_step(k)
    big = {op: us for op, us in truth_us.items() if us >= OP_FLOOR_US}
    off = {op: (round(us, 2), round(got.get(op, 0.0), 2)) for op, us in big.items() if abs(got.get(op, 0.0) - us) > OP_TOLERANCE * us}
    assert len(big) >= 10 and not off, off


def test_eager_and_graph_compare_on_the_same_op_names(run, unpacked):
    """`compare` of the eager static-cache run against its CUDA-graph twin: both name the same ops (no op only on
    one side, as when naming differs), and no op regresses; the step period improves (launch gaps are gone)."""
    import json

    eager = corpus.load("hf_llama_static_generate", unpacked)
    graph = corpus.load("hf_llama_cudagraph_generate", unpacked)
    data = json.loads(run("compare", eager.bare, graph.bare, "-f", "json", expect=None).stdout)
    rows = [r for r in data["rows"] if r["section"] == "op"]
    assert len(rows) >= 12
    assert all(r["base_n"] > 0 and r["new_n"] > 0 for r in rows), [r["key"] for r in rows if not (r["base_n"] and r["new_n"])]
    assert all(r["verdict"] == "neutral" for r in rows), [(r["key"], r["delta_pct"]) for r in rows if r["verdict"] != "neutral"]


@pytest.mark.parametrize("name", ["hf_llama_generate", "hf_qwen3moe_generate", "hf_llama_train"])
def test_twin_nvtx_names_resolve_to_the_vocabulary(name, unpacked):
    """With the twin's own NVTX (HF module paths, function ranges such as `...self_attn.apply_rotary_pos_emb`,
    backward ranges), every op nsysparse reports is a vocabulary op or a kernel-class name: no raw range text."""
    import tomllib

    vocab = tomllib.loads((Path(__file__).resolve().parent.parent / "rules" / "vocabulary.toml").read_text())
    known = set(vocab["ops"]) | {c["op"] for c in vocab["classes"].values()} | {"unmapped", "other"}
    fx = corpus.load(name, unpacked)
    with AnalysisContext.open(fx.twin) as ctx:
        ops = set(op_summary(ctx)["op"].astype(str))
    assert ops <= known, sorted(ops - known)
    assert {"rope", "fmha", "q_proj", "mlp_down"} <= ops


def test_training_has_no_misfired_slots(unpacked):
    """A training step has no sampling, and its backward is named after the forward ops: no `sample` op, and no
    op named by kernel class alone takes 1 % of the step."""
    truth, got, _ = truth_per_step("hf_llama_train", unpacked)
    total = sum(got.values())
    assert "sample" not in got
    classes_only = {op: us for op, us in got.items() if op not in truth and us > 0.01 * total}
    assert not classes_only, classes_only
