"""The generator's configuration without torch: ModelSpec presets, what it builds, old and new configs."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from nsysparse.errors import ConfigError
from nsysparse.models.config import PRESETS, SMALL_PRESETS, from_workload, load_model, spec_dict
from nsysparse.workload.config import RunConfig, check_buildable, model_from, run_from

ROOT = Path(__file__).resolve().parents[1]


def test_small_presets_load_without_the_generator():
    """models/ must not import workload/ (the import contract); the small presets are models' own."""
    code = (
        "import sys\n"
        "from nsysparse.models.config import load_model\n"
        "for name in ('llama-mini', 'ds-mini', 'tiny-dense', 'tiny-moe'):\n"
        "    assert load_model(name).spec.name == name\n"
        "assert not [m for m in sys.modules if m.startswith(('nsysparse.workload', 'nsysparse.cli'))]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_small_presets_keep_the_shapes_the_fixtures_were_made_with():
    """llama-mini and ds-mini as the fixture manifests record them (old short names, read independently here)."""
    for fixture, preset in (("dense_train_step", "llama-mini"), ("moe_prefill_layer", "ds-mini")):
        m = json.loads((ROOT / "fixtures" / fixture / "manifest.json").read_text())["model"]
        s = PRESETS[preset]
        assert (s.hidden_size, s.num_hidden_layers, s.num_attention_heads, s.intermediate_size, s.vocab_size) == (
            m["hidden"],
            m["layers"],
            m["heads"],
            m["ffn"],
            m["vocab"],
        )
        if m["kind"] == "dense":
            assert (s.num_key_value_heads, s.head_dim, s.is_moe, s.is_mla, s.mtp_layers) == (m["kv_heads"], m["head_dim"], False, False, 0)
        else:
            assert (s.num_experts, s.num_experts_per_tok, s.moe_intermediate_size, s.first_k_dense) == (
                m["experts"],
                m["top_k"],
                m["moe_ffn"],
                m["first_dense"],
            )
            assert s.shared_expert_intermediate_size == m["shared_experts"] * m["moe_ffn"]
            assert (s.q_lora_rank, s.kv_lora_rank, s.qk_nope_head_dim, s.qk_rope_head_dim, s.v_head_dim, s.mtp_layers) == (
                m["q_lora_rank"],
                m["kv_lora_rank"],
                m["qk_nope_dim"],
                m["qk_rope_dim"],
                m["v_head_dim"],
                m["mtp_layers"],
            )


@pytest.mark.parametrize("name", SMALL_PRESETS)
def test_spec_dict_round_trips(name):
    spec = PRESETS[name]
    d = json.loads(json.dumps(spec_dict(spec)))
    assert from_workload(d) == spec
    assert from_workload(d, "renamed") == replace(spec, name="renamed")
    with pytest.raises(ConfigError, match="unknown model field"):
        from_workload({**d, "hidden": 3})


def test_what_the_generator_builds():
    for name in (*SMALL_PRESETS, "llama-3-8b", "qwen3-235b-a22b", "deepseek-v3"):
        check_buildable(PRESETS[name])
    with pytest.raises(ConfigError, match="linear-attention"):
        check_buildable(PRESETS["qwen3-next-80b-a3b"])
    with pytest.raises(ConfigError, match="SwiGLU"):
        check_buildable(replace(PRESETS["tiny-dense"], swiglu=False))
    with pytest.raises(ConfigError, match="--q-lora-rank"):
        check_buildable(replace(PRESETS["tiny-moe"], q_lora_rank=None))
    with pytest.raises(ConfigError, match="--qk-rope-head-dim must be even"):
        check_buildable(replace(PRESETS["tiny-moe"], qk_rope_head_dim=15))
    with pytest.raises(ConfigError, match="--head-dim"):
        check_buildable(replace(PRESETS["tiny-dense"], head_dim=15))
    with pytest.raises(ConfigError, match="cannot exceed"):
        check_buildable(replace(PRESETS["tiny-moe"], num_experts_per_tok=9))
    with pytest.raises(ConfigError, match="--first-k-dense"):
        check_buildable(replace(PRESETS["tiny-moe"], first_k_dense=4))


def test_model_from_overrides():
    m = model_from("ds-mini", {"num_hidden_layers": 4, "num_experts": None, "name": "ignored", "dtype": "float32"})
    assert m == replace(PRESETS["ds-mini"], num_hidden_layers=4)
    assert m.layer_kinds() == ["dense"] * 3 + ["moe"]
    with pytest.raises(ConfigError, match="--q-lora-rank"):
        model_from("ds-mini", {"q_lora_rank": 0})
    with pytest.raises(ConfigError, match="unknown preset"):
        model_from("gpt-5", {})


def test_run_settings():
    spec = PRESETS["tiny-dense"]
    assert RunConfig(device="cpu").validate(spec).dtype == "float32"
    assert RunConfig().validate(spec).dtype == "bfloat16"
    assert RunConfig(device="cpu", dtype="bfloat16").validate(spec).dtype == "bfloat16"
    # a config.json of the current format, and one written before (dtype and rms_eps in the model block)
    run = RunConfig(phase="prefill", seq=16, device="cpu", rms_eps=1e-5).validate(spec)
    assert run_from({"preset": "tiny-dense", "model": spec_dict(spec), "run": asdict(run)}) == (spec, run)
    old_model = {
        "kind": "dense",
        "hidden": 64,
        "layers": 2,
        "heads": 4,
        "kv_heads": 2,
        "head_dim": 16,
        "ffn": 128,
        "vocab": 256,
        "rms_eps": 1e-5,
        "dtype": "float32",
    }
    old_run = {k: v for k, v in asdict(run).items() if k not in ("dtype", "rms_eps")}
    assert run_from({"preset": "tiny-dense", "model": old_model, "run": old_run}) == (spec, run)
    with pytest.raises(ConfigError, match="unknown run setting"):
        run_from({"preset": "tiny-dense", "model": spec_dict(spec), "run": {**asdict(run), "warp": 9}})


def test_one_phases_constant():
    """decode/prefill/train are defined once (models.flops) and every user imports that one."""
    from nsysparse.cli.generate import generate
    from nsysparse.models.flops import PHASES

    defs = [p for p in (ROOT / "nsysparse").rglob("*.py") if "PHASES = " in p.read_text()]
    assert [p.relative_to(ROOT).as_posix() for p in defs] == ["nsysparse/models/flops.py"]
    phase = next(p for p in generate.params if p.name == "phase")
    assert tuple(phase.type.choices) == PHASES
    assert load_model("tiny-moe").spec == PRESETS["tiny-moe"]
