"""Everything a report shows, as tables from the analyses (no plotting here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nsysparse.analyses.compare import Comparison, compare_profiles, profile
from nsysparse.analyses.context import AnalysisContext
from nsysparse.analyses.gaps import GapReport, gap_report
from nsysparse.analyses.kernel_summary import kernel_summary
from nsysparse.analyses.layers import LayerReport, layer_report
from nsysparse.analyses.mfu import MfuReport, check_plausible, fit_notes, manifest_step_ns, mfu_report, run_notes
from nsysparse.analyses.ops import op_summary
from nsysparse.analyses.serving import serving_metrics
from nsysparse.analyses.simdiff import SimDiff, measured_from_layers, simdiff
from nsysparse.models.config import LoadedModel
from nsysparse.models.flops import Workload, op_table
from nsysparse.models.hardware import Hardware
from nsysparse.models.predictions import Predictions
from nsysparse.report.timeline import Timeline, step_timeline
from nsysparse.structure.period import step_period_ns


@dataclass
class ReportData:
    title: str
    summary: list[tuple[str, str]]
    layers: LayerReport
    ops_by_kind: pd.DataFrame
    timeline: Timeline | None
    gaps: GapReport
    top_kernels: pd.DataFrame
    serving: dict[str, Any] | None = None
    mfu: MfuReport | None = None
    simdiff: SimDiff | None = None
    comparison: Comparison | None = None
    baseline_name: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportInputs:
    """Optional extras: predictions, a baseline (its trace and mapping), a model with its workload."""

    predictions: Predictions | None = None
    baseline: AnalysisContext | None = None
    model: LoadedModel | None = None
    workload: Workload | None = None
    hardware: Hardware | None = None
    gpus: int | None = None
    accept_rate: float | None = None
    batch: int | None = None
    top_kernels: int = 20


def collect(ctx: AnalysisContext, x: ReportInputs, title: str | None = None) -> ReportData:
    """Every table and number of the report, from one analysis context (and the optional extras)."""
    trace = ctx.trace
    with trace.sharing_reads():  # the summary's columns are those the loaders read: read once
        m = ctx.mapping
        info = trace.summary()
    lr = layer_report(ctx)
    gr = gap_report(ctx)
    ops = op_summary(ctx, by_kind=True)
    kern = kernel_summary(ctx, name="short", from_frame=True).head(x.top_kernels)
    tl = step_timeline(m)
    notes = list(dict.fromkeys([*ctx.notes, *gr.notes]))
    steps = m.steps
    wall_ms = float(steps["wall_ns"].median() / 1e6) if len(steps) else float("nan")
    gap_ms = float(gr.gaps["gap_us"].median() / 1e3) if len(gr.gaps) else float("nan")
    gpus = ", ".join(sorted({str(g["name"]) for g in info["gpus"]})) or "unknown (no GPU table)"
    summary: list[tuple[str, str]] = [
        ("trace", Path(str(info["file"])).name),
        ("GPU", gpus),
        ("nsys", f"{info['nsys_version'] or 'unknown'} (export schema {info['export_schema_version'] or 'unknown'})"),
        ("CUDA graphs", f"{info['cuda_graph_launches']} launches, trace mode {info['cuda_graph_trace_mode']}"),
        ("kernels", f"{info['tables'].get('kernels', 0):,}"),
        ("steps", f"{len(steps)} ({m.step_source}, confidence {m.step_confidence:.2f})"),
        (
            "step time",
            f"{wall_ms:.3f} ms median wall, {float(steps['busy_ns'].median() / 1e6) if len(steps) else float('nan'):.3f} ms busy"
            if len(steps)
            else "no steps found",
        ),
        ("gap between steps", f"{gap_ms:.3f} ms median" if gap_ms == gap_ms else "-"),
        ("layers per step", ", ".join(f"{k} {v:g}" for k, v in lr.layer_kinds.items()) or "none found"),
        ("unmapped kernel time", f"{lr.unmapped_share * 100:.2f} %" if lr.unmapped_share == lr.unmapped_share else "-"),
    ]
    data = ReportData(title or f"nsysparse report: {Path(str(info['file'])).name}", summary, lr, ops, tl, gr, kern, notes=notes)
    decode = x.workload is not None and x.workload.phase == "decode"
    if (x.accept_rate is not None or decode) and len(steps):
        s = serving_metrics(
            wall_ms,
            gap_ms if gap_ms == gap_ms else 0.0,
            x.accept_rate or 1.0,
            x.batch or (x.workload.batch if x.workload else 1),
            period_ms=step_period_ns(steps) / 1e6,
        )
        data.serving = s
        summary.append(
            (
                "TPOT",
                f"{s['tpot_ms']:.3f} ms at {s['accept_rate']:g} accepted tokens/step ({s['user_tok_s']:.1f} tok/s per user, {s['machine_tok_s']:.0f} tok/s for the batch)",
            )
        )
    if x.model is not None and x.workload is not None and x.hardware is not None and len(steps):
        data.mfu = mfu_report(
            steps, x.model.spec, x.workload, x.hardware, gpus=x.gpus, reference_step_ns=manifest_step_ns(x.model.expected), source=str(trace.path)
        )
        fit = fit_notes(x.model.spec, lr.layer_kinds, trace.gpu_name(), x.hardware, x.model.expected) + run_notes(x.model.run, x.workload)
        data.mfu.notes += fit
        check_plausible(data.mfu, x.model.spec, str(trace.source_path), fit)
        r = data.mfu.summary.iloc[0]
        summary.append(
            (
                "MFU",
                f"{r['tflops_per_gpu']:.1f} TFLOP/s per GPU = {r['mfu_bf16_pct']:.1f} % of {x.hardware.name} BF16 peak ({r['tokens_per_s_per_gpu']:,.0f} tokens/s per GPU)",
            )
        )
        if r["mbu_pct"] == r["mbu_pct"]:
            summary.append(("MBU", f"{r['mbu_pct']:.1f} % of HBM bandwidth"))
        notes += data.mfu.notes
    if x.predictions is not None and len(steps):
        model_ops = op_table(x.model.spec, x.workload) if x.model is not None and x.workload is not None else None
        meas = measured_from_layers(ops, float(steps["wall_ns"].mean() / 1e6), m.rules)
        data.simdiff = simdiff(meas, x.predictions.table, x.hardware, model_ops)
        d = data.simdiff
        summary.append(
            ("vs prediction", f"measured {d.measured_total_ms:.3f} ms, predicted {d.predicted_total_ms:.3f} ms; matched ops {d.matched_total_ms:+.3f} ms")
        )
        notes += d.notes
    if x.baseline is not None:
        data.comparison = compare_profiles(profile(x.baseline), profile(ctx, gaps=gr))
        data.baseline_name = Path(str(x.baseline.trace.source_path)).name
        c = data.comparison
        counts = c.table["verdict"].value_counts()
        summary.append(
            (
                "vs baseline",
                f"{c.verdict} ({int(counts.get('regression', 0))} regressions, {int(counts.get('improvement', 0))} improvements)"
                + (f": {'; '.join(c.reasons)}" if c.reasons else ""),
            )
        )
        notes += c.notes
    data.notes = list(dict.fromkeys(notes))
    return data
