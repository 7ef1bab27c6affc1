"""`info`, `kernels`, `export`: what a trace holds, kernel statistics, raw canonical tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # imported when a command runs (pandas, DuckDB, plotly), never for --help or a usage error
    pass
from nsysparse.cli.app import cli
from nsysparse.cli.options import emit, format_option, load, output_option, output_options, trace_argument
from nsysparse.cli.render import Result, write_parquet
from nsysparse.errors import UsageError
from nsysparse.outputs import write_text


@cli.command()
@trace_argument()
@output_options(("table", "json", "csv"))
@click.pass_context
def info(ctx: click.Context, trace: str, fmt: str, out: str | None) -> None:
    """What TRACE holds: nsys and schema versions, GPUs, processes, streams, table row counts, time span,
    NVTX domains and the CUDA-graph capture mode. Host, user and environment fields are never shown.

    CSV output is one `section,key,value` row per fact."""
    import pandas as pd

    with load(trace) as t:
        s = t.summary()
    frames = {
        "GPUs": pd.DataFrame(s["gpus"]),
        "processes": pd.DataFrame(s["processes"]),
        "streams": pd.DataFrame(s["streams"]),
        "NVTX domains": pd.DataFrame(s["nvtx_domains"]),
    }
    meta = {
        "file": s["file"],
        "nsys": s["nsys_version"] or f"unknown ({s['era']})",
        "export schema": s["export_schema_version"] or "unknown",
        "time span": f"{s['duration_ms']:.3f} ms ({s['start_ns']} .. {s['end_ns']} ns)" if s["duration_ms"] is not None else "no events",
        "tables": ", ".join(f"{k} {v:,}" for k, v in s["tables"].items()) or "none",
        "missing": ", ".join(s["missing_tables"]) or "none",
        "cuda graphs": f"{s['cuda_graph_launches']} launches, trace mode {s['cuda_graph_trace_mode']}",
        "time slice": f"{'yes' if s['time_slice'] else 'no'} ({s['time_slice_reason']})",
        "nvtx strings": s["nvtx_strings"],
    }
    if fmt == "csv":
        rows = [("trace", k, v) for k, v in s.items() if not isinstance(v, (list, dict))]
        rows += [("tables", k, v) for k, v in s["tables"].items()]
        for section in ("gpus", "processes", "streams", "nvtx_domains"):
            for i, rec in enumerate(s[section]):
                rows += [(section, f"{i}.{k}", v) for k, v in rec.items()]
        result = Result(frames={"info": pd.DataFrame(rows, columns=["section", "key", "value"])}, notes=list(s["notes"]))
    else:
        notes = [] if fmt == "json" else list(s["notes"])  # JSON carries them in the payload
        result = Result(
            frames={k: v for k, v in frames.items() if len(v)}, meta=meta, payload=s if fmt == "json" else None, title="nsysparse info", notes=notes
        )
    emit(ctx, result, fmt, out)


@cli.command()
@trace_argument()
@click.option(
    "--name",
    "name",
    type=click.Choice(["demangled", "short", "mangled"]),
    default="demangled",
    show_default=True,
    help="Which kernel name to group by (nsys stats groups by demangled).",
)
@click.option("--by-launch-config", is_flag=True, help="Also group by grid and block dimensions (as nsys cuda_gpu_kern_gb_sum).")
@click.option("--device", type=int, default=None, help="Only kernels on this device id.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show only the top N rows.")
@output_options()
@click.pass_context
def kernels(ctx: click.Context, trace: str, name: str, by_launch_config: bool, device: int | None, limit: int | None, fmt: str, out: str | None) -> None:
    """Per-kernel statistics: count, total, mean, median, min, max, stddev (µs) and share of kernel time.

    The same numbers as `nsys stats -r cuda_gpu_kern_sum` on the same file, in µs, same order."""
    from nsysparse.analyses.context import AnalysisContext

    with load(trace) as t:
        summarise = globals().get("kernel_summary") or __getattr__("kernel_summary")
        df = summarise(AnalysisContext(t, device_id=device), name=name, by_launch_config=by_launch_config)
        total_ms = df["total_us"].sum() / 1e3
        if limit:
            df = df.head(limit)
        result = Result(frames={"kernels": df}, meta={"kernel names": len(df), "summed kernel time": f"{total_ms:.3f} ms"}, title="nsysparse kernels")
        emit(ctx, result, fmt, out, t)


EXPORTABLE = ("kernels", "api", "nvtx", "memcpy", "memset", "sync", "launches")


@cli.command()
@trace_argument()
@click.option("--what", type=click.Choice(EXPORTABLE), default="kernels", show_default=True, help="Which canonical table to write.")
@format_option(("csv", "parquet", "json"), default="csv")
@output_option
@click.pass_context
def export(ctx: click.Context, trace: str, what: str, fmt: str, out: str | None) -> None:
    """Write one canonical table of TRACE (names resolved, times in ns) as CSV, Parquet or JSON.

    Columns are documented in docs/columns.md; `launches` is kernels joined to their launching API call."""
    import pandas as pd

    if fmt == "parquet" and not out:
        raise UsageError("--format parquet needs -o/--output PATH")
    with load(trace) as t:
        if what == "launches":
            df = t.launches()
        elif what == "nvtx":
            df = t.nvtx()
        elif what in ("kernels", "api"):
            df = t.kernels(t.export_columns("kernels")) if what == "kernels" else t.api(t.export_columns("api"))
        else:
            df = getattr(t, what)()
        df = df.copy()
        for c in df.columns:
            if isinstance(df[c].dtype, pd.CategoricalDtype):
                df[c] = df[c].astype(object)
        if fmt == "parquet":
            write_parquet(df, Path(str(out)))
        elif fmt == "json":
            text = df.to_json(orient="records")
            write_text(out, text + "\n") if out else click.echo(text)
        else:
            emit(ctx, Result(frames={what: df}), fmt, out, t)


def __getattr__(name: str) -> Any:
    """`kernel_summary`, imported on first use (pandas): `kernels` calls it through this module, so that it can be replaced."""
    if name == "kernel_summary":
        from nsysparse.analyses.kernel_summary import kernel_summary

        return kernel_summary
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
