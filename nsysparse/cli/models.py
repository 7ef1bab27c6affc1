"""`mfu`, `predict`, `simdiff`: the trace against a FLOP model, a roofline, or a simulator's numbers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nsysparse.cli.app import cli
from nsysparse.cli.options import emit, load, output_options, trace_argument
from nsysparse.cli.render import Result
from nsysparse.cli.structure import analysis_context, mapping_options, structure_meta
from nsysparse.errors import ConfigError, UsageError
from nsysparse.models import hardware
from nsysparse.models.config import LoadedModel, load_model

if TYPE_CHECKING:  # imported when a command runs (pandas, DuckDB, plotly), never for --help or a usage error
    from nsysparse.models.flops import Workload
    from nsysparse.trace import Trace

F = Callable[..., Any]
MODEL_HELP = "Model: a preset (deepseek-v3, qwen3-235b-a22b, qwen3-next-80b-a3b, llama-3-8b, llama-3-70b, llama-mini, ds-mini), a HuggingFace config.json, or a manifest.json from `nsysparse generate`."


class _Phases(click.Choice):  # type: ignore[type-arg]
    """models.flops.PHASES, read when the option is parsed or shown (the FLOP model imports pandas): a usage error
    of mfu, predict, compare or report imports nothing heavy; their --help, which lists the phases, does."""

    def __init__(self) -> None:
        super().__init__(())

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        from nsysparse.models.flops import PHASES

        return PHASES

    @choices.setter
    def choices(self, value: object) -> None:
        pass


def workload_options(f: F) -> F:
    opts = [
        click.option("--phase", type=_Phases(), default=None, help="Phase (default: the manifest's, else train for mfu and decode for predict)."),
        click.option("--batch", type=click.IntRange(min=1), default=None, help="Sequences per step, all GPUs (default: the manifest's)."),
        click.option("--seq", type=click.IntRange(min=1), default=None, help="Tokens per sequence for prefill/train (default: the manifest's)."),
        click.option("--kv-len", type=click.IntRange(min=1), default=None, help="Decode: KV length each query attends to (default: the manifest's)."),
        click.option(
            "--causal", type=click.Choice(["half", "full"]), default="half", show_default=True, help="Causal attention FLOPs: halved (Megatron) or the full s²."
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def hardware_options(f: F) -> F:
    opts = [
        click.option("--hardware", "hw_name", default=None, help="GPU: h100_sxm, h100_pcie, h200, h800, a100, b200, gb200 (default: the trace's GPU)."),
        click.option("--peak", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the dense peak, TFLOP/s."),
        click.option("--hbm-tbps", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the HBM bandwidth, TB/s."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def resolve_workload(
    lm: LoadedModel, phase: str | None, batch: int | None, seq: int | None, kv_len: int | None, causal: str, default_phase: str, tp: int = 1, ep: int = 1
) -> Workload:
    from nsysparse.models.flops import Workload

    run = lm.run
    ph = phase or run.get("phase") or default_phase
    b = batch or run.get("batch")
    if not b:
        raise UsageError(f"--batch is needed for {lm.spec.name} (no workload manifest gives it)")
    s = seq or (run.get("seq") if ph != "decode" else 1) or None
    if ph != "decode" and not s:
        raise UsageError(f"--seq is needed for {ph}")
    kv = kv_len or run.get("kv_len") or (None if ph == "decode" else 1)
    if ph == "decode" and not kv:
        raise UsageError("--kv-len is needed for decode")
    return Workload(ph, batch=int(b), seq=int(s or 1), kv_len=int(kv or 1), causal=causal, tp=tp, ep=ep).validate()


def resolve_hardware(
    hw_name: str | None, peak: float | None, hbm: float | None, trace: Trace | None = None, meta_hw: str | None = None, required: bool = True
) -> hardware.Hardware | None:
    base = None
    if hw_name:
        base = hardware.find(hw_name)
    else:
        for cand in ([trace.gpu_name()] if trace is not None else []) + ([meta_hw] if meta_hw else []):
            if cand and cand != "unknown":
                try:
                    base = hardware.find(cand)
                    break
                except ConfigError:
                    continue
    if peak is not None:
        return hardware.custom(peak, hbm, base)
    if base is None:
        if not required:
            return None
        seen = trace.gpu_name() if trace is not None else "none"
        raise ConfigError(f"cannot tell the GPU's peak (trace GPU: {seen})", "Give --hardware h100_sxm (or h200, b200, ...) or --peak TFLOPS")
    if hbm is not None:
        return hardware.Hardware(base.key, base.name, base.bf16_tflops, base.fp8_tflops, hbm, base.nvlink_gbps, base.memory_gb, base.sources + "; --hbm-tbps")
    return base


@cli.command()
@trace_argument()
@click.option("--model", "model_arg", required=True, help=MODEL_HELP)
@workload_options
@click.option("--gpus", type=click.IntRange(min=1), default=None, help="GPUs the step is spread over (default: GPUs with steps in the trace).")
@click.option(
    "--time",
    "basis",
    type=click.Choice(["period", "wall"]),
    default="period",
    show_default=True,
    help="Step time: start to next start, or first to last GPU activity.",
)
@click.option("--recompute", is_flag=True, help="Count full activation recomputation (4× forward FLOPs: HFU).")
@click.option(
    "--flops",
    "ref_flops",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Independent FLOPs per step to compare with (e.g. the training framework's); a manifest is checked by its measured step time.",
)
@hardware_options
@mapping_options
@output_options(("table", "csv", "json"))
@click.pass_context
def mfu(
    ctx: click.Context,
    trace: str,
    model_arg: str,
    phase: str | None,
    batch: int | None,
    seq: int | None,
    kv_len: int | None,
    causal: str,
    gpus: int | None,
    basis: str,
    recompute: bool,
    ref_flops: float | None,
    hw_name: str | None,
    peak: float | None,
    hbm_tbps: float | None,
    rules: tuple[str, ...],
    step_pattern: str,
    layer_pattern: str,
    nvtx_mode: str,
    device: int | None,
    fmt: str,
    out: str | None,
) -> None:
    """TFLOP/s per GPU, MFU against the BF16 and FP8 peaks, and tokens/s per GPU: the model's FLOPs per
    step (Megatron's formula, docs/predictions.md) over the step time measured in the trace.

    Example: nsysparse mfu fixtures/dense_train_step/trace.sqlite --model fixtures/dense_train_step/manifest.json"""
    import pandas as pd

    from nsysparse.analyses.layers import layer_report
    from nsysparse.analyses.mfu import check_plausible, fit_notes, manifest_step_ns, mfu_report, run_notes
    from nsysparse.formatting import fmt_value

    lm = load_model(model_arg)
    w = resolve_workload(lm, phase, batch, seq, kv_len, causal, "train")
    with load(trace) as t:
        hw = resolve_hardware(hw_name, peak, hbm_tbps, t)
        assert hw is not None
        ac = analysis_context(t, rules, step_pattern, layer_pattern, nvtx_mode, device)
        # the manifest's own FLOP count is the model's by construction: it is checked by its measured step time instead
        ref_step = manifest_step_ns(lm.expected, basis)
        r = mfu_report(
            ac.mapping.steps,
            lm.spec,
            w,
            hw,
            gpus=gpus,
            basis=basis,
            recompute=recompute,
            reference_flops=ref_flops,
            reference_step_ns=ref_step,
            source=str(t.path),
        )
        fit = fit_notes(lm.spec, layer_report(ac).layer_kinds, t.gpu_name(device), hw, lm.expected) + run_notes(lm.run, w)
        r.notes += fit
        check_plausible(r, lm.spec, trace, fit)
        s = r.summary.iloc[0]
        meta = {
            "model": lm.spec.name,
            "workload": f"{w.phase}, batch {w.batch}" + (f", seq {w.seq}" if w.phase != "decode" else f", kv {w.kv_len}"),
            "hardware": f"{hw.name} (BF16 {hw.bf16_tflops:g}, FP8 {hw.fp8_tflops:g} TFLOP/s)",
            **structure_meta(ac),
        }
        headline = pd.DataFrame({"metric": list(s.index), "value": [fmt_value(str(k), v) for k, v in s.items()]})
        frames = {"summary": r.summary, "per step": r.per_step} if fmt == "csv" else {"MFU": headline, "per step": r.per_step}
        emit(ctx, Result(frames=frames, meta=meta, payload=r.payload() if fmt == "json" else None, notes=r.notes, title="nsysparse mfu"), fmt, out, ac)


@cli.command()
@click.option("--model", "model_arg", required=True, help=MODEL_HELP)
@workload_options
@click.option("--tp", type=click.IntRange(min=1), default=1, show_default=True, help="Tensor parallelism (heads and FFN widths per GPU).")
@click.option(
    "--ep",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Expert parallelism (routed experts per GPU = experts / ep; dispatch/combine send over NVLink).",
)
@click.option("--hardware", "hw_name", required=True, help="GPU: h100_sxm, h100_pcie, h200, h800, a100, b200, gb200.")
@click.option("--peak", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the dense peak, TFLOP/s.")
@click.option("--hbm-tbps", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the HBM bandwidth, TB/s.")
@click.option("--dtype", type=click.Choice(["bf16", "fp8"]), default="bf16", show_default=True, help="Tensor-core peak the GEMMs run at.")
@click.option("--eff-compute", type=click.FloatRange(min=0, max=1, min_open=True), default=0.7, show_default=True, help="Fraction of the peak a GEMM reaches.")
@click.option(
    "--eff-memory", type=click.FloatRange(min=0, max=1, min_open=True), default=0.8, show_default=True, help="Fraction of HBM/NVLink bandwidth reached."
)
@click.option("--latency-us", type=click.FloatRange(min=0), default=3.0, show_default=True, help="Constant added per op instance (launch and tail).")
@click.option(
    "-f", "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True, help="Output format on stdout (ignored with -o)."
)
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(dir_okay=False, readable=False, path_type=str),
    help="Write a prediction file; the format follows the extension (.csv, .json, .yaml).",
)
@click.pass_context
def predict(
    ctx: click.Context,
    model_arg: str,
    phase: str | None,
    batch: int | None,
    seq: int | None,
    kv_len: int | None,
    causal: str,
    tp: int,
    ep: int,
    hw_name: str,
    peak: float | None,
    hbm_tbps: float | None,
    dtype: str,
    eff_compute: float,
    eff_memory: float,
    latency_us: float,
    fmt: str,
    out: str | None,
) -> None:
    """Roofline prediction per op and layer kind: FLOPs and bytes of one instance, its predicted µs on one
    GPU and what bounds it. The file loads back into `simdiff` (format: docs/predictions.md).

    Example: nsysparse predict --model deepseek-v3 --hardware h100_sxm --phase decode --batch 24 --kv-len 4096 -o pred.csv"""
    from nsysparse.models.predict import predict_ops, prediction_meta
    from nsysparse.models.predictions import write_predictions

    lm = load_model(model_arg)
    w = resolve_workload(lm, phase, batch, seq, kv_len, causal, "decode", tp=tp, ep=ep)
    hw = resolve_hardware(hw_name, peak, hbm_tbps)
    assert hw is not None
    df = predict_ops(lm.spec, w, hw, dtype, eff_compute, eff_memory, latency_us)
    meta = prediction_meta(lm.spec, w, hw, dtype, eff_compute, eff_memory, latency_us, df)
    notes = list(lm.spec.notes)
    if out:
        write_predictions(df, {k: v for k, v in meta.items() if v is not None}, out)
        click.echo(f"wrote {len(df)} ops to {out} (forward {meta['forward_us'] / 1e3:.3f} ms predicted)", err=True)
        return
    emit(
        ctx,
        Result(
            frames={"predictions": df},
            meta={k: v for k, v in meta.items() if v is not None},
            payload={"meta": meta, "ops": df} if fmt == "json" else None,
            notes=notes,
            title="nsysparse predict",
        ),
        fmt,
        None,
    )


@cli.command("simdiff")
@click.argument("measured", metavar="MEASURED", type=click.Path(dir_okay=True, readable=False, path_type=str))
@click.argument("predictions", metavar="PRED", type=click.Path(dir_okay=False, readable=False, path_type=str))
@click.option("--layers", "layer_counts", default=None, help="Instances per forward for a measured table without a count column, e.g. dense=3,moe=58,mtp=1.")
@click.option("--by-kind", is_flag=True, help="One row per (layer kind, op) instead of per op.")
@click.option(
    "--model", "model_arg", default=None, help="Fill FLOPs/bytes the prediction file lacks from this model (for TFLOP/s, TB/s, % of roofline). " + MODEL_HELP
)
@workload_options
@hardware_options
@mapping_options
@output_options(("table", "csv", "json", "markdown"))
@click.pass_context
def simdiff_cmd(
    ctx: click.Context,
    measured: str,
    predictions: str,
    layer_counts: str | None,
    by_kind: bool,
    model_arg: str | None,
    phase: str | None,
    batch: int | None,
    seq: int | None,
    kv_len: int | None,
    causal: str,
    hw_name: str | None,
    peak: float | None,
    hbm_tbps: float | None,
    rules: tuple[str, ...],
    step_pattern: str,
    layer_pattern: str,
    nvtx_mode: str,
    device: int | None,
    fmt: str,
    out: str | None,
) -> None:
    """Measured vs predicted per op: measured_us, predicted_us, Δ per instance, Δ × instances per forward
    (total_diff_ms), ratio, achieved TFLOP/s and TB/s, % of roofline; sorted by |total diff|, with
    measured-only and predicted-only ops and a reconciliation of the totals.

    MEASURED is a trace or a measured per-op CSV (op, measured_us, layer_kind, count). PRED is a prediction
    file (.csv/.json/.yaml, docs/predictions.md); simulator names load through the alias table."""
    from nsysparse.analyses.layers import layer_report
    from nsysparse.analyses.ops import op_summary
    from nsysparse.analyses.simdiff import measured_from_layers, measured_from_table, parse_layer_counts
    from nsysparse.models.predictions import load_predictions
    from nsysparse.rules import load_rules

    rs = load_rules(rules or None)
    preds = load_predictions(predictions, rs)
    lm = load_model(model_arg) if model_arg else None
    meta: dict[str, Any] = {"predictions": f"{Path(predictions).name} ({len(preds.table)} ops)"}
    notes: list[str] = []
    if Path(measured).suffix.lower() in (".csv", ".tsv", ".txt"):
        meas = measured_from_table(measured, rs, parse_layer_counts(layer_counts))
        meta["measured"] = f"{Path(measured).name} (table)"
        hw = resolve_hardware(hw_name, peak, hbm_tbps, None, str(preds.meta.get("hardware", "")) or None, required=False)
        res = _simdiff(meas, preds, hw, lm, phase, batch, seq, kv_len, causal)
    else:
        if layer_counts:
            raise UsageError("--layers is for a measured table; a trace gives its own counts")
        with load(measured) as t:
            ac = analysis_context(t, rules, step_pattern, layer_pattern, nvtx_mode, device, rs)
            rep = layer_report(ac)
            if rep.steps == 0:
                raise ConfigError(f"{measured}: no steps with mapped ops", "Check `nsysparse layers` on this trace")
            meas = measured_from_layers(op_summary(ac, by_kind=True), float(ac.mapping.steps["wall_ns"].mean() / 1e6), rs)
            meta["measured"] = f"{Path(measured).name} ({rep.steps} steps, layers {', '.join(f'{k} {v:g}' for k, v in rep.layer_kinds.items())})"
            meta.update(structure_meta(ac))
            notes += ac.notes
            hw = resolve_hardware(hw_name, peak, hbm_tbps, t, str(preds.meta.get("hardware", "")) or None, required=False)
            res = _simdiff(meas, preds, hw, lm, phase, batch, seq, kv_len, causal)
    if hw is not None:
        meta["roofline"] = hw.name
    else:
        notes.append("no hardware known: % of roofline left empty (give --hardware)")
    meta["measured total"] = f"{res.measured_total_ms:.3f} ms"
    meta["predicted total"] = f"{res.predicted_total_ms:.3f} ms"
    meta["matched ops total diff"] = f"{res.matched_total_ms:+.3f} ms"
    table = res.by_kind if by_kind else res.table
    payload = {**res.payload(), "ops": table} if fmt == "json" else None
    emit(
        ctx,
        Result(frames={"ops": table, "reconciliation": res.reconciliation}, meta=meta, payload=payload, notes=notes + res.notes, title="nsysparse simdiff"),
        fmt,
        out,
    )


def _simdiff(
    meas: Any, preds: Any, hw: Any, lm: LoadedModel | None, phase: str | None, batch: int | None, seq: int | None, kv_len: int | None, causal: str
) -> Any:
    from nsysparse.analyses.simdiff import simdiff
    from nsysparse.models.flops import op_table

    model_ops = None
    if lm is not None:
        w = resolve_workload(lm, phase, batch, seq, kv_len, causal, "decode")
        model_ops = op_table(lm.spec, w)
    return simdiff(meas, preds.table, hw, model_ops)
