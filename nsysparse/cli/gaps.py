"""`gaps`: idle time between and inside forward passes, its causes, and serving numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # imported when a command runs (pandas, DuckDB, plotly), never for --help or a usage error
    pass
from nsysparse.cli.app import cli
from nsysparse.cli.options import emit, load, output_options, trace_argument
from nsysparse.cli.render import Result
from nsysparse.cli.structure import analysis_context, mapping_options, structure_meta


@cli.command(epilog="Causes: gpu dependency, collective wait, graph, profiler, sync, host work, launch-bound, launch latency (see docs/gaps.md).")
@trace_argument()
@mapping_options
@click.option(
    "--min-bubble-us", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Smallest idle window inside a step that counts as a bubble."
)
@click.option("--top", type=click.IntRange(min=0), default=15, show_default=True, help="How many of the largest bubbles to list.")
@click.option(
    "--accept-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Accepted tokens per step per sequence (speculative decoding); enables serving numbers.",
)
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Sequences per step (per data-parallel rank); enables serving numbers.")
@click.option(
    "--dp",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Data-parallel replicas (machine tokens/s = batch × dp × accepted tokens / step period).",
)
@click.option("--target-tpot-ms", type=click.FloatRange(min=0, min_open=True), default=None, help="TPOT target to compare with.")
@output_options(("table", "csv", "json"))
@click.pass_context
def gaps(
    ctx: click.Context,
    trace: str,
    rules: tuple[str, ...],
    step_pattern: str,
    layer_pattern: str,
    nvtx_mode: str,
    device: int | None,
    min_bubble_us: float,
    top: int,
    accept_rate: float | None,
    batch: int | None,
    dp: int,
    target_tpot_ms: float | None,
    fmt: str,
    out: str | None,
) -> None:
    """Idle GPU time between steps (forward passes) and inside them (bubbles), per device and the worst,
    each with a cause read from what the launching thread did meanwhile: blocked in a synchronize or copy,
    no CUDA calls (host work), launching slower than the GPU finishes (launch-bound), graph launch, a
    collective waiting for peers, or a GPU-side dependency.

    With --accept-rate/--batch/--dp: TPOT = (forward + gap) / accepted tokens, per-user and machine tokens/s.
    CSV writes the list of inter-step gaps."""
    from nsysparse.analyses.gaps import gap_report
    from nsysparse.analyses.serving import serving_table

    with load(trace) as t:
        ac = analysis_context(t, rules, step_pattern, layer_pattern, nvtx_mode, device)
        r = gap_report(ac, min_bubble_us=min_bubble_us, top=top)
        frames = {"per device": r.devices, "causes": r.causes, "gaps between steps": r.gaps, f"largest bubbles (≥ {min_bubble_us:g} µs)": r.bubbles}
        payload = r.payload()
        if accept_rate is not None or batch is not None or target_tpot_ms is not None:
            serving = serving_table(r.devices, accept_rate or 1.0, batch or 1, dp, target_tpot_ms)
            frames = {"serving": serving, **frames}
            payload["serving"] = serving.to_dict("records")
        if fmt == "csv":
            frames = {"gaps": r.gaps}
        meta = structure_meta(ac)
        if r.worst_device is not None:
            meta["worst device"] = r.worst_device
        emit(ctx, Result(frames=frames, meta=meta, payload=payload if fmt == "json" else None, notes=r.notes, title="nsysparse gaps"), fmt, out, ac)
