"""Workload configuration: model shapes, the run (phase, batch, steps, NVTX level, host gap), presets.

No torch here: configs, presets, expected structure and analytic FLOPs are plain Python so the CLI can
document and validate them without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from nsysparse.errors import ConfigError

PHASES = ("decode", "prefill", "train")
NVTX_LEVELS = ("none", "step", "layer", "op")


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of a Llama-like dense model or a DeepSeek-V3-like MoE model (MLA attention)."""

    kind: str = "dense"  # dense | moe
    hidden: int = 1024
    layers: int = 4
    heads: int = 8
    kv_heads: int = 8  # dense attention (GQA groups)
    head_dim: int = 128  # dense attention
    ffn: int = 2816  # dense MLP intermediate size (also the first dense layers of an MoE model)
    vocab: int = 32000
    # MoE (kind == "moe")
    first_dense: int = 0
    experts: int = 0
    top_k: int = 0
    moe_ffn: int = 0
    shared_experts: int = 0
    # MLA attention (kind == "moe")
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_dim: int = 0
    qk_rope_dim: int = 0
    v_head_dim: int = 0
    mtp_layers: int = 0
    rms_eps: float = 1e-6
    dtype: str = "bfloat16"

    def validate(self) -> ModelConfig:
        if self.kind not in ("dense", "moe"):
            raise ConfigError(f"model kind must be dense or moe, not {self.kind!r}")
        for f in ("hidden", "layers", "heads", "vocab"):
            if getattr(self, f) <= 0:
                raise ConfigError(f"--{f.replace('_', '-')} must be positive")
        if self.kind == "dense":
            if self.heads % max(self.kv_heads, 1) or self.kv_heads <= 0:
                raise ConfigError("--heads must be a multiple of --kv-heads")
            if self.mtp_layers:
                raise ConfigError("MTP is only built for the moe model")
        else:
            need = ("experts", "top_k", "moe_ffn", "q_lora_rank", "kv_lora_rank", "qk_nope_dim", "qk_rope_dim", "v_head_dim")
            for f in need:
                if getattr(self, f) <= 0:
                    raise ConfigError(f"a moe model needs --{f.replace('_', '-')} > 0")
            if self.top_k > self.experts:
                raise ConfigError("--top-k cannot exceed --experts")
            if not 0 <= self.first_dense <= self.layers:
                raise ConfigError("--first-dense must be between 0 and --layers")
            if self.qk_rope_dim % 2:
                raise ConfigError("--qk-rope-dim must be even")
        if self.kind == "dense" and self.head_dim % 2:
            raise ConfigError("--head-dim must be even (rotary embedding)")
        if self.dtype not in ("bfloat16", "float16", "float32"):
            raise ConfigError("--dtype must be bfloat16, float16 or float32")
        return self

    def layer_kinds(self) -> list[str]:
        """Kind of each regular layer, in order (MTP layers are not regular layers)."""
        if self.kind == "dense":
            return ["dense"] * self.layers
        return ["dense"] * self.first_dense + ["moe"] * (self.layers - self.first_dense)


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

    def validate(self, model: ModelConfig) -> RunConfig:
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
        if self.phase == "train" and model.kind == "moe":
            # Supported, but grouped GEMM backward needs a recent PyTorch; say so in the manifest.
            pass
        return self

    @property
    def tokens_per_step(self) -> int:
        return self.batch if self.phase == "decode" else self.batch * self.seq


PRESETS: dict[str, ModelConfig] = {
    # Llama-like, small enough for one 80 GB GPU in decode, prefill and training.
    "llama-mini": ModelConfig(kind="dense", hidden=2048, layers=8, heads=16, kv_heads=4, head_dim=128, ffn=5632, vocab=32000),
    # DeepSeek-V3-like: 3 dense + 5 MoE layers, MLA, shared expert, sigmoid top-k gate, one MTP layer.
    "ds-mini": ModelConfig(
        kind="moe",
        hidden=2048,
        layers=8,
        heads=16,
        ffn=5632,
        vocab=32000,
        first_dense=3,
        experts=64,
        top_k=6,
        moe_ffn=512,
        shared_experts=1,
        q_lora_rank=768,
        kv_lora_rank=192,
        qk_nope_dim=64,
        qk_rope_dim=64,
        v_head_dim=128,
        mtp_layers=1,
    ),
    # CPU smoke-test sizes.
    "tiny-dense": ModelConfig(kind="dense", hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, ffn=128, vocab=256, dtype="float32"),
    "tiny-moe": ModelConfig(
        kind="moe",
        hidden=64,
        layers=3,
        heads=4,
        ffn=128,
        vocab=256,
        first_dense=1,
        experts=8,
        top_k=2,
        moe_ffn=32,
        shared_experts=1,
        q_lora_rank=32,
        kv_lora_rank=32,
        qk_nope_dim=16,
        qk_rope_dim=16,
        v_head_dim=32,
        mtp_layers=1,
        dtype="float32",
    ),
}


def model_from(preset: str | None, overrides: dict[str, Any]) -> ModelConfig:
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}", f"Choose one of {', '.join(PRESETS)}")
    base = PRESETS[preset] if preset else ModelConfig()
    names = {f.name for f in fields(ModelConfig)}
    clean = {k: v for k, v in overrides.items() if v is not None and k in names}
    return replace(base, **clean).validate()


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
