"""The Click group. Errors become one line on stderr and an exit code here, and nowhere else."""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import Any

import click

from nsysparse import __version__
from nsysparse.errors import EXIT_ERROR, NsysparseError, RegressionFound, redact
from nsysparse.outputs import reset_inputs, terminal_text

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class NsysparseGroup(click.Group):
    """Turns NsysparseError (and anything unexpected) into `Error: ...` + exit code, never a traceback."""

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
            _stdout_to_devnull()
            ctx.exit(0)
        except KeyboardInterrupt:  # outputs are written to a temporary file and renamed at the end: nothing partial is left
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except OSError as err:
            if err.errno not in _OUTPUT_ERRNOS:
                _internal_error(ctx, err)
            # standard output refused the text (a full disk, /dev/full, a closed terminal)
            _stdout_to_devnull()
            click.echo(f"Error: standard output cannot be written ({err.strerror}).", err=True)
            ctx.exit(EXIT_ERROR)
        except MemoryError:
            click.echo("Error: out of memory while analysing the trace. Try a shorter capture or a time window.", err=True)
            ctx.exit(EXIT_ERROR)
        except Exception as err:  # a bug: say so in one line; --debug shows the traceback
            _internal_error(ctx, err)


# errno values of a write that failed for want of room or of a reader: an output problem, not a bug
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EBADF)


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


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
