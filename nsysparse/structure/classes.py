"""Groups of kernel classes (the rule packs' class tokens) that structure inference reasons with, in one place."""

from __future__ import annotations

MATMUL_CLASSES = ("gemm", "grouped_gemm", "splitk", "conv", "fmha", "fmha_bwd")
"""Kernel classes that make a unit a compute unit and end a forward (its last matrix multiply is the LM head)."""
LAYER_GEMM_CLASSES = ("gemm", "splitk", "grouped_gemm")
"""Kernel classes that are a layer's matrix multiplies (the projections and MLP/expert GEMMs roles are told by)."""
EMBED_CLASSES = ("gather", "embedding")
"""Kernel classes of an embedding lookup: where a forward starts."""
TRAIN_CLASSES = ("loss", "optimizer", "norm_bwd", "fmha_bwd")
"""Kernel classes that make a loop a training loop (also any kernel named like a backward)."""
EXPERT_CLASSES = ("grouped_gemm", "ep_dispatch", "ep_combine", "moe_permute", "moe_unpermute", "moe_route")
"""Kernel classes of a MoE block's experts and their routing (a template may mark a layer MoE by them)."""
MOE_LAYER_CLASSES = (*EXPERT_CLASSES, "topk")
"""Kernel classes that make a layer found by repetition a MoE layer (the experts', or a router's top-k)."""
ATTENTION_CLASSES = ("fmha", "fmha_bwd")
"""Kernel classes of attention: a layer with attention and no MoE kernel is dense."""
BACKWARD_CLASSES = ("fmha_bwd", "norm_bwd")
"""Kernel classes of a backward pass: a layer holding them is the backward of its kind (dense_bwd, moe_bwd)."""
