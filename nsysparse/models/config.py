"""Model shapes: ModelSpec, the one model-shape type, its presets, HF-style config.json and workload manifests.

`--model` takes a preset name (deepseek-v3, qwen3-235b-a22b, qwen3-next-80b-a3b, llama-3-8b,
llama-3-70b, and the small models the workload generator runs: llama-mini, ds-mini, tiny-dense,
tiny-moe), a HuggingFace config.json, or a manifest.json written by `nsysparse generate` (which also
supplies phase, batch, sequence and KV length).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nsysparse.errors import ConfigError
from nsysparse.outputs import note_input


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a model (HF config.json names): what the FLOP model counts, the predictions cost,
    and the workload generator builds. Run-time settings (dtype, norm epsilon, device) are not shape."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    swiglu: bool = True
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    first_k_dense: int = 0
    moe_layer_freq: int = 1
    q_lora_rank: int | None = None
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    mtp_layers: int = 0
    # hybrid linear attention (Qwen3-Next Gated DeltaNet): every full_attention_interval-th layer is full
    full_attention_interval: int = 0
    linear_num_key_heads: int = 0
    linear_num_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    linear_conv_kernel_dim: int = 4
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def layer_kinds(self) -> list[str]:
        if not self.is_moe:
            return ["dense"] * self.num_hidden_layers
        kinds = []
        for i in range(self.num_hidden_layers):
            moe = i >= self.first_k_dense and ((i - self.first_k_dense) % max(self.moe_layer_freq, 1) == 0)
            kinds.append("moe" if moe else "dense")
        return kinds

    def attention_types(self) -> list[str]:
        """'full' or 'linear' per regular layer."""
        n = self.num_hidden_layers
        if not self.full_attention_interval:
            return ["full"] * n
        return ["full" if (i + 1) % self.full_attention_interval == 0 else "linear" for i in range(n)]

    def validate(self) -> ModelSpec:
        for f in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            if getattr(self, f) <= 0:
                raise ConfigError(f"model {self.name!r}: {f} must be positive")
        if self.is_moe and (self.num_experts_per_tok <= 0 or self.moe_intermediate_size <= 0):
            raise ConfigError(f"model {self.name!r}: an MoE model needs num_experts_per_tok and moe_intermediate_size")
        return self


PRESETS: dict[str, ModelSpec] = {
    "deepseek-v3": ModelSpec(
        "deepseek-v3",
        hidden_size=7168,
        num_hidden_layers=61,
        num_attention_heads=128,
        num_key_value_heads=128,
        head_dim=128,
        intermediate_size=18432,
        vocab_size=129280,
        num_experts=256,
        num_experts_per_tok=8,
        moe_intermediate_size=2048,
        shared_expert_intermediate_size=2048,
        first_k_dense=3,
        q_lora_rank=1536,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        mtp_layers=1,
    ),
    "qwen3-235b-a22b": ModelSpec(
        "qwen3-235b-a22b",
        hidden_size=4096,
        num_hidden_layers=94,
        num_attention_heads=64,
        num_key_value_heads=4,
        head_dim=128,
        intermediate_size=12288,
        vocab_size=151936,
        num_experts=128,
        num_experts_per_tok=8,
        moe_intermediate_size=1536,
    ),
    "qwen3-next-80b-a3b": ModelSpec(
        "qwen3-next-80b-a3b",
        hidden_size=2048,
        num_hidden_layers=48,
        num_attention_heads=16,
        num_key_value_heads=2,
        head_dim=256,
        intermediate_size=5120,
        vocab_size=151936,
        num_experts=512,
        num_experts_per_tok=10,
        moe_intermediate_size=512,
        shared_expert_intermediate_size=512,
        full_attention_interval=4,
        linear_num_key_heads=16,
        linear_num_value_heads=32,
        linear_key_head_dim=128,
        linear_value_head_dim=128,
        linear_conv_kernel_dim=4,
        notes=("Gated DeltaNet linear-attention layers use Megatron's GDN FLOP formula and are approximate; the attention output gate is not counted",),
    ),
    "llama-3-8b": ModelSpec("llama-3-8b", 4096, 32, 32, 8, 128, 14336, 128256),
    "llama-3-70b": ModelSpec("llama-3-70b", 8192, 80, 64, 8, 128, 28672, 128256),
    # Llama-like, small enough for one 80 GB GPU in decode, prefill and training.
    "llama-mini": ModelSpec("llama-mini", 2048, 8, 16, 4, 128, 5632, 32000),
    # DeepSeek-V3-like: 3 dense + 5 MoE layers, MLA, one shared expert, one MTP layer.
    "ds-mini": ModelSpec(
        "ds-mini",
        hidden_size=2048,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=16,
        head_dim=128,
        intermediate_size=5632,
        vocab_size=32000,
        num_experts=64,
        num_experts_per_tok=6,
        moe_intermediate_size=512,
        shared_expert_intermediate_size=512,
        first_k_dense=3,
        q_lora_rank=768,
        kv_lora_rank=192,
        qk_nope_head_dim=64,
        qk_rope_head_dim=64,
        v_head_dim=128,
        mtp_layers=1,
    ),
    # CPU smoke-test sizes.
    "tiny-dense": ModelSpec("tiny-dense", 64, 2, 4, 2, 16, 128, 256),
    "tiny-moe": ModelSpec(
        "tiny-moe",
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,
        intermediate_size=128,
        vocab_size=256,
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        first_k_dense=1,
        q_lora_rank=32,
        kv_lora_rank=32,
        qk_nope_head_dim=16,
        qk_rope_head_dim=16,
        v_head_dim=32,
        mtp_layers=1,
    ),
}

# The small models above: what one GPU (or, for the tiny ones, a CPU) runs. `nsysparse generate --preset`
# offers these.
SMALL_PRESETS = ("llama-mini", "ds-mini", "tiny-dense", "tiny-moe")


def from_hf(cfg: dict[str, Any], name: str = "config") -> ModelSpec:
    """A HuggingFace config.json (Llama, Qwen2/3, Qwen3-MoE, Qwen3-Next, DeepSeek-V2/V3 families)."""
    try:
        h = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        layers = int(cfg["num_hidden_layers"])
        vocab = int(cfg["vocab_size"])
    except KeyError as err:
        raise ConfigError(f"{name}: config has no {err.args[0]!r}", "Pass a HuggingFace config.json or a preset name") from None
    experts = int(cfg.get("n_routed_experts") or cfg.get("num_experts") or cfg.get("num_local_experts") or 0)
    moe_ffn = int(cfg.get("moe_intermediate_size") or 0)
    shared = int(cfg.get("shared_expert_intermediate_size") or 0)
    if not shared and cfg.get("n_shared_experts"):
        shared = int(cfg["n_shared_experts"]) * moe_ffn
    first_dense = int(cfg.get("first_k_dense_replace") or 0)
    freq = int(cfg.get("moe_layer_freq") or cfg.get("decoder_sparse_step") or 1)
    notes = []
    if cfg.get("mlp_only_layers"):
        notes.append("mlp_only_layers is not modelled; those layers are counted as MoE")
    act = str(cfg.get("hidden_act", "silu")).lower()
    full_int = int(cfg.get("full_attention_interval") or 0)
    if full_int:
        notes.append("linear-attention layers are approximate (Megatron's Gated DeltaNet formula)")
    spec = ModelSpec(
        name=name,
        hidden_size=h,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or h // heads),
        intermediate_size=int(cfg.get("intermediate_size") or 4 * h),
        vocab_size=vocab,
        swiglu=act in ("silu", "swiglu", "swish"),
        num_experts=experts,
        num_experts_per_tok=int(cfg.get("num_experts_per_tok") or 0),
        moe_intermediate_size=moe_ffn,
        shared_expert_intermediate_size=shared,
        first_k_dense=first_dense,
        moe_layer_freq=freq,
        q_lora_rank=int(cfg["q_lora_rank"]) if cfg.get("q_lora_rank") else None,
        kv_lora_rank=int(cfg.get("kv_lora_rank") or 0),
        qk_nope_head_dim=int(cfg.get("qk_nope_head_dim") or 0),
        qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 0),
        v_head_dim=int(cfg.get("v_head_dim") or 0),
        mtp_layers=int(cfg.get("num_nextn_predict_layers") or 0),
        full_attention_interval=full_int,
        linear_num_key_heads=int(cfg.get("linear_num_key_heads") or 0),
        linear_num_value_heads=int(cfg.get("linear_num_value_heads") or 0),
        linear_key_head_dim=int(cfg.get("linear_key_head_dim") or 0),
        linear_value_head_dim=int(cfg.get("linear_value_head_dim") or 0),
        linear_conv_kernel_dim=int(cfg.get("linear_conv_kernel_dim") or 4),
        notes=tuple(notes),
    )
    return spec.validate()


def spec_dict(spec: ModelSpec) -> dict[str, Any]:
    """A ModelSpec as a JSON-ready dict (the `model` block of a workload config and manifest)."""
    d = asdict(spec)
    d["notes"] = list(spec.notes)
    return d


def from_workload(model: dict[str, Any], name: str | None = None) -> ModelSpec:
    """The `model` block of a workload manifest/config: ModelSpec's own fields (`spec_dict`), or the
    short names manifests written before ModelSpec was the generator's shape type used (kind, hidden,
    layers, heads, ...; their rms_eps and dtype are run-time settings, not shape, and are ignored)."""
    if "hidden_size" in model:
        known = {f.name for f in fields(ModelSpec)}
        unknown = sorted(set(model) - known)
        if unknown:
            raise ConfigError(f"model {name or model.get('name')!r}: unknown model field(s) {', '.join(unknown)}")
        kw = dict(model)
        kw["notes"] = tuple(kw.get("notes") or ())
        kw["name"] = name or kw.get("name") or "workload"
        try:
            return ModelSpec(**kw).validate()
        except TypeError as err:  # a required field missing
            raise ConfigError(f"model {kw['name']!r}: {err}") from None
    return _from_old_workload(model, name or "workload")


def _from_old_workload(model: dict[str, Any], name: str) -> ModelSpec:
    moe = model.get("kind") == "moe"
    return ModelSpec(
        name=name,
        hidden_size=model["hidden"],
        num_hidden_layers=model["layers"],
        num_attention_heads=model["heads"],
        num_key_value_heads=model["kv_heads"] if not moe else model["heads"],
        head_dim=model["head_dim"],
        intermediate_size=model["ffn"],
        vocab_size=model["vocab"],
        swiglu=True,
        num_experts=model.get("experts", 0) if moe else 0,
        num_experts_per_tok=model.get("top_k", 0) if moe else 0,
        moe_intermediate_size=model.get("moe_ffn", 0) if moe else 0,
        shared_expert_intermediate_size=model.get("moe_ffn", 0) * model.get("shared_experts", 0) if moe else 0,
        first_k_dense=model.get("first_dense", 0) if moe else 0,
        q_lora_rank=model.get("q_lora_rank") or None if moe else None,
        kv_lora_rank=model.get("kv_lora_rank", 0) if moe else 0,
        qk_nope_head_dim=model.get("qk_nope_dim", 0) if moe else 0,
        qk_rope_head_dim=model.get("qk_rope_dim", 0) if moe else 0,
        v_head_dim=model.get("v_head_dim", 0) if moe else 0,
        mtp_layers=model.get("mtp_layers", 0) if moe else 0,
    ).validate()


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    run: dict[str, Any]  # phase/batch/seq/kv_len from a workload manifest, else empty
    flops_per_step: float | None  # the manifest's own analytic count, when there is one
    # what a workload manifest recorded of its run, to check a trace against: gpu, layer_kinds_per_step,
    # host_step_seconds, host_gap_ms (empty for presets and HF configs)
    expected: dict[str, Any] = field(default_factory=dict)


def load_model(arg: str) -> LoadedModel:
    """A preset name, a HuggingFace config.json, or an nsysparse workload manifest/config."""
    key = arg.strip().lower()
    if key in PRESETS:
        return LoadedModel(PRESETS[key], {}, None)
    p = Path(arg)
    if not p.exists():
        choices = ", ".join(PRESETS)
        raise ConfigError(f"{arg}: no such model preset or file", f"Use a preset ({choices}), a HuggingFace config.json or a workload manifest.json")
    note_input(p)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{p}: not a readable JSON model config ({err})") from None
    if isinstance(data, dict) and "model" in data and "run" in data:
        spec = from_workload(data["model"], data.get("preset") or p.parent.name)
        flops = (data.get("flops") or {}).get("per_step")
        expected = {
            "gpu": (data.get("environment") or {}).get("gpu"),
            "layer_kinds_per_step": (data.get("structure") or {}).get("layer_kinds_per_step"),
            "host_step_seconds": data.get("host_step_seconds"),
            "host_gap_ms": (data.get("run") or {}).get("host_gap_ms"),
        }
        return LoadedModel(spec, dict(data["run"]), float(flops) if flops else None, {k: v for k, v in expected.items() if v is not None})
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a model config must be a JSON object")
    return LoadedModel(from_hf(data, p.stem if p.stem != "config" else p.parent.name or "config"), {}, None)


def with_overrides(spec: ModelSpec, **kw: Any) -> ModelSpec:
    return replace(spec, **{k: v for k, v in kw.items() if v is not None})
