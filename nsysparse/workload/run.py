"""Run a workload: warm up, then (inside cudaProfilerStart/Stop) N measured steps with host gaps.

`python -m nsysparse.workload.run CONFIG.json` is what `nsysparse generate --profile` runs under nsys;
it writes the manifest (without the nsys fields, which the parent adds) beside the config.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nsysparse.models.config import ModelSpec, spec_dict
from nsysparse.workload.config import RunConfig, run_from, to_dict
from nsysparse.workload.plan import flops_summary, structure


def environment(device: Any) -> dict[str, Any]:
    """Software and GPU facts for the manifest. No host name, user or environment variables."""
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, sm_count=props.multi_processor_count, gpu_memory_gib=round(props.total_memory / 2**30, 1))
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            env["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    else:
        env.update(gpu=None, driver=None)
    return env


def execute(spec: ModelSpec, run_cfg: RunConfig) -> dict[str, Any]:
    """Run the workload in this process. Returns the manifest (plus `nvtx_record` for tests)."""
    import torch

    from nsysparse.workload import models
    from nsysparse.workload.annotate import Annotator

    device = torch.device(run_cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        from nsysparse.errors import ConfigError

        raise ConfigError("--device cuda was asked for but torch sees no CUDA GPU", "Use --device cpu for a smoke run")
    torch.manual_seed(run_cfg.seed)
    dtype = getattr(torch, run_cfg.dtype)
    on_gpu = device.type == "cuda"
    ann = Annotator(run_cfg.nvtx, emit=on_gpu)
    model = models.build(spec, run_cfg, device, dtype)
    rot = spec.qk_rope_head_dim if spec.is_mla else spec.head_dim
    max_pos = run_cfg.kv_len if run_cfg.phase == "decode" else run_cfg.seq
    cos, sin = models.rope_tables(max_pos, rot, device, dtype)
    b = run_cfg.batch
    if run_cfg.phase == "decode":
        pos = run_cfg.kv_len - 1  # every step overwrites the last slot: same work each step, graph-capturable
        ctx = models.Ctx(ann, "decode", cos[pos : pos + 1], sin[pos : pos + 1], pos, run_cfg.kv_len)
        tokens = torch.randint(0, spec.vocab_size, (b, 1), device=device)
    else:
        ctx = models.Ctx(ann, run_cfg.phase, cos, sin, 0, run_cfg.seq)
        tokens = torch.randint(0, spec.vocab_size, (b, run_cfg.seq), device=device)
    targets = torch.randint(0, spec.vocab_size, tokens.shape, device=device)
    optimizer = None
    if run_cfg.phase == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=on_gpu, foreach=not on_gpu)

    def infer_once() -> torch.Tensor:
        tok, drafts = model.generate_step(tokens, ctx)
        with ann.op("sample"):  # token bookkeeping: feed the sampled token back, gather the drafts
            if run_cfg.phase == "decode":
                tokens.copy_(tok[:, None])
            return torch.stack([tok, *drafts]) if drafts else tok[None]

    def train_once() -> torch.Tensor:
        assert optimizer is not None
        loss = model.train_loss(tokens, targets, ctx)
        with ann.op("backward"):
            loss.backward()
        with ann.op("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    step_fn = train_once if run_cfg.phase == "train" else infer_once
    grad = torch.enable_grad() if run_cfg.phase == "train" else torch.inference_mode()
    step_name = structure(spec, run_cfg).step_name
    gap_s = run_cfg.host_gap_ms / 1000.0
    timings: list[float] = []
    with grad:
        ann.enabled = False
        for _ in range(run_cfg.warmup):
            step_fn().cpu()
        if on_gpu:
            torch.cuda.synchronize()
        ann.enabled = True
        if on_gpu:
            torch.cuda.profiler.start()
        graph = None
        if run_cfg.cuda_graph:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # layer NVTX ranges are emitted here, at capture time
                static_out = step_fn()
            torch.cuda.synchronize()
        for i in range(run_cfg.steps):
            t0 = time.perf_counter()
            with ann.step(step_name.format(i=i)):
                if graph is not None:
                    graph.replay()
                    static_out.cpu()  # device-to-host copy of the sampled tokens (synchronizes)
                else:
                    step_fn().cpu()
            timings.append(time.perf_counter() - t0)
            if gap_s and i < run_cfg.steps - 1:
                with ann.host("host_gap"):
                    time.sleep(gap_s)  # host-side scheduler work: no CUDA calls
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.profiler.stop()
    manifest = build_manifest(spec, run_cfg, environment(device), model.impl)
    manifest["host_step_seconds"] = [round(t, 6) for t in timings]
    manifest["nvtx_record"] = ann.record
    return manifest


def build_manifest(spec: ModelSpec, run_cfg: RunConfig, env: dict[str, Any], grouped_gemm: str) -> dict[str, Any]:
    from nsysparse import __version__

    st = structure(spec, run_cfg)
    layer_ranges = "none"
    if run_cfg.nvtx in ("layer", "op"):
        layer_ranges = "once, at CUDA-graph capture time" if run_cfg.cuda_graph else "every step"
    return {
        "generator": f"nsysparse {__version__}",
        "model": spec_dict(spec),
        "run": to_dict(run_cfg),
        "environment": env,
        "grouped_gemm": grouped_gemm,
        "structure": {
            "step_name": st.step_name,
            "steps": st.steps,
            "nvtx": run_cfg.nvtx,
            "layer_ranges": layer_ranges,
            "layer_names": st.layer_names,
            "layer_kinds_per_step": st.layer_kinds_per_step,
            "op_sequence": st.op_sequence,
            "other_ops": st.other_ops,
        },
        "injected": {
            "host_gap_ms": run_cfg.host_gap_ms,
            "gaps": max(run_cfg.steps - 1, 0) if run_cfg.host_gap_ms else 0,
            "nvtx_range": "host_gap" if run_cfg.host_gap_ms and run_cfg.nvtx != "none" else None,
            "cause": "host work (time.sleep between steps, no CUDA calls)" if run_cfg.host_gap_ms else None,
        },
        "tokens_per_step": run_cfg.tokens_per_step,
        "flops": flops_summary(spec, run_cfg),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m nsysparse.workload.run CONFIG.json", file=sys.stderr)
        return 2
    from nsysparse.errors import NsysparseError

    cfg_path = Path(args[0])
    cfg = json.loads(cfg_path.read_text())
    try:
        manifest = execute(*run_from(cfg))
    except NsysparseError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    manifest.pop("nvtx_record", None)
    (cfg_path.parent / "manifest.partial.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
