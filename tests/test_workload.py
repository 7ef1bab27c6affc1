"""The torch workload generator: structure, NVTX record, manifest, CLI. CPU runs here; GPU runs marked."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from nsysparse.models.config import PRESETS, load_model, with_overrides  # noqa: E402
from nsysparse.models.flops import Workload, step_flops  # noqa: E402
from nsysparse.rules import load_rules  # noqa: E402
from nsysparse.workload.config import SHAPE_OPTIONS, RunConfig  # noqa: E402
from nsysparse.workload.plan import flops_summary, structure  # noqa: E402
from nsysparse.workload.run import execute  # noqa: E402

# GQA attention with MoE layers (and an MTP module): neither preset's shape, built from ModelSpec alone
GQA_MOE = with_overrides(
    PRESETS["tiny-dense"], name="gqa-moe", num_hidden_layers=3, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense=1, mtp_layers=1
)


def rebuild(record):
    """From the (kind, name, depth) record: list of steps, each a list of (layer, [ops]) plus outside ops."""
    steps = []
    for kind, name, depth in record:
        if kind == "step":
            steps.append({"name": name, "layers": [], "outside": []})
        elif kind == "layer":
            steps[-1]["layers"].append((name, []))
        elif kind == "op":
            if depth == 2 and steps[-1]["layers"] and steps[-1]["layers"][-1][1] is not None:
                steps[-1]["layers"][-1][1].append(name)
            elif depth == 1:
                steps[-1]["outside"].append(name)
    return steps


@pytest.mark.parametrize(
    "preset,phase",
    [
        ("tiny-moe", "decode"),
        ("tiny-moe", "prefill"),
        ("tiny-moe", "train"),
        ("tiny-dense", "decode"),
        ("tiny-dense", "train"),
        ("tiny-dense", "prefill"),
        ("gqa-moe", "decode"),
        ("gqa-moe", "prefill"),
    ],
)
def test_cpu_run_emits_the_planned_structure(preset, phase):
    model = GQA_MOE if preset == "gqa-moe" else PRESETS[preset]
    run = RunConfig(phase=phase, batch=2, seq=16, kv_len=24, steps=3, warmup=1, nvtx="op", device="cpu").validate(model)
    man = execute(model, run)
    st = man["structure"]
    steps = rebuild(man["nvtx_record"])
    assert [s["name"] for s in steps] == [st["step_name"].format(i=i) for i in range(3)]
    vocab = set(load_rules().ops)
    for s in steps:
        assert [name for name, _ in s["layers"]] == st["layer_names"]
        for name, ops in s["layers"]:
            kind = name.rsplit("_", 1)[1]
            assert ops == st["op_sequence"][kind], name
            assert set(ops) <= vocab
        assert set(s["outside"]) <= set(st["other_ops"]) | {"sample"}
    assert man["flops"]["per_step"] > 0
    assert man["tokens_per_step"] == (2 if phase == "decode" else 32)
    assert man["run"]["dtype"] == "float32"  # auto on cpu
    if phase == "train":  # MTP modules run in inference only
        assert "mtp" not in st["layer_kinds_per_step"]
    elif model.mtp_layers:
        assert st["layer_kinds_per_step"]["mtp"] == model.mtp_layers


def test_warmup_is_not_recorded_and_gaps_are():
    model = PRESETS["tiny-dense"]
    run = RunConfig(batch=1, kv_len=8, steps=2, warmup=3, nvtx="step", host_gap_ms=1.0, device="cpu").validate(model)
    man = execute(model, run)
    kinds = [k for k, _, _ in man["nvtx_record"]]
    assert kinds == ["step", "host", "step"]
    assert man["injected"] == {"host_gap_ms": 1.0, "gaps": 1, "nvtx_range": "host_gap", "cause": "host work (time.sleep between steps, no CUDA calls)"}


def test_training_flops_are_three_times_forward():
    model = PRESETS["llama-mini"]
    run = RunConfig(phase="train", batch=4, seq=1024).validate(model)
    f = flops_summary(model, run)
    assert f["per_step"] == pytest.approx(3 * f["forward_per_step"])
    # the dense closed form: 24·L·B·s·h²·(terms for GQA and SwiGLU) is checked in test_flops; here the
    # matmul enumeration must equal the hand count for one q_proj
    by = {(r["layer_kind"], r["op"]): r["flops"] for r in f["forward_by_op"]}
    assert by[("dense", "q_proj")] == 8 * 2 * (4 * 1024) * 2048 * (16 * 128)
    assert sum(r["flops"] for r in f["forward_by_op"] if r["in_totals"]) == pytest.approx(f["forward_per_step"], rel=1e-12)


def test_moe_training_flops_leave_out_the_mtp_module_it_does_not_run():
    """ds-mini has one MTP layer; in training the generator builds none, and its FLOPs count none."""
    model = PRESETS["ds-mini"]
    run = RunConfig(phase="train", batch=2, seq=256).validate(model)
    f = flops_summary(model, run)
    assert not any(r["layer_kind"] == "mtp" for r in f["forward_by_op"])
    without = with_overrides(model, mtp_layers=0)
    assert f["per_step"] == step_flops(without, Workload("train", batch=2, seq=256))
    assert f["per_step"] < step_flops(model, Workload("train", batch=2, seq=256))
    by = {(r["layer_kind"], r["op"]): r for r in f["forward_by_op"]}
    # the router GEMM is listed (t·h·experts multiply-adds per MoE layer) but not in the totals
    assert by[("moe", "gate_topk")]["flops"] == 5 * 2 * (2 * 256) * 2048 * 64
    assert not by[("moe", "gate_topk")]["in_totals"]


def test_structure_of_the_moe_preset():
    st = structure(PRESETS["ds-mini"], RunConfig())
    assert st.layer_kinds_per_step == {"dense": 3, "moe": 5, "mtp": 1}
    assert st.layer_names[-1] == "layer_8_mtp"
    assert "dispatch" in st.op_sequence["moe"] and "combine" in st.op_sequence["moe"]


@pytest.mark.parametrize(
    "bad,message",
    [
        (dict(phase="train", cuda_graph=True), "--cuda-graph"),
        (dict(nvtx="verbose"), "--nvtx"),
        (dict(cuda_graph=True, device="cpu"), "--device cuda"),
        (dict(dtype="int8"), "--dtype"),
        (dict(rms_eps=0.0), "--rms-eps"),
    ],
)
def test_run_config_validation(bad, message):
    from nsysparse.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        RunConfig(**bad).validate(PRESETS["llama-mini"])


def test_generate_help_documents_every_option(run):
    res = run("generate", "--help")
    for name, (alias, _) in SHAPE_OPTIONS.items():
        assert "--" + name.replace("_", "-") in res.output
        if alias:
            assert f"--{alias} " in res.output
    for opt in (
        "--dtype",
        "--rms-eps",
        "--phase",
        "--batch",
        "--seq",
        "--kv-len",
        "--steps",
        "--warmup",
        "--nvtx",
        "--host-gap-ms",
        "--cuda-graph",
        "--device",
        "--seed",
        "--profile",
        "--nsys",
        "--output",
        "--force",
        "--preset",
    ):
        assert opt in res.output


def test_generate_cpu_smoke_writes_a_manifest(run, tmp_path):
    res = run(
        "generate", "--preset", "tiny-moe", "--device", "cpu", "--steps", "2", "--batch", "2", "--kv-len", "16", "--host-gap-ms", "0.2", "-o", tmp_path / "g"
    )
    assert "nsys profile --trace=cuda,nvtx" in res.output
    man = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert man["structure"]["layer_kinds_per_step"] == {"dense": 1, "moe": 2, "mtp": 1}
    # the manifest's model block is the ModelSpec itself, and nsysparse's model commands read it back
    lm = load_model(str(tmp_path / "g" / "manifest.json"))
    assert lm.spec == PRESETS["tiny-moe"]
    assert lm.flops_per_step == step_flops(lm.spec, Workload("decode", batch=2, kv_len=16))
    assert man["run"]["dtype"] == "float32" and man["run"]["rms_eps"] == 1e-6
    assert man["environment"]["torch"] == torch.__version__
    assert "hostname" not in json.dumps(man).lower()
    run("generate", "--preset", "tiny-moe", "--device", "cpu", "-o", tmp_path / "g", expect=0)  # no trace yet: fine


def test_generate_shape_options_override_the_preset(run, tmp_path):
    res = run(
        "generate",
        "--preset",
        "tiny-dense",
        "--device",
        "cpu",
        "--steps",
        "1",
        "--batch",
        "1",
        "--kv-len",
        "8",
        "--layers",
        "3",
        "--num-experts",
        "4",
        "--top-k",
        "2",
        "--moe-intermediate-size",
        "16",
        "--first-k-dense",
        "2",
        "-o",
        tmp_path / "g",
    )
    assert "ran 1 decode steps" in res.output
    man = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert man["model"]["num_hidden_layers"] == 3 and man["model"]["num_experts"] == 4 and man["model"]["hidden_size"] == 64
    assert man["structure"]["layer_kinds_per_step"] == {"dense": 2, "moe": 1}
    assert "q_proj" in man["structure"]["op_sequence"]["moe"]  # GQA attention, MoE MLP
    bad = run("generate", "--preset", "tiny-dense", "--device", "cpu", "--num-key-value-heads", "3", "-o", tmp_path / "b", expect=1)
    assert "multiple of --num-key-value-heads" in bad.output


def test_generate_refuses_an_existing_trace(run, tmp_path):
    (tmp_path / "trace.sqlite").write_bytes(b"x")
    res = run("generate", "--preset", "tiny-dense", "--device", "cpu", "-o", tmp_path, expect=2)
    assert "--force" in res.output


def test_generate_profile_needs_nsys(run, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    import nsysparse.workload.profile as prof

    monkeypatch.setattr(prof, "find_nsys", lambda explicit=None: None)
    res = run("generate", "--preset", "tiny-dense", "--profile", "-o", tmp_path / "p", expect=1)
    assert "needs Nsight Systems" in res.output


def test_generate_profile_needs_cuda_device(run, tmp_path):
    run("generate", "--preset", "tiny-dense", "--profile", "--device", "cpu", "-o", tmp_path / "p", expect=2)


@pytest.mark.gpu
def test_gpu_run_of_the_tiny_models():
    for preset in ("tiny-dense", "tiny-moe"):
        model = PRESETS[preset]
        run = RunConfig(batch=2, kv_len=32, steps=2, warmup=1, nvtx="op", device="cuda", cuda_graph=True).validate(model)
        man = execute(model, run)
        assert man["environment"]["gpu"]
