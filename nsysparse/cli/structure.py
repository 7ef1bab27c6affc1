"""`ops`, `layers`, `steps`: kernels mapped to logical ops, per-layer cost, and step boundaries."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from nsysparse.cli.app import cli
from nsysparse.cli.options import emit, load, output_options, trace_argument
from nsysparse.cli.render import Result
from nsysparse.progress import Progress

if TYPE_CHECKING:  # the analyses (pandas, numpy) are imported when a command runs, not for --help or a usage error
    from nsysparse.analyses.context import AnalysisContext
    from nsysparse.rules import RuleSet
    from nsysparse.structure.mapping import Mapping
    from nsysparse.trace import Trace

F = Callable[..., Any]

# structure.mapping.NVTX_MODES, spelled here so that the options need no import of the mapping (a test checks both agree)
NVTX_MODES = ("auto", "steps", "off")


SELECTION = "nsysparse.selection"


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> None:
    """Keep a selection option (window, warm-up) for analysis_context, without widening every command's signature."""
    ctx.meta.setdefault(SELECTION, {})[str(param.name)] = value


def mapping_options(f: F) -> F:
    opts = [
        click.option(
            "--rules", "rules", multiple=True, type=click.Path(exists=True), help="Rule pack file or folder (repeatable); default: the bundled packs."
        ),
        click.option(
            "--step-pattern",
            default=None,
            show_default=False,
            help="Regex for NVTX step ranges (default matches forward, step, iteration, decode, train, prefill, ...).",
        ),
        click.option(
            "--layer-pattern",
            default=None,
            show_default=False,
            help="Regex for NVTX layer ranges (default matches layer_3, layers.3, block 3, ...).",
        ),
        click.option(
            "--nvtx",
            "nvtx_mode",
            type=click.Choice(NVTX_MODES),
            default="auto",
            show_default=True,
            help="Use NVTX for steps, layers and ops (auto), for steps only (steps), or not at all (off).",
        ),
        click.option("--device", type=int, default=None, help="Only this GPU (default: all, averaged per step)."),
        click.option(
            "--window",
            default=None,
            expose_value=False,
            callback=_remember,
            help="Only steps in this window: A:B (ms from the first step), steps=I:J, or an NVTX range name (generate#3 = in the third).",
        ),
        click.option(
            "--inductor-provenance",
            default=None,
            metavar="DIR",
            expose_value=False,
            callback=_remember,
            help="TorchInductor's debug folder of the profiled run (TORCH_COMPILE_DEBUG=1; searched for output_code.py): classify its Triton kernels by the ATen ops it recorded (compare: for both traces).",
        ),
        click.option(
            "--include-warmup",
            is_flag=True,
            expose_value=False,
            callback=_remember,
            help="Count warm-up steps in the statistics (by default they are listed by `steps` but left out).",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def analysis_context(
    t: Trace,
    rules: tuple[str, ...],
    step_pattern: str | None,
    layer_pattern: str | None,
    nvtx_mode: str,
    device: int | None,
    rule_set: RuleSet | None = None,
) -> AnalysisContext:
    """The command's analysis context: rules loaded once (or `rule_set`, shared between traces), the device
    selection, and a progress bar on a terminal while the trace is loaded and mapped. A pattern left at None
    (the option's default) is the structure's default."""
    from nsysparse.analyses.context import AnalysisContext, StructureOptions
    from nsysparse.structure.mapping import DEFAULT_LAYER_PATTERN
    from nsysparse.structure.steps import DEFAULT_STEP_PATTERN

    click_ctx = click.get_current_context(silent=True)
    selection = click_ctx.meta.get(SELECTION, {}) if click_ctx is not None else {}
    options = StructureOptions(
        DEFAULT_STEP_PATTERN if step_pattern is None else step_pattern,
        DEFAULT_LAYER_PATTERN if layer_pattern is None else layer_pattern,
        nvtx_mode,
        selection.get("inductor_provenance"),
    )

    def with_progress(run: Callable[[], Mapping]) -> Mapping:
        kinds = [k for k in ("kernels", "api", "nvtx", "memcpy", "memset") if t.has(k) and (k != "nvtx" or nvtx_mode != "off")]
        what = ", ".join(f"{t.count(k):,} {LABELS[k]}" for k in kinds if k in LABELS)
        with Progress(total=2) as p:
            with p.stage(f"loading {what}"):
                t.prefetch(*kinds)
            with p.stage("mapping kernels to steps, layers and ops"):
                return run()

    return AnalysisContext(
        t,
        rule_set,
        device_id=device,
        options=options,
        rule_paths=rules,
        on_map=with_progress,
        include_warmup=bool(selection.get("include_warmup")),
        window=selection.get("window"),
    )


LABELS = {"kernels": "kernels", "api": "API calls", "nvtx": "NVTX events"}


def structure_meta(ac: AnalysisContext) -> dict[str, Any]:
    m = ac.mapping
    every = ac.structure.steps
    phases = ", ".join(f"{n} {p}" for p, n in every["phase"].value_counts(sort=False).items()) if len(every) else "none"
    left_out = len(every) - len(m.steps)
    counted = f"; {len(m.steps)} counted, {left_out} warm-up left out (--include-warmup counts them)" if left_out else ""
    window = f" in --window {ac.window}" if ac.window else ""
    return {
        "steps": f"{len(every)}{window} ({m.step_source}, confidence {m.step_confidence:.2f}): {phases}{counted}",
        "layers": f"{len(m.layers)} instances ({m.layer_source})",
        "rules": f"{', '.join(m.rules.packs)} ({m.rules.digest})",
    }


@cli.command()
@trace_argument()
@mapping_options
@click.option("--by-kind", is_flag=True, help="One row per (layer kind, op) instead of per op.")
@output_options()
@click.pass_context
def ops(
    ctx: click.Context,
    trace: str,
    rules: tuple[str, ...],
    step_pattern: str,
    layer_pattern: str,
    nvtx_mode: str,
    device: int | None,
    by_kind: bool,
    fmt: str,
    out: str | None,
) -> None:
    """Per logical op: instances per step, mean and median µs of one instance, total per step, share,
    and where the name came from (nvtx > template > class)."""
    from nsysparse.analyses.ops import op_summary

    with load(trace) as t:
        ac = analysis_context(t, rules, step_pattern, layer_pattern, nvtx_mode, device)
        df = op_summary(ac, by_kind=by_kind)
        if not by_kind:
            df = df.drop(columns=["layer_kind"])
        emit(ctx, Result(frames={"ops": df}, meta=structure_meta(ac), title="nsysparse ops"), fmt, out, ac)


@cli.command()
@trace_argument()
@mapping_options
@click.option("--top-unmapped", type=click.IntRange(min=0), default=10, show_default=True, help="How many unmapped kernels to list.")
@output_options(("table", "csv", "json", "parquet"))
@click.pass_context
def layers(
    ctx: click.Context,
    trace: str,
    rules: tuple[str, ...],
    step_pattern: str,
    layer_pattern: str,
    nvtx_mode: str,
    device: int | None,
    top_unmapped: int,
    fmt: str,
    out: str | None,
) -> None:
    """The per-layer cost table: layer kind × op with per-instance µs, the cost of one layer of each kind,
    layers per kind per step, and the reconciliation Σ(kind × count) + other ops − overlap + idle = step time.

    CSV/Parquet write the layer kind × op table; JSON holds everything (docs/columns.md#layers)."""
    from nsysparse.analyses.layers import layer_report

    with load(trace) as t:
        ac = analysis_context(t, rules, step_pattern, layer_pattern, nvtx_mode, device)
        r = layer_report(ac, top_unmapped=top_unmapped)
        meta = {
            **structure_meta(ac),
            "step time": f"{r.step_time_us:.1f} µs median wall, {r.step_busy_us:.1f} µs busy" if r.step_time_us == r.step_time_us else "no steps found",
            "layers per step": ", ".join(f"{k} {v:g}" for k, v in r.layer_kinds.items()) or "none",
            "unmapped": f"{r.unmapped_share * 100:.2f} % of kernel time" if r.unmapped_share == r.unmapped_share else "- (no steps)",
            "named": f"{r.named_share * 100:.2f} % of in-step kernel time by NVTX or a template (the rest by kernel class only)"
            if r.named_share == r.named_share
            else "-",
        }
        frames = {"layer kind × op (per instance)": r.ops, "one layer of each kind": r.kinds, "reconciliation (mean step)": r.reconciliation}
        if len(r.unmapped):
            frames["top unmapped kernels"] = r.unmapped
        emit(ctx, Result(frames=frames, meta=meta, payload=r.payload() if fmt == "json" else None, title="nsysparse layers"), fmt, out, ac)


@cli.command()
@trace_argument()
@mapping_options
@output_options()
@click.pass_context
def steps(
    ctx: click.Context, trace: str, rules: tuple[str, ...], step_pattern: str, layer_pattern: str, nvtx_mode: str, device: int | None, fmt: str, out: str | None
) -> None:
    """One row per step (forward pass / training iteration): start, wall and busy time, kernels, the gap
    before it, and whether its boundaries came from NVTX or were inferred (with a confidence)."""
    from nsysparse.analyses.steps import step_table
    from nsysparse.structure.period import step_period_ns

    with load(trace) as t:
        ac = analysis_context(t, rules, step_pattern, layer_pattern, nvtx_mode, device)
        df = step_table(ac)
        meta = structure_meta(ac)
        if len(df):
            meta["wall"] = f"median {df['wall_us'].median():.1f} µs, busy {df['busy_us'].median():.1f} µs"
            meta["step period"] = f"median {step_period_ns(ac.mapping.steps) / 1e3:.1f} µs (start to next start)"
        emit(ctx, Result(frames={"steps": df}, meta=meta, title="nsysparse steps"), fmt, out, ac)
