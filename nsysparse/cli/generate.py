"""`nsysparse generate`: run a torch workload of known structure (and profile it with nsys)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import click

from nsysparse.cli.app import cli
from nsysparse.errors import ConfigError, UsageError
from nsysparse.models.config import PRESETS, SMALL_PRESETS, ModelSpec, spec_dict
from nsysparse.models.flops import PHASES
from nsysparse.workload.config import DTYPES, NVTX_LEVELS, SHAPE_OPTIONS, RunConfig, model_from, to_dict


def model_options(f):  # type: ignore[no-untyped-def]
    """One option per ModelSpec field the generator builds (--hidden-size, ...; old short names as aliases)."""
    for name, (alias, text) in reversed(SHAPE_OPTIONS.items()):
        opts = ["--" + name.replace("_", "-")] + (["--" + alias] if alias else [])
        f = click.option(*opts, name, type=int, default=None, help=f"{text} (preset value if omitted)")(f)
    return f


def _describe(spec: ModelSpec) -> str:
    attn = "MLA" if spec.is_mla else "GQA"
    mlp = f"{spec.layer_kinds().count('moe')} MoE of {spec.num_hidden_layers} layers" if spec.is_moe else f"{spec.num_hidden_layers} dense layers"
    return f"{spec.name} ({attn}, hidden {spec.hidden_size}, {mlp})"


@cli.command(epilog="Presets: " + "; ".join(_describe(PRESETS[k]) for k in SMALL_PRESETS))
@click.option("--preset", type=click.Choice(SMALL_PRESETS), default="llama-mini", show_default=True, help="Model preset; any shape option below overrides it.")
@model_options
@click.option(
    "--dtype",
    type=click.Choice(["auto", *DTYPES]),
    default="auto",
    show_default=True,
    help="Parameter and activation dtype; auto: bfloat16 on cuda, float32 on cpu.",
)
@click.option("--rms-eps", type=click.FloatRange(min=0, min_open=True), default=1e-6, show_default=True, help="RMSNorm epsilon.")
@click.option(
    "--phase",
    type=click.Choice(PHASES),
    default="decode",
    show_default=True,
    help="decode (KV cache, batch B, N steps), prefill (sequence S) or train (forward+backward+fused AdamW).",
)
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True, help="Sequences per step.")
@click.option("--seq", type=click.IntRange(min=2), default=512, show_default=True, help="Sequence length for prefill and train.")
@click.option("--kv-len", type=click.IntRange(min=1), default=1024, show_default=True, help="Decode: KV-cache length every step attends to.")
@click.option("--steps", type=click.IntRange(min=1), default=6, show_default=True, help="Measured steps (inside the profiled range).")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Unprofiled warm-up steps.")
@click.option(
    "--nvtx",
    type=click.Choice(NVTX_LEVELS),
    default="op",
    show_default=True,
    help="NVTX ranges: forward_<i>/train_step_<i> (step), + layer_<i>_<kind> (layer), + op names (op).",
)
@click.option("--host-gap-ms", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Host-side sleep between steps (a serving scheduler's gap).")
@click.option("--cuda-graph", is_flag=True, help="Capture one decode forward as a CUDA graph and replay it each step (profile with --cuda-graph-trace=node).")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True, help="cpu runs a smoke test (no trace).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--profile", "do_profile", is_flag=True, help="Run under nsys (PATH, --nsys, or Nsight Compute's bundled collector) and export trace.sqlite.")
@click.option("--nsys", "nsys_path", type=click.Path(dir_okay=False), default=None, help="Path of the nsys binary to profile with.")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder: config.json, manifest.json, trace.nsys-rep, trace.sqlite.",
)
@click.option("--force", is_flag=True, help="Replace an existing trace in the output folder.")
def generate(preset: str, do_profile: bool, nsys_path: str | None, out_dir: str, force: bool, **kw: object) -> None:
    """Run a Llama-like or DeepSeek-V3-like torch workload of known structure and write its manifest.

    The model is a model preset (llama-mini, ds-mini, tiny-dense, tiny-moe: names `mfu --model` takes
    too), any shape option overriding it; the manifest's FLOPs are those of nsysparse's FLOP model (the
    one mfu and predict use) for that model and run.

    With --profile the run happens under Nsight Systems and the folder gets trace.sqlite, whose NVTX
    names (forward_<i>, layer_<i>_<kind>, op names from rules/vocabulary.toml) carry their own truth.
    Without it the workload runs in-process and the command prints how to profile it by hand.
    Needs the torch extra: pip install 'nsysparse[torch]'."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ConfigError("generate needs torch", "Install it: pip install 'nsysparse[torch]'") from None
    model_kw = {k: v for k, v in kw.items() if k in SHAPE_OPTIONS}
    run_kw = {k: v for k, v in kw.items() if k in {f.name for f in fields(RunConfig)}}
    model = model_from(preset, model_kw)
    run = RunConfig(**run_kw).validate(model)  # type: ignore[arg-type]
    out = Path(out_dir)
    if (out / "trace.sqlite").exists() and not force:
        raise UsageError(f"{out / 'trace.sqlite'} exists", "Pass --force to replace it, or choose another --output")
    if do_profile and run.device != "cuda":
        raise UsageError("--profile needs --device cuda")
    out.mkdir(parents=True, exist_ok=True)
    config = {"preset": preset, "model": spec_dict(model), "run": to_dict(run)}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if do_profile:
        from nsysparse.workload.profile import run_profiled

        nsys_block = run_profiled(out, run.cuda_graph, nsys_path, nvtx=run.nvtx != "none")
        partial = out / "manifest.partial.json"
        if not partial.exists():
            raise ConfigError("the profiled workload wrote no manifest; see its output above")
        manifest = json.loads(partial.read_text())
        partial.unlink()
        manifest["preset"] = preset
        manifest["nsys"] = nsys_block
        manifest["files"] = {"trace": "trace.sqlite", "report": "trace.nsys-rep", "config": "config.json"}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        click.echo(f"wrote {out / 'trace.sqlite'} and {out / 'manifest.json'} ({nsys_block['version']})")
        return
    from nsysparse.workload.profile import profile_command
    from nsysparse.workload.run import execute

    manifest = execute(model, run)
    manifest.pop("nvtx_record", None)
    manifest["preset"] = preset
    manifest["nsys"] = None
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    cmd = " ".join(profile_command("nsys", str(out / "trace"), str(out / "config.json"), run.cuda_graph, run.nvtx != "none"))
    click.echo(f"ran {run.steps} {run.phase} steps of {preset} on {run.device}; wrote {out / 'manifest.json'}")
    click.echo(f"to profile it: {cmd} && nsys export --type sqlite -o {out / 'trace.sqlite'} {out / 'trace.nsys-rep'}")
