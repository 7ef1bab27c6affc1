"""`report`: one self-contained HTML file for a team: summary, per-layer cost, timeline, gaps, kernels,
and, when given, MFU, the simulator diff and the baseline comparison."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from nsysparse.cli.app import cli
from nsysparse.cli.models import MODEL_HELP, hardware_options, resolve_hardware, resolve_workload, workload_options
from nsysparse.cli.options import load, trace_argument
from nsysparse.cli.structure import analysis_context, mapping_options
from nsysparse.errors import UsageError
from nsysparse.models.config import load_model

if TYPE_CHECKING:  # imported when a command runs (pandas, DuckDB, plotly), never for --help or a usage error
    pass


@cli.command()
@trace_argument()
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, readable=False, path_type=str), help="The HTML file to write.")
@click.option(
    "--predictions",
    type=click.Path(dir_okay=False, readable=False, path_type=str),
    default=None,
    help="A prediction file: adds the measured-vs-predicted section and waterfall.",
)
@click.option("--baseline", type=click.Path(dir_okay=True, readable=False, path_type=str), default=None, help="A baseline trace: adds the comparison section.")
@click.option("--model", "model_arg", default=None, help="Adds MFU (and TPOT for decode). " + MODEL_HELP)
@workload_options
@click.option("--gpus", type=click.IntRange(min=1), default=None, help="GPUs a step is spread over (MFU).")
@click.option("--accept-rate", type=click.FloatRange(min=0, min_open=True), default=None, help="Accepted tokens per step per sequence: adds TPOT.")
@click.option("--title", default=None, help="Report title (default: the trace's file name).")
@hardware_options
@mapping_options
@click.pass_context
def report(
    ctx: click.Context,
    trace: str,
    out: str,
    predictions: str | None,
    baseline: str | None,
    model_arg: str | None,
    phase: str | None,
    batch: int | None,
    seq: int | None,
    kv_len: int | None,
    causal: str,
    gpus: int | None,
    accept_rate: float | None,
    title: str | None,
    hw_name: str | None,
    peak: float | None,
    hbm_tbps: float | None,
    rules: tuple[str, ...],
    step_pattern: str,
    layer_pattern: str,
    nvtx_mode: str,
    device: int | None,
) -> None:
    """Write a self-contained HTML report (plotly inlined, no network needed to view it).

    Example: nsysparse report fixtures/moe_decode_op/trace.sqlite -o report.html --model fixtures/moe_decode_op/manifest.json"""
    from nsysparse.models.predictions import load_predictions
    from nsysparse.report.collect import ReportInputs, collect
    from nsysparse.report.html import write_report
    from nsysparse.rules import load_rules

    if not out.lower().endswith((".html", ".htm")):
        raise UsageError(f"{out}: the report is HTML", "Give -o NAME.html")
    if device is not None:
        raise UsageError("--device is not supported by report; the report covers every GPU")
    rs = load_rules(rules or None)
    x = ReportInputs(accept_rate=accept_rate, batch=batch, gpus=gpus)
    if predictions:
        x.predictions = load_predictions(predictions, rs)
    if model_arg:
        x.model = load_model(model_arg)
        x.workload = resolve_workload(x.model, phase, batch, seq, kv_len, causal, "train")
    with load(trace) as t:
        x.hardware = resolve_hardware(
            hw_name, peak, hbm_tbps, t, str(x.predictions.meta.get("hardware", "")) if x.predictions else None, required=x.model is not None
        )
        ac = analysis_context(t, rules, step_pattern, layer_pattern, nvtx_mode, None, rs)
        if baseline:
            with load(baseline) as bt:
                x.baseline = analysis_context(bt, rules, step_pattern, layer_pattern, nvtx_mode, None, rs)
                data = collect(ac, x, title)
        else:
            data = collect(ac, x, title)
    size = write_report(data, out)
    quiet = bool(ctx.find_root().obj and ctx.find_root().obj.get("quiet"))
    if not quiet:
        sections = 5 + sum(v is not None for v in (data.mfu, data.simdiff, data.comparison))
        click.echo(f"wrote {out} ({size / 1e6:.2f} MB, {sections} sections)", err=True)
    if Path(out).stat().st_size > 10_000_000:
        click.echo("note: the report is larger than 10 MB", err=True)
