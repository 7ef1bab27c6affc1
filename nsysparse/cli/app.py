"""The Click group. Errors become one line on stderr and an exit code here, and nowhere else."""

from __future__ import annotations

import errno
import importlib
import logging
import os
from typing import Any

import click

from nsysparse import __version__
from nsysparse.errors import EXIT_ERROR, NsysparseError, RegressionFound, redact
from nsysparse.outputs import quiet_stdout, reset_inputs, terminal_text

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


# Each command's module, imported only when the command runs (or its own --help is asked for), and the first
# paragraph of its help: `nsysparse --help` lists the commands without importing pandas, DuckDB or plotly.
# tests/test_perf_imports.py checks both against the commands themselves.
COMMANDS = {
    "compare": "nsysparse.cli.compare",
    "export": "nsysparse.cli.inspect",
    "gaps": "nsysparse.cli.gaps",
    "generate": "nsysparse.cli.generate",
    "info": "nsysparse.cli.inspect",
    "kernels": "nsysparse.cli.inspect",
    "layers": "nsysparse.cli.structure",
    "mfu": "nsysparse.cli.models",
    "ops": "nsysparse.cli.structure",
    "predict": "nsysparse.cli.models",
    "report": "nsysparse.cli.report",
    "rules": "nsysparse.cli.rules",
    "simdiff": "nsysparse.cli.models",
    "steps": "nsysparse.cli.structure",
}
SHORT_HELP = {
    "compare": "Compare NEW against BASE: step wall/period, gaps, one layer of each kind, every (layer kind, op), and the top kernels; per key base, new, Δ µs, Δ %, noise from the per-step spread, and a verdict.",
    "export": "Write one canonical table of TRACE (names resolved, times in ns) as CSV, Parquet or JSON.",
    "gaps": "Idle GPU time between steps (forward passes) and inside them (bubbles), per device and the worst, each with a cause read from what the launching thread did meanwhile: blocked in a synchronize or copy, no CUDA calls (host work), launching slower than the GPU finishes (launch-bound), graph launch, a collective waiting for peers, or a GPU-side dependency.",
    "generate": "Run a Llama-like or DeepSeek-V3-like torch workload of known structure and write its manifest.",
    "info": "What TRACE holds: nsys and schema versions, GPUs, processes, streams, table row counts, time span, NVTX domains and the CUDA-graph capture mode. Host, user and environment fields are never shown.",
    "kernels": "Per-kernel statistics: count, total, mean, median, min, max, stddev (µs) and share of kernel time.",
    "layers": "The per-layer cost table: layer kind × op with per-instance µs, the cost of one layer of each kind, layers per kind per step, and the reconciliation Σ(kind × count) + other ops − overlap + idle = step time.",
    "mfu": "TFLOP/s per GPU, MFU against the BF16 and FP8 peaks, and tokens/s per GPU: the model's FLOPs per step (Megatron's formula, docs/predictions.md) over the step time measured in the trace.",
    "ops": "Per logical op: instances per step, mean and median µs of one instance, total per step, share, and where the name came from (nvtx > template > class).",
    "predict": "Roofline prediction per op and layer kind: FLOPs and bytes of one instance, its predicted µs on one GPU and what bounds it. The file loads back into `simdiff` (format: docs/predictions.md).",
    "report": "Write a self-contained HTML report (plotly inlined, no network needed to view it).",
    "rules": "Kernel → op rule packs (TOML under rules/; format in rules/README.md).",
    "simdiff": "Measured vs predicted per op: measured_us, predicted_us, Δ per instance, Δ × instances per forward (total_diff_ms), ratio, achieved TFLOP/s and TB/s, % of roofline; sorted by |total diff|, with measured-only and predicted-only ops and a reconciliation of the totals.",
    "steps": "One row per step (forward pass / training iteration): start, wall and busy time, kernels, the gap before it, and whether its boundaries came from NVTX or were inferred (with a confidence).",
}


class NsysparseGroup(click.Group):
    """Turns NsysparseError (and anything unexpected) into `Error: ...` + exit code, never a traceback.
    Commands are imported on first use (COMMANDS), so the group's --help and usage errors stay light."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(COMMANDS[cmd_name])  # registers its commands on this group
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of --help from SHORT_HELP (no command module imported), as Click writes it."""
        names = [n for n in self.list_commands(ctx) if n in self.commands or n in SHORT_HELP]
        names = [n for n in names if not (n in self.commands and self.commands[n].hidden)]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for n in names:
            cmd = self.commands.get(n) or click.Command(n, help=SHORT_HELP[n])  # the same shortening as the command's own
            text = cmd.get_short_help_str(limit)
            rows.append((n, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        reset_inputs()  # the files this command reads, which no output may overwrite
        try:
            return super().invoke(ctx)
        except RegressionFound as err:
            click.echo(terminal_text(f"Regression: {err}", keep_layout=False), err=True)
            ctx.exit(err.exit_code)
        except NsysparseError as err:
            click.echo(terminal_text(f"Error: {err}", keep_layout=False), err=True)
            ctx.exit(err.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:
            # Output piped into `head` and the like: stop quietly.
            quiet_stdout()
            ctx.exit(0)
        except KeyboardInterrupt:  # outputs are written to a temporary file and renamed at the end: nothing partial is left
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except OSError as err:
            if err.errno not in _OUTPUT_ERRNOS:
                _internal_error(ctx, err)
            # standard output refused the text (a full disk, /dev/full, a closed terminal)
            quiet_stdout()
            click.echo(f"Error: standard output cannot be written ({err.strerror}).", err=True)
            ctx.exit(EXIT_ERROR)
        except MemoryError:
            click.echo("Error: out of memory while analysing the trace. Try a shorter capture or a time window.", err=True)
            ctx.exit(EXIT_ERROR)
        except Exception as err:  # a bug: say so in one line; --debug shows the traceback
            _internal_error(ctx, err)


# errno values of a write that failed for want of room or of a reader: an output problem, not a bug
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EBADF)


def _internal_error(ctx: click.Context, err: Exception) -> None:
    if ctx.find_root().params.get("debug") or os.environ.get("NSYSPARSE_DEBUG"):
        raise err
    msg = terminal_text(redact(str(err)), keep_layout=False)  # no trace text a library error may quote
    click.echo(f"Error: internal error ({type(err).__name__}: {msg}). Rerun with --debug for the traceback and please report it.", err=True)
    ctx.exit(EXIT_ERROR)


@click.group(cls=NsysparseGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="nsysparse")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print notes about degraded data.")
@click.option(
    "--no-cache",
    is_flag=True,
    help="Neither read nor write the frame cache (also NSYSPARSE_NO_CACHE=1). The cache keeps each trace's tables in "
    "$XDG_CACHE_HOME/nsysparse/frames (~/.cache by default), at most NSYSPARSE_CACHE_MAX_MB (2048) MB.",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool, no_cache: bool) -> None:
    """Turn Nsight Systems SQLite exports of LLM training and inference into per-op, per-layer, gap,
    MFU and diff answers.

    TRACE arguments take a `.sqlite` export (or an `.nsys-rep` report when nsys is on PATH).
    Exit codes: 0 ok, 1 error, 2 usage, 3 regression found by `compare`, 130 interrupted.
    """
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    if no_cache:
        os.environ["NSYSPARSE_NO_CACHE"] = "1"  # read by the gateway's frame cache (nsysparse.trace.cache)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s")
