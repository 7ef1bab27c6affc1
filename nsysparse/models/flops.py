"""Analytic FLOPs and bytes per op and per layer kind, for decode, prefill and training.

Conventions (Megatron-LM's `num_floating_point_operations`, current): 2 FLOPs per multiply-add; the
causal attention pairs are halved (`causal="half"`; `"full"` counts the whole s² as PaLM/nanoGPT do);
training = 3 × forward (forward, weight-gradient and data-gradient GEMMs); the MoE router GEMM is not
counted in totals (it is listed per op); MLA's q/kv norms and MTP's norms count their h-sized terms.
With these, `megatron_flops` equals Megatron's function for the same config (tests/test_flops.py).

Bytes are what an op must move through HBM at least: weights once, activations in and out, and for
attention the KV cache it reads. For MoE, only the experts that receive tokens are read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nsysparse.errors import ConfigError
from nsysparse.models.config import ModelSpec

PHASES = ("decode", "prefill", "train")


@dataclass(frozen=True)
class Workload:
    phase: str = "decode"
    batch: int = 1  # sequences per forward
    seq: int = 1  # prefill/train: tokens per sequence
    kv_len: int = 1  # decode: tokens each query attends to
    causal: str = "half"  # half | full
    weight_bytes: float = 2.0
    act_bytes: float = 2.0
    kv_bytes: float = 2.0
    tp: int = 1  # tensor parallelism: heads and FFN widths divided by tp
    ep: int = 1  # expert parallelism: each GPU holds experts/ep routed experts

    def validate(self) -> Workload:
        if self.phase not in PHASES:
            raise ConfigError(f"phase must be one of {', '.join(PHASES)}")
        if self.causal not in ("half", "full"):
            raise ConfigError("causal must be half or full")
        if min(self.batch, self.seq, self.kv_len, self.tp, self.ep) < 1:
            raise ConfigError("batch, seq, kv_len, tp and ep must be at least 1")
        return self

    @property
    def tokens(self) -> int:
        return self.batch if self.phase == "decode" else self.batch * self.seq

    @property
    def head_tokens(self) -> int:
        """Tokens the LM head projects: all of them in training, the last one per sequence otherwise."""
        return self.tokens if self.phase == "train" else self.batch

    @property
    def pairs(self) -> float:
        """Query-key pairs one attention layer computes."""
        if self.phase == "decode":
            return float(self.batch * self.kv_len)
        s = self.seq
        return self.batch * (s * s / 2 if self.causal == "half" else float(s * s))


@dataclass
class _Rows:
    rows: list[tuple[str, str, int, float, float, float, bool]]

    def add(self, kind: str, op: str, count: int, flops: float, nbytes: float, megatron: bool = True, comm: float = 0.0) -> None:
        if count > 0:
            self.rows.append((kind, op, count, float(flops), float(nbytes), float(comm), megatron))


def _gemm(t: float, k: float, n: float, w: Workload) -> tuple[float, float]:
    """FLOPs and bytes of [t, k] × [k, n]."""
    return 2.0 * t * k * n, k * n * w.weight_bytes + t * (k + n) * w.act_bytes


def _attention(r: _Rows, kind: str, n: int, spec: ModelSpec, w: Workload, attn_type: str = "full") -> None:
    t, h, a = w.tokens, spec.hidden_size, w.act_bytes
    nh = max(spec.num_attention_heads // w.tp, 1)
    r.add(kind, "attn_norm", n, 0.0, 2 * t * h * a)
    if attn_type == "linear":
        qk = spec.linear_key_head_dim * spec.linear_num_key_heads // w.tp
        v = spec.linear_value_head_dim * spec.linear_num_value_heads // w.tp
        nv = spec.linear_num_value_heads // w.tp
        per_tok = h * (2 * qk + 2 * v + 2 * nv) + spec.linear_conv_kernel_dim * (2 * qk + v) + nv * spec.linear_value_head_dim**2 * 4 + h * v
        wbytes = (h * (2 * qk + 2 * v + 2 * nv) + h * v) * w.weight_bytes
        state = w.batch * nv * spec.linear_value_head_dim * spec.linear_key_head_dim * 4  # fp32 recurrent state
        r.add(kind, "linear_attn", n, 2.0 * t * per_tok, wbytes + t * (2 * h) * a + 2 * state)
        return
    if not spec.is_mla:
        d, g = spec.head_dim, max(spec.num_key_value_heads // w.tp, 1)
        for op, width in (("q_proj", nh * d), ("k_proj", g * d), ("v_proj", g * d)):
            r.add(kind, op, n, *_gemm(t, h, width, w))
        r.add(kind, "rope", n, 0.0, 2 * t * (nh + g) * d * a)
        kv_tok = 2 * g * d * w.kv_bytes
        if w.phase != "train":
            r.add(kind, "kv_cache", n, 0.0, t * kv_tok)
        attn_bytes = (w.batch * w.kv_len * kv_tok if w.phase == "decode" else t * kv_tok) + 2 * t * nh * d * a
        r.add(kind, "fmha", n, 2.0 * 2 * nh * d * w.pairs, attn_bytes)
        r.add(kind, "o_proj", n, *_gemm(t, nh * d, h, w))
        return
    nope, rope, vd, lora = spec.qk_nope_head_dim, spec.qk_rope_head_dim, spec.v_head_dim, spec.kv_lora_rank
    qr = spec.q_lora_rank
    if qr:
        f, b = _gemm(t, h, qr + lora + rope, w)
        r.add(kind, "q_a_kv_a", n, f, b)
        r.add(kind, "q_a_norm", n, 2.0 * t * qr, 2 * t * qr * a)
        r.add(kind, "q_proj_b", n, *_gemm(t, qr, nh * (nope + rope), w))
    else:
        r.add(kind, "q_a_kv_a", n, *_gemm(t, h, lora + rope, w))
        r.add(kind, "q_proj", n, *_gemm(t, h, nh * (nope + rope), w))
    r.add(kind, "kv_a_norm", n, 2.0 * t * lora, 2 * t * lora * a)
    latent_tok = (lora + rope) * w.kv_bytes
    if w.phase == "decode":  # absorbed MLA: attention in the latent space
        r.add(kind, "bmm_uk", n, 2.0 * t * nh * nope * lora, nh * nope * lora * w.weight_bytes + t * nh * (nope + lora) * a)
        r.add(kind, "rope", n, 0.0, 2 * t * (nh + 1) * rope * a)
        r.add(kind, "kv_cache", n, 0.0, t * latent_tok)
        r.add(kind, "fmha", n, 2.0 * nh * ((lora + rope) + lora) * w.pairs, w.batch * w.kv_len * latent_tok + 2 * t * nh * (lora + rope) * a)
        r.add(kind, "bmm_uv", n, 2.0 * t * nh * lora * vd, nh * lora * vd * w.weight_bytes + t * nh * (lora + vd) * a)
    else:
        r.add(kind, "kv_proj_b", n, *_gemm(t, lora, nh * (nope + vd), w))
        r.add(kind, "rope", n, 0.0, 2 * t * (nh + 1) * rope * a)
        if w.phase == "prefill":
            r.add(kind, "kv_cache", n, 0.0, t * latent_tok)
        r.add(kind, "fmha", n, 2.0 * nh * ((nope + rope) + vd) * w.pairs, t * nh * (2 * (nope + rope) + 2 * vd) * a)
    # Megatron counts the k_pe part of the down-projection (h × rope) inside q_a_kv_a above
    r.add(kind, "o_proj", n, *_gemm(t, nh * vd, h, w))


def _mlp(r: _Rows, kind: str, mlp: str, n: int, spec: ModelSpec, w: Workload) -> None:
    t, h, a = w.tokens, spec.hidden_size, w.act_bytes
    up = 2 if spec.swiglu else 1
    r.add(kind, "ffn_norm", n, 0.0, 2 * t * h * a)
    if mlp == "dense":
        f = spec.intermediate_size // w.tp
        r.add(kind, "mlp_up", n, *_gemm(t, h, up * f, w))
        r.add(kind, "mlp_act", n, 0.0, t * (up + 1) * f * a)
        r.add(kind, "mlp_down", n, *_gemm(t, f, h, w))
        return
    e, k, f = spec.num_experts, spec.num_experts_per_tok, spec.moe_intermediate_size // w.tp
    r.add(kind, "gate_topk", n, 2.0 * t * h * e, h * e * w.weight_bytes + t * h * a + t * e * 4, megatron=False)
    fs = spec.shared_expert_intermediate_size // w.tp
    if fs:
        r.add(kind, "shared_up", n, *_gemm(t, h, up * fs, w))
        r.add(kind, "shared_act", n, 0.0, t * (up + 1) * fs * a)
        r.add(kind, "shared_down", n, *_gemm(t, fs, h, w))
    # per GPU: with expert parallelism each rank sends and receives t·k token copies (balanced routing)
    # and holds e/ep experts, of which at most min(e/ep, t·k) receive a token and have their weights read
    routed = t * k
    active = min(max(e // w.ep, 1), routed)
    comm = routed * h * a * (w.ep - 1) / w.ep
    r.add(kind, "dispatch", n, 0.0, 2 * routed * h * a, comm=comm)
    r.add(kind, "moe_up", n, 2.0 * routed * h * up * f, active * h * up * f * w.weight_bytes + routed * (h + up * f) * a)
    r.add(kind, "moe_act", n, 0.0, routed * (up + 1) * f * a)
    r.add(kind, "moe_down", n, 2.0 * routed * f * h, active * f * h * w.weight_bytes + routed * (f + h) * a)
    r.add(kind, "combine", n, 0.0, 2 * routed * h * a + t * h * a, comm=comm)


def _head(r: _Rows, kind: str, spec: ModelSpec, w: Workload) -> None:
    h, v, a = spec.hidden_size, spec.vocab_size, w.act_bytes
    ht = w.head_tokens
    r.add(kind, "final_norm", 1, 0.0, 2 * ht * h * a)
    r.add(kind, "lm_head", 1, *_gemm(ht, h, v // w.tp, w))
    if w.phase == "train":
        r.add(kind, "loss", 1, 0.0, ht * v * 4)
    else:
        r.add(kind, "sample", 1, 0.0, ht * v * 4)


def op_table(spec: ModelSpec, w: Workload) -> pd.DataFrame:
    """layer_kind, op, count_per_forward, flops, bytes, comm_bytes (one instance, one GPU), in_megatron
    (counted in totals). comm_bytes: what dispatch/combine send to other GPUs under expert parallelism."""
    w = w.validate()
    spec.validate()
    r = _Rows([])
    t, h, a = w.tokens, spec.hidden_size, w.act_bytes
    r.add("other", "embed", 1, 0.0, t * h * a)
    kinds = spec.layer_kinds()
    attn = spec.attention_types()
    combos: dict[tuple[str, str], int] = {}
    for kd, at in zip(kinds, attn):
        combos[(kd, at)] = combos.get((kd, at), 0) + 1
    for (kd, at), n in combos.items():
        _attention(r, kd, n, spec, w, at)
        _mlp(r, kd, kd, n, spec, w)
    _head(r, "other", spec, w)
    mtp = spec.mtp_layers
    if mtp:
        r.add("mtp", "mtp_norm", mtp, 2.0 * t * 2 * h, 4 * t * h * a)
        r.add("mtp", "mtp_proj", mtp, *_gemm(t, 2 * h, h, w))
        _attention(r, "mtp", mtp, spec, w, "full")
        _mlp(r, "mtp", kinds[-1], mtp, spec, w)
        r.add("mtp", "final_norm", mtp, 2.0 * t * h, 2 * w.head_tokens * h * a)
        hw = _Rows([])
        _head(hw, "mtp", spec, w)
        for kind, op, _, f, b, c, meg in hw.rows:
            if op != "final_norm":
                r.add(kind, op, mtp, f, b, meg, c)
    return pd.DataFrame(r.rows, columns=["layer_kind", "op", "count_per_forward", "flops", "bytes", "comm_bytes", "in_megatron"])


def forward_flops(spec: ModelSpec, w: Workload, include_router: bool = False) -> float:
    df = op_table(spec, w)
    if not include_router:
        df = df[df["in_megatron"]]
    return float((df["count_per_forward"] * df["flops"]).sum())


def step_flops(spec: ModelSpec, w: Workload, recompute: bool = False, include_router: bool = False) -> float:
    """FLOPs of one step: a forward for inference; forward + backward (×3) for training, ×4 with full
    activation recomputation (the hardware FLOPs of recompute, HFU rather than MFU)."""
    f = forward_flops(spec, w, include_router)
    if w.phase != "train":
        return f
    return f * (4 if recompute else 3)


def megatron_flops(spec: ModelSpec, batch: int, seq: int) -> float:
    """Megatron-LM's num_floating_point_operations(args, batch) for this config (training, causal-halved)."""
    return step_flops(spec, Workload("train", batch=batch, seq=seq))


def tflops_per_gpu(flops: float, seconds: float | np.ndarray, gpus: int = 1) -> float | np.ndarray:
    """TFLOP/s per GPU: `flops` done in `seconds` (a step period, or an array of them) spread over `gpus`."""
    return flops / seconds / gpus / 1e12
