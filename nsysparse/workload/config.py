"""Workload configuration: the run (phase, batch, steps, NVTX level, host gap, dtype), and which model
shapes the generator builds.

The model is a `nsysparse.models.config.ModelSpec` (presets there: llama-mini, ds-mini, tiny-dense,
tiny-moe). What is not shape (dtype, RMSNorm epsilon, device) is run-time and lives in RunConfig.
No torch here: configs, expected structure and analytic FLOPs are plain Python so the CLI can document
and validate them without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from nsysparse.errors import ConfigError
from nsysparse.models.config import PRESETS, ModelSpec, from_workload
from nsysparse.models.flops import PHASES

NVTX_LEVELS = ("none", "step", "layer", "op")
DTYPES = ("bfloat16", "float16", "float32")

# The ModelSpec fields the generator builds, each a `nsysparse generate` option (--hidden-size, ...),
# with the short name it had before ModelSpec was the generator's shape type as an alias.
SHAPE_OPTIONS: dict[str, tuple[str | None, str]] = {
    "hidden_size": ("hidden", "hidden size"),
    "num_hidden_layers": ("layers", "regular layers (MTP layers not included)"),
    "num_attention_heads": ("heads", "attention heads"),
    "num_key_value_heads": ("kv-heads", "KV heads of GQA attention"),
    "head_dim": (None, "head dimension of GQA attention"),
    "intermediate_size": ("ffn", "intermediate size of dense MLPs"),
    "vocab_size": ("vocab", "vocabulary size"),
    "num_experts": ("experts", "MoE: routed experts (0: no MoE layers)"),
    "num_experts_per_tok": ("top-k", "MoE: experts per token"),
    "moe_intermediate_size": ("moe-ffn", "MoE: intermediate size of one expert"),
    "shared_expert_intermediate_size": (None, "MoE: intermediate size of the shared expert (0: none)"),
    "first_k_dense": ("first-dense", "MoE: leading dense layers"),
    "moe_layer_freq": (None, "MoE: every n-th layer after the leading dense ones is MoE"),
    "q_lora_rank": (None, "MLA: query latent rank"),
    "kv_lora_rank": (None, "MLA: key/value latent rank (0: GQA attention, not MLA)"),
    "qk_nope_head_dim": ("qk-nope-dim", "MLA: non-rotary query/key head dim"),
    "qk_rope_head_dim": ("qk-rope-dim", "MLA: rotary query/key head dim"),
    "v_head_dim": (None, "MLA: value head dim"),
    "mtp_layers": (None, "multi-token-prediction layers (run in decode and prefill)"),
}


def check_buildable(spec: ModelSpec) -> ModelSpec:
    """The generator builds GQA or MLA (with a query latent) attention, SwiGLU dense or MoE MLPs (sigmoid
    top-k gate, optional shared expert), and MTP modules; refuse what it does not build."""
    spec.validate()
    if not spec.swiglu:
        raise ConfigError(f"model {spec.name!r}: the generator builds SwiGLU MLPs only")
    if spec.full_attention_interval:
        raise ConfigError(f"model {spec.name!r}: the generator does not build linear-attention layers")
    if spec.is_mla:
        need = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        for f in need:
            if not getattr(spec, f) or getattr(spec, f) <= 0:
                raise ConfigError(f"MLA attention needs --{f.replace('_', '-')} > 0")
        if spec.qk_rope_head_dim % 2:
            raise ConfigError("--qk-rope-head-dim must be even (rotary embedding)")
    else:
        if spec.num_key_value_heads <= 0 or spec.num_attention_heads % spec.num_key_value_heads:
            raise ConfigError("--num-attention-heads must be a multiple of --num-key-value-heads")
        if spec.head_dim <= 0 or spec.head_dim % 2:
            raise ConfigError("--head-dim must be positive and even (rotary embedding)")
    if spec.intermediate_size <= 0 and "dense" in spec.layer_kinds():
        raise ConfigError("--intermediate-size must be positive (the model has dense layers)")
    if spec.is_moe:
        if spec.num_experts_per_tok > spec.num_experts:
            raise ConfigError("--num-experts-per-tok cannot exceed --num-experts")
        if not 0 <= spec.first_k_dense <= spec.num_hidden_layers:
            raise ConfigError("--first-k-dense must be between 0 and --num-hidden-layers")
        if spec.moe_layer_freq < 1:
            raise ConfigError("--moe-layer-freq must be at least 1")
    if spec.mtp_layers < 0:
        raise ConfigError("--mtp-layers cannot be negative")
    return spec


@dataclass(frozen=True)
class RunConfig:
    phase: str = "decode"
    batch: int = 8
    seq: int = 512  # prefill / train sequence length
    kv_len: int = 1024  # decode: tokens in the KV cache each step attends to
    steps: int = 6
    warmup: int = 3
    nvtx: str = "op"
    host_gap_ms: float = 0.0
    cuda_graph: bool = False
    device: str = "cuda"
    seed: int = 0
    dtype: str = "auto"  # parameters and activations; auto: bfloat16 on cuda, float32 on cpu
    rms_eps: float = 1e-6

    def validate(self, model: ModelSpec) -> RunConfig:
        """Checks the run against the model; returns it with dtype resolved (auto -> bfloat16 or float32)."""
        if self.phase not in PHASES:
            raise ConfigError(f"--phase must be one of {', '.join(PHASES)}")
        if self.nvtx not in NVTX_LEVELS:
            raise ConfigError(f"--nvtx must be one of {', '.join(NVTX_LEVELS)}")
        if self.batch <= 0 or self.steps <= 0 or self.warmup < 0:
            raise ConfigError("--batch and --steps must be positive, --warmup not negative")
        if self.phase == "decode" and self.kv_len < 1:
            raise ConfigError("--kv-len must be at least 1")
        if self.phase != "decode" and self.seq < 2:
            raise ConfigError("--seq must be at least 2")
        if self.cuda_graph and self.phase != "decode":
            raise ConfigError("--cuda-graph replays decode forwards; use it with --phase decode")
        if self.cuda_graph and self.device != "cuda":
            raise ConfigError("--cuda-graph needs --device cuda")
        if self.host_gap_ms < 0:
            raise ConfigError("--host-gap-ms cannot be negative")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be auto or one of {', '.join(DTYPES)}")
        if self.rms_eps <= 0:
            raise ConfigError("--rms-eps must be positive")
        if self.dtype == "auto":
            return replace(self, dtype="bfloat16" if self.device == "cuda" else "float32")
        return self

    @property
    def tokens_per_step(self) -> int:
        return self.batch if self.phase == "decode" else self.batch * self.seq


def model_from(preset: str, overrides: dict[str, Any]) -> ModelSpec:
    """A preset with shape overrides (ModelSpec field names; None: keep the preset's)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}", f"Choose one of {', '.join(PRESETS)}")
    names = set(SHAPE_OPTIONS)
    clean = {k: v for k, v in overrides.items() if v is not None and k in names}
    if clean.get("q_lora_rank") == 0:
        clean["q_lora_rank"] = None
    return check_buildable(replace(PRESETS[preset], **clean))


def run_from(config: dict[str, Any]) -> tuple[ModelSpec, RunConfig]:
    """Model and run of a workload config.json. Configs written before ModelSpec was the generator's shape
    type kept dtype and rms_eps in the model block; they are taken from there when the run lacks them."""
    model = config["model"]
    run = dict(config["run"])
    if "hidden_size" not in model:
        for k in ("dtype", "rms_eps"):
            if k in model and k not in run:
                run[k] = model[k]
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(run) - known)
    if unknown:
        raise ConfigError(f"unknown run setting(s) {', '.join(unknown)}")
    spec = check_buildable(from_workload(model, config.get("preset") or model.get("name")))
    return spec, RunConfig(**run).validate(spec)


def to_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg)


@dataclass
class Structure:
    """What a trace of this run must contain (written into the manifest; tests check traces against it)."""

    step_name: str
    steps: int
    layer_names: list[str] = field(default_factory=list)
    layer_kinds_per_step: dict[str, int] = field(default_factory=dict)
    op_sequence: dict[str, list[str]] = field(default_factory=dict)
    other_ops: list[str] = field(default_factory=list)
