"""Run a HuggingFace transformers workload (code we did not write) for fixture capture.

`python -m nsysparse.workload.hf --workload hf_llama_generate --nvtx modules --manifest manifest.json`
builds a transformers model from a small config with random weights (`torch.manual_seed`), runs a
generate or train protocol and writes a manifest (model class and config, protocol, expected
structure, software versions). The whole process is meant to be profiled, set-up and warm-up included.

`--nvtx none` emits no NVTX at all (the *bare* capture). `--nvtx modules` (the *twin*) pushes one NVTX
range per module call from forward pre/post hooks on every module: the root module's range is
`forward`, the others carry their `named_modules()` name (`model.layers.3.self_attn.q_proj`). Each
generate() call is wrapped in `generate`, each training iteration in `train_step`, with `backward` and
`optimizer_step` inside it. Hooks add no kernels, so the twin launches what the bare run launches and
its ranges label the bare trace by launch order.

Module hooks return at once while torch.compile traces (`torch.compiler.is_compiling()`), so a compiled
region gets no module ranges and its graph is the bare run's; the compiled decode call that transformers
builds (`get_compiled_call`) is wrapped in a `forward` range from outside instead.

torch and transformers are imported inside functions: the analyzer package imports without them. The
module imports nothing from nsysparse, so it also runs as a lone file (`python3 hf.py ...`).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Small configs. Token ids: pad 0, bos 1, eos 2 in every family (min_new_tokens masks eos, so each
# generate call gives exactly max_new_tokens tokens).
_TOKENS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
_ATTN = {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 8192, "max_position_embeddings": 1024}
FAMILIES: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    # family -> candidates (config class, model class, overrides); the first one transformers has is used
    "llama": [("LlamaConfig", "LlamaForCausalLM", {**_ATTN, "intermediate_size": 1408, **_TOKENS})],
    "moe": [
        (
            "Qwen3MoeConfig",
            "Qwen3MoeForCausalLM",
            {
                **_ATTN,
                "intermediate_size": 1408,
                "moe_intermediate_size": 256,
                "num_experts": 8,
                "num_experts_per_tok": 2,
                "decoder_sparse_step": 1,
                "mlp_only_layers": [0],
                "norm_topk_prob": True,
                **_TOKENS,
            },
        ),
        ("MixtralConfig", "MixtralForCausalLM", {**_ATTN, "intermediate_size": 256, "num_local_experts": 8, "num_experts_per_tok": 2, **_TOKENS}),
    ],
}
_GENERATE = {"protocol": "generate", "batch": 4, "prompt_len": 64, "new_tokens": 12, "warmup_calls": 2, "measured_calls": 1}
_TRAIN = {"protocol": "train", "batch": 4, "seq": 256, "warmup_iters": 2, "measured_iters": 6, "lr": 1e-4}
WORKLOADS: dict[str, dict[str, Any]] = {
    "hf_llama_generate": {"family": "llama", **_GENERATE, "compile": False},
    "hf_qwen3moe_generate": {"family": "moe", **_GENERATE, "compile": False},
    "hf_llama_train": {"family": "llama", **_TRAIN, "compile": False},
    # transformers' own auto-compile: a static cache makes generate() run the decode steps through
    # torch.compile(model.__call__, mode="reduce-overhead") (CUDA graphs); the prefill stays eager
    "hf_llama_compile_generate": {"family": "llama", **_GENERATE, "compile": True, "cache_implementation": "static"},
    # the same auto-compile path with torch.compile's "cudagraphs" backend: the decode steps' aten kernels
    # (no inductor, no Triton) replayed from CUDA graphs
    "hf_llama_cudagraph_generate": {"family": "llama", **_GENERATE, "compile": True, "cache_implementation": "static", "compile_backend": "cudagraphs"},
    # the eager twin program of the CUDA-graph one: the same static cache, auto-compile disabled
    "hf_llama_static_generate": {"family": "llama", **_GENERATE, "compile": False, "cache_implementation": "static", "disable_compile": True},
}
NVTX_MODES = ("functions", "modules", "none")
# `functions`: module ranges (forward and backward) plus ranges around the functions a module calls that
# launch kernels of their own (rotary embedding, KV-cache update, the attention function): the finest truth
# hooks can give without editing the model code.
FUNCTION_RANGES = ("apply_rotary_pos_emb",)  # module-level functions of the modeling file, wrapped where found


class Nvtx:
    """NVTX push/pop. On CUDA torch.cuda.nvtx; elsewhere (CPU smoke runs, tests) a recorder of the same calls."""

    def __init__(self, enabled: bool, on_gpu: bool) -> None:
        self.enabled = enabled
        self.record: list[tuple[str, str]] = []  # ("push", text) / ("pop", "") when not on the GPU
        self._push: Callable[[str], Any]
        self._pop: Callable[[], Any]
        if on_gpu:
            import torch

            self._push, self._pop = torch.cuda.nvtx.range_push, torch.cuda.nvtx.range_pop
        else:
            self._push = lambda text: self.record.append(("push", text))
            self._pop = lambda: self.record.append(("pop", ""))

    def push(self, text: str) -> None:
        if self.enabled:
            self._push(text)

    def pop(self) -> None:
        if self.enabled:
            self._pop()

    def range(self, text: str) -> Any:
        import contextlib

        @contextlib.contextmanager
        def cm() -> Any:
            self.push(text)
            try:
                yield
            finally:
                self.pop()

        return cm()


def install_module_ranges(model: Any, nvtx: Nvtx, root_name: str = "forward", labels: list[str] | None = None) -> int:
    """Forward pre/post hooks on every module: push its named_modules() name (the root: `root_name`), pop after.

    The hooks do nothing while torch.compile traces, so compiled graphs are those of the bare run. A post
    hook pops only the range its own pre hook pushed (a graph break can run a post hook whose pre hook was
    traced away). `labels`, when given, is kept equal to the open module ranges' texts (innermost last).
    Returns the number of modules hooked.
    """
    import torch

    labels = [] if labels is None else labels
    stack: list[int] = []
    n = 0
    for name, module in model.named_modules():
        label = name or root_name

        def pre(mod: Any, args: Any, label: str = label) -> None:
            if torch.compiler.is_compiling():
                return
            stack.append(id(mod))
            labels.append(label)
            nvtx.push(label)

        def post(mod: Any, args: Any, output: Any) -> None:
            if torch.compiler.is_compiling():
                return
            if stack and stack[-1] == id(mod):
                stack.pop()
                labels.pop()
                nvtx.pop()

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post, always_call=True)
        n += 1
    return n


def install_backward_ranges(model: Any, nvtx: Nvtx) -> int:
    """Full backward pre/post hooks on every non-root module: a range `<named_modules() name>.backward` from the
    moment its output gradients are ready until its input gradients are computed (on autograd's thread).
    Nested like the forward calls, reversed. Returns the number of modules hooked."""
    stack: list[int] = []
    n = 0
    for name, module in model.named_modules():
        if not name:
            continue  # the root returns a ModelOutput, which backward hooks cannot wrap

        def pre(mod: Any, grad_output: Any, label: str = name + ".backward") -> None:
            stack.append(id(mod))
            nvtx.push(label)

        def post(mod: Any, grad_input: Any, grad_output: Any) -> None:
            if stack and stack[-1] == id(mod):
                stack.pop()
                nvtx.pop()

        module.register_full_backward_pre_hook(pre)
        module.register_full_backward_hook(post)
        n += 1
    return n


def install_function_ranges(model: Any, nvtx: Nvtx, labels: list[str]) -> list[str]:
    """Ranges around the functions a module calls that launch kernels of their own, named
    `<enclosing module range>.<function>`: the modeling file's FUNCTION_RANGES, the attention function
    (`ALL_ATTENTION_FUNCTIONS[<implementation>]`) and `Cache.update` (named `Cache.update`). Skipped while
    torch.compile traces, like the module hooks. Returns the names wrapped."""
    import functools
    import sys as _sys

    import torch
    import transformers
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def wrap(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if torch.compiler.is_compiling():
                return fn(*args, **kwargs)
            nvtx.push(f"{labels[-1] if labels else 'forward'}.{name}")
            try:
                return fn(*args, **kwargs)
            finally:
                nvtx.pop()

        return inner

    wrapped: list[str] = []
    modeling = _sys.modules[type(model).__module__]
    for name in FUNCTION_RANGES:
        if callable(getattr(modeling, name, None)):
            setattr(modeling, name, wrap(getattr(modeling, name), name))
            wrapped.append(name)
    impl = getattr(model.config, "_attn_implementation", None)
    if impl and impl in ALL_ATTENTION_FUNCTIONS:
        fn = ALL_ATTENTION_FUNCTIONS[impl]
        ALL_ATTENTION_FUNCTIONS[impl] = wrap(fn, fn.__name__)
        wrapped.append(fn.__name__)
    cache: Any = transformers.Cache
    cache.update = wrap(cache.update, "Cache.update")
    wrapped.append("Cache.update")
    return wrapped


def wrap_compiled_call(model: Any, nvtx: Nvtx, label: str = "forward") -> None:
    """Wrap the compiled callable transformers' generate() builds (`get_compiled_call`) in an NVTX range, from outside."""
    original = model.get_compiled_call

    def get_compiled_call(compile_config: Any) -> Callable[..., Any]:
        compiled = original(compile_config)

        def call(*args: Any, **kwargs: Any) -> Any:
            nvtx.push(label)
            try:
                return compiled(*args, **kwargs)
            finally:
                nvtx.pop()

        return call

    model.get_compiled_call = get_compiled_call


def resolve_family(family: str) -> tuple[str, str, dict[str, Any]]:
    import transformers

    for cfg_name, model_name, overrides in FAMILIES[family]:
        if hasattr(transformers, cfg_name) and hasattr(transformers, model_name):
            return cfg_name, model_name, overrides
    raise SystemExit(f"transformers {transformers.__version__} has none of {[m for _, m, _ in FAMILIES[family]]}")


def environment(on_gpu: bool) -> dict[str, Any]:
    """Software and GPU facts for the manifest. No host name, user, path or environment variable."""
    import torch
    import transformers

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if on_gpu:
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, sm_count=props.multi_processor_count, gpu_memory_gib=round(props.total_memory / 2**30, 1))
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], check=False, capture_output=True, text=True, timeout=20)
            env["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def expected_structure(spec: dict[str, Any], num_layers: int, dense_layers: list[int]) -> dict[str, Any]:
    layers = {"per_forward": num_layers, "dense": dense_layers, "moe": [i for i in range(num_layers) if i not in dense_layers]}
    if spec["protocol"] == "generate":
        calls = spec["warmup_calls"] + spec["measured_calls"]
        per_call = spec["new_tokens"]  # one prefill forward gives the first token, one decode forward each further token
        return {
            "calls": calls,
            "warmup_calls": spec["warmup_calls"],
            "call_range": "generate",
            "forwards_per_call": per_call,
            "forwards": calls * per_call,
            "prefill_forwards": calls,
            "decode_forwards": calls * (per_call - 1),
            "tokens_per_call": per_call,
            "layers": layers,
        }
    iters = spec["warmup_iters"] + spec["measured_iters"]
    return {
        "calls": iters,
        "warmup_calls": spec["warmup_iters"],
        "call_range": "train_step",
        "forwards_per_call": 1,
        "forwards": iters,
        "backwards": iters,
        "optimizer_steps": iters,
        "layers": layers,
    }


def truth_description(spec: dict[str, Any], nvtx_mode: str) -> dict[str, Any]:
    if nvtx_mode == "none":
        return {"nvtx": "none", "text": "no NVTX at all (profiled with --trace=cuda); labels come from the twin by launch order"}
    ranges = {
        "forward": "one range per top-level forward (the root module's forward pre/post hooks)",
        "module": "one range per module call, text = its named_modules() name (model.layers.N..., lm_head); nested as called",
    }
    ranges["generate" if spec["protocol"] == "generate" else "train_step"] = "one range per generate() call / training iteration"
    if spec["protocol"] == "train":
        ranges["backward"] = "loss.backward() inside train_step (backward kernels launch from autograd's device thread; no module ranges there)"
        ranges["optimizer_step"] = "optimizer.step() inside train_step"
    text = "module-level NVTX from forward pre/post hooks on every module"
    if nvtx_mode == "functions":
        ranges["function"] = (
            "inside a module range, one range per call of a function that launches kernels of its own: "
            "<module>.apply_rotary_pos_emb, <module>.<attention function> (sdpa_attention_forward), <module>.Cache.update"
        )
        text += ", plus ranges around the rotary, attention and KV-cache functions"
        if spec["protocol"] == "train":
            ranges["module_backward"] = "<module>.backward: full backward pre/post hooks on every non-root module (autograd's thread)"
            text += ", plus backward module ranges"
    if spec.get("compile"):
        ranges["forward"] = (
            "prefill: the root module's hooks (eager); decode: a range around the compiled call transformers builds "
            "(get_compiled_call), pushed from outside the compiled region"
        )
        ranges["module"] = "eager forwards (the prefills) only: hooks are no-ops inside compiled code, so the compiled decode forwards carry no module ranges"
        text += "; compiled decode forwards carry only their `forward` range"
    return {
        "nvtx": nvtx_mode,
        "text": text,
        "ranges": ranges,
        "kernel_attribution": "a kernel belongs to the ranges open at its launch API call (correlationId)",
    }


def build_model(spec: dict[str, Any], device: Any, dtype: Any) -> tuple[Any, dict[str, Any]]:
    import torch
    import transformers

    cfg_name, model_name, overrides = resolve_family(spec["family"])
    overrides = {**overrides, **spec.get("config_overrides", {})}
    config = getattr(transformers, cfg_name)(**overrides)
    torch.manual_seed(spec["seed"])
    model = getattr(transformers, model_name)(config)  # random weights, built on the CPU
    model.to(dtype=dtype)
    model.to(device)  # set-up: host-to-device copies
    n_params = sum(p.numel() for p in model.parameters())
    experts = model.get_experts_implementation() if hasattr(model, "get_experts_implementation") else None
    info = {
        "config_class": cfg_name,
        "model_class": model_name,
        "config_overrides": overrides,
        "parameters": n_params,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "experts_implementation": experts or None,
        "config": json.loads(config.to_json_string(use_diff=True)),
    }
    return model, info


def run_generate(model: Any, spec: dict[str, Any], nvtx: Nvtx, device: Any) -> dict[str, Any]:
    import torch

    model.eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(spec["seed"] + 1)
    input_ids = torch.randint(3, vocab, (spec["batch"], spec["prompt_len"]), generator=g).to(device)
    attention_mask = torch.ones_like(input_ids)
    kwargs: dict[str, Any] = {
        "do_sample": False,
        "max_new_tokens": spec["new_tokens"],
        "min_new_tokens": spec["new_tokens"],
        "pad_token_id": 0,
        "eos_token_id": 2,
    }
    if spec.get("cache_implementation"):
        kwargs["cache_implementation"] = spec["cache_implementation"]
    if spec.get("disable_compile"):
        kwargs["disable_compile"] = True
    calls = spec["warmup_calls"] + spec["measured_calls"]
    tokens, seconds = [], []
    with torch.inference_mode():
        for _ in range(calls):
            t0 = time.perf_counter()
            with nvtx.range("generate"):
                out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds.append(round(time.perf_counter() - t0, 4))
            tokens.append(int(out.shape[1] - input_ids.shape[1]))
    if any(t != spec["new_tokens"] for t in tokens):
        raise SystemExit(f"generate gave {tokens} new tokens per call, expected {spec['new_tokens']} each")
    return {"tokens_per_call": tokens, "seconds_per_call": seconds}


def run_train(model: Any, spec: dict[str, Any], nvtx: Nvtx, device: Any) -> dict[str, Any]:
    import torch

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["lr"])  # torch's default implementation choice (foreach on CUDA)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(spec["seed"] + 1)
    input_ids = torch.randint(3, vocab, (spec["batch"], spec["seq"]), generator=g).to(device)
    losses, seconds = [], []
    for _ in range(spec["warmup_iters"] + spec["measured_iters"]):
        t0 = time.perf_counter()
        with nvtx.range("train_step"):
            out = model(input_ids=input_ids, labels=input_ids, use_cache=False)
            with nvtx.range("backward"):
                out.loss.backward()
            with nvtx.range("optimizer_step"):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(out.loss.detach())
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(round(time.perf_counter() - t0, 4))
    return {"losses": [round(float(x), 4) for x in losses], "seconds_per_iter": seconds, "optimizer": type(optimizer).__name__}


def run(spec: dict[str, Any], nvtx_mode: str, device_name: str = "cuda", provenance: str | None = None) -> dict[str, Any]:
    """Run the workload in this process; returns the manifest (CPU runs add `nvtx_record`)."""
    import torch

    if nvtx_mode not in NVTX_MODES:
        raise SystemExit(f"--nvtx must be one of {NVTX_MODES}, not {nvtx_mode!r}")
    device = torch.device(device_name)
    on_gpu = device.type == "cuda"
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch sees no CUDA GPU")
    nvtx = Nvtx(nvtx_mode != "none", on_gpu)
    t0 = time.perf_counter()
    model, info = build_model(spec, device, getattr(torch, spec["dtype"]))
    labels: list[str] = []
    hooked = install_module_ranges(model, nvtx, labels=labels) if nvtx.enabled else 0
    functions: list[str] = []
    if nvtx_mode == "functions":
        functions = install_function_ranges(model, nvtx, labels)
        if spec["protocol"] == "train":
            install_backward_ranges(model, nvtx)
    if provenance:
        _inductor_provenance(provenance)
    if nvtx.enabled and spec.get("compile"):
        wrap_compiled_call(model, nvtx)
    if spec.get("compile") and (spec.get("compile_backend") or not on_gpu):
        from transformers import CompileConfig

        backend = spec.get("compile_backend")
        cc: Any = CompileConfig(**{"backend": backend, "mode": None}) if backend else CompileConfig()
        if not on_gpu:
            cc._compile_all_devices = True  # transformers compiles on CUDA only unless told (CPU smoke runs)
        model.generation_config.compile_config = cc
    setup_s = round(time.perf_counter() - t0, 3)
    measured = run_generate(model, spec, nvtx, device) if spec["protocol"] == "generate" else run_train(model, spec, nvtx, device)
    num_layers = model.config.num_hidden_layers
    dense = _dense_layers(model)
    manifest: dict[str, Any] = {
        "workload": spec["name"],
        "capture": "bare" if nvtx_mode == "none" else "twin",
        "model": info,
        "protocol": {k: v for k, v in spec.items() if k not in ("name", "config_overrides")},
        "expected": expected_structure(spec, num_layers, dense),
        "truth": truth_description(spec, nvtx_mode),
        "measured": {**measured, "setup_seconds": setup_s, "modules_hooked": hooked, "functions_wrapped": functions},
        "software": environment(on_gpu),
    }
    if spec.get("compile"):
        manifest["compile"] = {
            "how": "generate(cache_implementation='static') -> transformers auto-compile of the decode forward (prefill eager)",
            "compile_config": _compile_config(model),
        }
    if not on_gpu:
        manifest["nvtx_record"] = nvtx.record
    return manifest


def _inductor_provenance(folder: str) -> None:
    """Make TorchInductor write its debug trace with kernel provenance (generated kernel -> FX nodes) to `folder`,
    and write `folder/module_stacks.json`: for every node of each graph dynamo hands to Inductor (the pre-grad
    graph whose node names the provenance maps), the module path it was traced in (`nn_module_stack`) and its
    source line. With both, each compiled kernel's module is known: the truth for compiled forwards."""
    import torch._inductor.compile_fx
    import torch._inductor.config

    folder = str(Path(folder).resolve())
    Path(folder).mkdir(parents=True, exist_ok=True)
    cf: Any = torch._inductor.compile_fx
    ic: Any = torch._inductor.config
    ic.trace.enabled = True
    ic.trace.debug_dir = folder
    for cfg in (ic, ic.trace):
        if hasattr(cfg, "provenance_tracking_level"):
            cfg.provenance_tracking_level = 1
    original = cf.compile_fx
    graphs: list[dict[str, Any]] = []

    def compile_fx(gm: Any, example_inputs: Any, *args: Any, **kwargs: Any) -> Any:
        nodes = {}
        for node in gm.graph.nodes:
            stack = node.meta.get("nn_module_stack") or {}
            paths = [str(v[0]) for v in stack.values()] if isinstance(stack, dict) else []
            trace = (node.meta.get("stack_trace") or "").strip().splitlines()
            nodes[node.name] = {"modules": paths, "source": trace[-2:] if trace else []}
        graphs.append({"graph": len(graphs), "nodes": nodes})
        Path(folder, "module_stacks.json").write_text(json.dumps(graphs))
        return original(gm, example_inputs, *args, **kwargs)

    cf.compile_fx = compile_fx


def _dense_layers(model: Any) -> list[int]:
    """Decoder layers whose MLP is not a mixture of experts (read off the built model, not the config)."""
    layers = model.model.layers
    return [i for i, layer in enumerate(layers) if not any("expert" in n for n, _ in layer.mlp.named_modules())]


def _compile_config(model: Any) -> dict[str, Any] | None:
    cfg = getattr(model, "_last_compile_config", None) or getattr(model.generation_config, "compile_config", None)
    if cfg is None:
        return None
    return {k: (v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)) for k, v in cfg.to_dict().items()}


def make_spec(args: argparse.Namespace) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if args.config:
        given = json.loads(Path(args.config).read_text())
    name = args.workload or given.get("workload")
    if name not in WORKLOADS:
        raise SystemExit(f"--workload must be one of {sorted(WORKLOADS)}, not {name!r}")
    spec = {"name": name, **WORKLOADS[name], "seed": 0, "dtype": "bfloat16", **{k: v for k, v in given.items() if k not in ("workload", "nvtx", "manifest")}}
    for key in ("batch", "prompt_len", "new_tokens", "warmup_calls", "measured_calls", "seq", "warmup_iters", "measured_iters"):
        value = getattr(args, key)
        if value is not None and key in spec:
            spec[key] = value
    return spec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nsysparse.workload.hf", description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", help="JSON file: {workload, nvtx, manifest, any protocol key or config_overrides}")
    p.add_argument("--workload", choices=sorted(WORKLOADS))
    p.add_argument("--nvtx", choices=NVTX_MODES)
    p.add_argument("--manifest", help="write the manifest here (JSON)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--inductor-provenance", metavar="DIR", help="TorchInductor's debug trace with kernel provenance into DIR")
    for key in ("batch", "prompt-len", "new-tokens", "warmup-calls", "measured-calls", "seq", "warmup-iters", "measured-iters"):
        p.add_argument(f"--{key}", type=int)
    args = p.parse_args(argv)
    given = json.loads(Path(args.config).read_text()) if args.config else {}
    spec = make_spec(args)
    nvtx_mode = args.nvtx or given.get("nvtx", "modules")
    manifest = run(spec, nvtx_mode, args.device, args.inductor_provenance)
    target = args.manifest or given.get("manifest")
    text = json.dumps(manifest, indent=2, sort_keys=False)
    if target:
        Path(target).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
