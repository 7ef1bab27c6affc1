"""Torch models for the workload generator (imported only when a workload runs).

The shape is a `nsysparse.models.config.ModelSpec`; dtype and RMSNorm epsilon come from the RunConfig.
Attention: GQA (Llama-like: q/k/v projections, RoPE, SDPA, o_proj) or, when the spec has a KV latent
(kv_lora_rank), DeepSeek-V3-like MLA (absorbed in decode). MLP per layer kind (ModelSpec.layer_kinds):
SwiGLU dense, or MoE with a sigmoid top-k gate, an optional shared expert, grouped-GEMM routed experts
with explicit dispatch (permute) and combine (weighted un-permute). MTP modules (inference only), LM head
and greedy sampling. (llama-mini: GQA, dense layers; ds-mini: MLA, 3 dense + 5 MoE layers, one MTP.)

Every logical op runs inside `ctx.ann.op(<vocabulary name>)`, and its residual add (if any) runs inside
the op that produces it (o_proj, mlp_down, combine), so an op's kernels are contiguous in the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from nsysparse.models.config import ModelSpec
from nsysparse.workload.annotate import Annotator
from nsysparse.workload.config import RunConfig
from nsysparse.workload.plan import mtp_layers_run


@dataclass
class Ctx:
    ann: Annotator
    phase: str
    cos: torch.Tensor  # [S, rot_dim] for the positions of this forward
    sin: torch.Tensor
    pos: int  # first cache position written by this forward
    kv_len: int  # decode: keys attended per query


def rope_tables(max_pos: int, dim: int, device: torch.device, dtype: torch.dtype, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    freqs = torch.outer(torch.arange(max_pos, device=device, dtype=torch.float32), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (self.dim,), self.weight, self.eps)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """One query token per sequence: fold each KV group's query heads into the query length, so GQA/MQA
    runs as plain multi-head flash attention (what FlashMLA and flash-decoding do). q [B,H,1,D], k/v [B,G,T,D]."""
    b, h, s, d = q.shape
    g = k.shape[1]
    qf = q.reshape(b, g, (h // g) * s, d)
    out = F.scaled_dot_product_attention(qf, k, v, scale=scale)
    return out.reshape(b, h, s, v.shape[-1])


class DenseAttention(nn.Module):
    def __init__(self, m: ModelSpec, run: RunConfig, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.m = m
        nh, g, d, h = m.num_attention_heads, m.num_key_value_heads, m.head_dim, m.hidden_size
        self.q_proj = nn.Linear(h, nh * d, bias=False)
        self.k_proj = nn.Linear(h, g * d, bias=False)
        self.v_proj = nn.Linear(h, g * d, bias=False)
        self.o_proj = nn.Linear(nh * d, h, bias=False)
        self.k_cache = self.v_cache = None
        if run.phase != "train":
            t = run.kv_len if run.phase == "decode" else run.seq
            shape = (run.batch, g, t, d)
            self.k_cache = torch.randn(shape, device=device, dtype=dtype)
            self.v_cache = torch.randn(shape, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, ctx: Ctx, residual: torch.Tensor) -> torch.Tensor:
        m, a = self.m, ctx.ann
        b, s, _ = x.shape
        nh, g, d = m.num_attention_heads, m.num_key_value_heads, m.head_dim
        with a.op("q_proj"):
            q = self.q_proj(x).view(b, s, nh, d).transpose(1, 2)
        with a.op("k_proj"):
            k = self.k_proj(x).view(b, s, g, d).transpose(1, 2)
        with a.op("v_proj"):
            v = self.v_proj(x).view(b, s, g, d).transpose(1, 2)
        with a.op("rope"):
            q = apply_rope(q, ctx.cos, ctx.sin)
            k = apply_rope(k, ctx.cos, ctx.sin)
        if ctx.phase != "train":
            assert self.k_cache is not None and self.v_cache is not None
            with a.op("kv_cache"):
                self.k_cache[:, :, ctx.pos : ctx.pos + s] = k
                self.v_cache[:, :, ctx.pos : ctx.pos + s] = v
        with a.op("fmha"):
            if ctx.phase == "decode":
                assert self.k_cache is not None and self.v_cache is not None
                o = decode_attention(q, self.k_cache[:, :, : ctx.kv_len], self.v_cache[:, :, : ctx.kv_len])
            else:
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=g != nh)
        with a.op("o_proj"):
            return residual + self.o_proj(o.transpose(1, 2).reshape(b, s, nh * d))


class MLA(nn.Module):
    """Multi-head latent attention. Decode uses the absorbed form (attention over the latent cache)."""

    def __init__(self, m: ModelSpec, run: RunConfig, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.m = m
        nh, nope, rope, lora, vd = m.num_attention_heads, m.qk_nope_head_dim, m.qk_rope_head_dim, m.kv_lora_rank, m.v_head_dim
        assert m.q_lora_rank, "the generator's MLA has a query latent (check_buildable)"
        self.q_lora = m.q_lora_rank
        self.wa = nn.Linear(m.hidden_size, self.q_lora + lora + rope, bias=False)
        self.q_a_norm = RMSNorm(self.q_lora, run.rms_eps)
        self.kv_a_norm = RMSNorm(lora, run.rms_eps)
        self.wq_b = nn.Linear(self.q_lora, nh * (nope + rope), bias=False)
        self.wo = nn.Linear(nh * vd, m.hidden_size, bias=False)
        self.scale = (nope + rope) ** -0.5
        if run.phase == "decode":
            self.w_uk = nn.Parameter(torch.randn(nh, nope, lora) / nope**0.5)
            self.w_uv = nn.Parameter(torch.randn(nh, lora, vd) / lora**0.5)
        else:
            self.wkv_b = nn.Linear(lora, nh * (nope + vd), bias=False)
        self.latent = None
        if run.phase != "train":
            t = run.kv_len if run.phase == "decode" else run.seq
            self.latent = torch.randn(run.batch, t, lora + rope, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, ctx: Ctx, residual: torch.Tensor) -> torch.Tensor:
        m, a = self.m, ctx.ann
        b, s, _ = x.shape
        nh, nope, rope, lora, vd = m.num_attention_heads, m.qk_nope_head_dim, m.qk_rope_head_dim, m.kv_lora_rank, m.v_head_dim
        with a.op("q_a_kv_a"):
            q_a, kv_a, k_pe = self.wa(x).split([self.q_lora, lora, rope], dim=-1)
        with a.op("q_a_norm"):
            q_a = self.q_a_norm(q_a)
        with a.op("kv_a_norm"):
            c = self.kv_a_norm(kv_a)
        with a.op("q_proj_b"):
            q_nope, q_pe = self.wq_b(q_a).view(b, s, nh, nope + rope).split([nope, rope], dim=-1)
        if ctx.phase == "decode":
            with a.op("bmm_uk"):
                q_lat = torch.bmm(q_nope.reshape(b * s, nh, nope).transpose(0, 1), self.w_uk)  # [nh, b*s, lora]
            with a.op("rope"):
                q_pe = apply_rope(q_pe.transpose(1, 2), ctx.cos, ctx.sin)  # [b, nh, s, rope]
                k_pe = apply_rope(k_pe.unsqueeze(1), ctx.cos, ctx.sin)  # [b, 1, s, rope]
            assert self.latent is not None
            with a.op("kv_cache"):
                self.latent[:, ctx.pos : ctx.pos + s] = torch.cat((c, k_pe[:, 0]), dim=-1)
            with a.op("fmha"):
                q_full = torch.cat((q_lat.transpose(0, 1).reshape(b, s, nh, lora).transpose(1, 2), q_pe), dim=-1)
                kv = self.latent[:, None, : ctx.kv_len]
                o_lat = decode_attention(q_full, kv, kv, scale=self.scale)[..., :lora]  # [b, nh, s, lora]
            with a.op("bmm_uv"):
                o = torch.bmm(o_lat.transpose(1, 2).reshape(b * s, nh, lora).transpose(0, 1), self.w_uv)  # [nh, b*s, v]
                o = o.transpose(0, 1).reshape(b, s, nh * vd)
        else:
            with a.op("kv_proj_b"):
                k_nope, v = self.wkv_b(c).view(b, s, nh, nope + vd).split([nope, vd], dim=-1)
            with a.op("rope"):
                q_pe = apply_rope(q_pe.transpose(1, 2), ctx.cos, ctx.sin)
                k_pe = apply_rope(k_pe.unsqueeze(1), ctx.cos, ctx.sin)
            if ctx.phase == "prefill":
                assert self.latent is not None
                with a.op("kv_cache"):
                    self.latent[:, :s] = torch.cat((c, k_pe[:, 0]), dim=-1)
            with a.op("fmha"):
                q = torch.cat((q_nope.transpose(1, 2), q_pe), dim=-1)
                k = torch.cat((k_nope.transpose(1, 2), k_pe.expand(b, nh, s, rope)), dim=-1)
                o = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), is_causal=True, scale=self.scale)
                o = o.transpose(1, 2).reshape(b, s, nh * vd)
        with a.op("o_proj"):
            return residual + self.wo(o)


class DenseMLP(nn.Module):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(hidden, 2 * ffn, bias=False)
        self.down = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x: torch.Tensor, ctx: Ctx, residual: torch.Tensor) -> torch.Tensor:
        a = ctx.ann
        with a.op("mlp_up"):
            gu = self.gate_up(x)
        with a.op("mlp_act"):
            g, u = gu.chunk(2, dim=-1)
            act = F.silu(g) * u
        with a.op("mlp_down"):
            return residual + self.down(act)


def pick_grouped_mm(device: torch.device, dtype: torch.dtype) -> str:
    """Which grouped-GEMM path works here: torch._grouped_mm with row- or column-major expert weights,
    or a per-expert loop (which syncs with the host, so it cannot be captured in a CUDA graph)."""
    if not hasattr(torch, "_grouped_mm"):
        return "loop"
    a = torch.randn(64, 32, device=device, dtype=dtype)
    w = torch.randn(4, 32, 48, device=device, dtype=dtype)
    offs = torch.tensor([16, 32, 48, 64], device=device, dtype=torch.int32)
    ref = torch.cat([a[i * 16 : (i + 1) * 16].float() @ w[i].float() for i in range(4)])
    for layout, wl in (("row", w), ("col", w.transpose(-2, -1).contiguous().transpose(-2, -1))):
        try:
            got = torch._grouped_mm(a, wl, offs=offs)
        except Exception:  # unsupported layout/dtype/arch
            continue
        if torch.allclose(got.float(), ref, rtol=5e-2, atol=5e-1):
            return f"torch._grouped_mm/{layout}"
    return "loop"


class MoE(nn.Module):
    def __init__(self, m: ModelSpec, impl: str) -> None:
        super().__init__()
        self.m = m
        self.impl = impl
        e, h, f = m.num_experts, m.hidden_size, m.moe_intermediate_size
        self.gate = nn.Linear(h, e, bias=False)
        self.register_buffer("e_bias", torch.zeros(e))
        fs = m.shared_expert_intermediate_size
        if fs:
            self.shared_up = nn.Linear(h, 2 * fs, bias=False)
            self.shared_down = nn.Linear(fs, h, bias=False)
        # Expert weights as [E, K, N]; column-major layouts are stored [E, N, K] and viewed transposed.
        self.col = impl.endswith("/col")
        shape13, shape2 = (e, h, 2 * f), (e, f, h)
        if self.col:
            shape13, shape2 = (e, 2 * f, h), (e, h, f)
        self.w13 = nn.Parameter(torch.randn(shape13) / h**0.5)
        self.w2 = nn.Parameter(torch.randn(shape2) / f**0.5)

    def _grouped(self, x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
        if self.col:
            w = w.transpose(-2, -1)
        if self.impl.startswith("torch._grouped_mm"):
            return torch._grouped_mm(x, w, offs=offs)
        ends = offs.tolist()  # host copy: the loop path cannot be captured in a CUDA graph
        outs, start = [], 0
        for e, end in enumerate(ends):
            outs.append(x[start:end] @ w[e])
            start = end
        return torch.cat(outs)

    def forward(self, x: torch.Tensor, ctx: Ctx, residual: torch.Tensor) -> torch.Tensor:
        m, a = self.m, ctx.ann
        b, s, h = x.shape
        flat_x = x.reshape(b * s, h)
        with a.op("gate_topk"):
            scores = self.gate(flat_x).float().sigmoid()
            idx = (scores + self.e_bias).topk(m.num_experts_per_tok, dim=-1).indices
            weights = scores.gather(1, idx)
            weights = weights / weights.sum(dim=-1, keepdim=True)
        shared = None
        if m.shared_expert_intermediate_size:
            with a.op("shared_up"):
                su = self.shared_up(flat_x)
            with a.op("shared_act"):
                g, u = su.chunk(2, dim=-1)
                sa = F.silu(g) * u
            with a.op("shared_down"):
                shared = self.shared_down(sa)
        with a.op("dispatch"):
            flat_idx = idx.flatten()
            order = torch.argsort(flat_idx, stable=True)
            token_of = order // m.num_experts_per_tok
            xs = flat_x.index_select(0, token_of)
            counts = torch.zeros(m.num_experts, device=x.device, dtype=torch.int32).scatter_add_(0, flat_idx, torch.ones_like(flat_idx, dtype=torch.int32))
            offs = counts.cumsum(0, dtype=torch.int32)
        with a.op("moe_up"):
            hu = self._grouped(xs, self.w13, offs)
        with a.op("moe_act"):
            g, u = hu.chunk(2, dim=-1)
            act = F.silu(g) * u
        with a.op("moe_down"):
            y = self._grouped(act, self.w2, offs)
        with a.op("combine"):
            y = y * weights.flatten().index_select(0, order).unsqueeze(-1).to(y.dtype)
            out = torch.zeros_like(flat_x).index_add_(0, token_of, y)
            if shared is not None:
                out = out + shared
            return residual + out.view(b, s, h)


class Block(nn.Module):
    def __init__(self, name: str, kind: str, m: ModelSpec, run: RunConfig, device: torch.device, dtype: torch.dtype, impl: str) -> None:
        super().__init__()
        self.name = name
        self.attn_norm = RMSNorm(m.hidden_size, run.rms_eps)
        self.attn = MLA(m, run, device, dtype) if m.is_mla else DenseAttention(m, run, device, dtype)
        self.ffn_norm = RMSNorm(m.hidden_size, run.rms_eps)
        self.mlp = DenseMLP(m.hidden_size, m.intermediate_size) if kind == "dense" else MoE(m, impl)

    def body(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        a = ctx.ann
        with a.op("attn_norm"):
            h = self.attn_norm(x)
        x = self.attn(h, ctx, residual=x)
        with a.op("ffn_norm"):
            h = self.ffn_norm(x)
        return self.mlp(h, ctx, residual=x)

    def forward(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        with ctx.ann.layer(self.name):
            return self.body(x, ctx)


class MTP(nn.Module):
    """DeepSeek-V3 multi-token prediction module: predicts the token after the next one."""

    def __init__(self, name: str, m: ModelSpec, run: RunConfig, device: torch.device, dtype: torch.dtype, impl: str) -> None:
        super().__init__()
        self.name = name
        self.enorm = RMSNorm(m.hidden_size, run.rms_eps)
        self.hnorm = RMSNorm(m.hidden_size, run.rms_eps)
        self.eh_proj = nn.Linear(2 * m.hidden_size, m.hidden_size, bias=False)
        self.block = Block(name, m.layer_kinds()[-1], m, run, device, dtype, impl)

    def forward(self, hidden: torch.Tensor, tokens: torch.Tensor, tok: torch.Tensor, ctx: Ctx, model: LM) -> torch.Tensor:
        a = ctx.ann
        with a.layer(self.name):
            with a.op("mtp_norm"):
                # the MTP input is the sequence shifted by one, ending with the token just sampled
                next_tokens = tok[:, None] if tokens.shape[1] == 1 else torch.cat((tokens[:, 1:], tok[:, None]), dim=1)
                e = self.enorm(model.embed(next_tokens))
                hh = self.hnorm(hidden)
            with a.op("mtp_proj"):
                x = self.eh_proj(torch.cat((hh, e), dim=-1))
            x = self.block.body(x, ctx)
            return model.head(x, ctx)


class LM(nn.Module):
    def __init__(self, m: ModelSpec, run: RunConfig, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.m = m
        self.impl = pick_grouped_mm(device, dtype) if m.is_moe else "none"
        self.embed = nn.Embedding(m.vocab_size, m.hidden_size)
        kinds = m.layer_kinds()
        self.blocks = nn.ModuleList(Block(f"layer_{i}_{k}", k, m, run, device, dtype, self.impl) for i, k in enumerate(kinds))
        self.final_norm = RMSNorm(m.hidden_size, run.rms_eps)
        self.lm_head = nn.Linear(m.hidden_size, m.vocab_size, bias=False)
        n_mtp = mtp_layers_run(m, run)
        self.mtps = nn.ModuleList(MTP(f"layer_{len(kinds) + j}_mtp", m, run, device, dtype, self.impl) for j in range(n_mtp))

    def head(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        a = ctx.ann
        with a.op("final_norm"):
            h = self.final_norm(x[:, -1])
        with a.op("lm_head"):
            logits = self.lm_head(h)
        with a.op("sample"):
            return logits.argmax(dim=-1)

    def trunk(self, tokens: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        with ctx.ann.op("embed"):
            x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x, ctx)
        return x

    def generate_step(self, tokens: torch.Tensor, ctx: Ctx) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One inference forward: next token (greedy) and the MTP draft tokens."""
        x = self.trunk(tokens, ctx)
        tok = self.head(x, ctx)
        drafts = [mtp(x, tokens, tok, ctx, self) for mtp in self.mtps]
        return tok, drafts

    def train_loss(self, tokens: torch.Tensor, targets: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        a = ctx.ann
        x = self.trunk(tokens, ctx)
        with a.op("final_norm"):
            h = self.final_norm(x)
        with a.op("lm_head"):
            logits = self.lm_head(h)
        with a.op("loss"):
            return F.cross_entropy(logits.view(-1, self.m.vocab_size).float(), targets.view(-1))


def build(m: ModelSpec, run: RunConfig, device: torch.device, dtype: torch.dtype) -> LM:
    model = LM(m, run, device, dtype)
    return model.to(device=device, dtype=dtype)


def describe_impl(model: LM) -> dict[str, Any]:
    return {"grouped_gemm": model.impl}
