"""Options every command spells the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import click

from nsysparse.cli.render import Result, write
from nsysparse.outputs import terminal_text

if TYPE_CHECKING:
    from nsysparse.trace import Trace


class HasNotes(Protocol):
    """A trace or an analysis context: whatever carries the notes of a command's inputs."""

    @property
    def notes(self) -> list[str]: ...


F = Callable[..., Any]


def trace_argument(name: str = "trace") -> Callable[[F], F]:
    # readable=False: an unreadable input is nsysparse's one-line error (exit 1), not Click's usage text (exit 2)
    return click.argument(name, metavar=name.upper(), type=click.Path(dir_okay=True, readable=False, path_type=str))


def format_option(choices: tuple[str, ...] = ("table", "csv", "json", "parquet"), default: str = "table") -> Callable[[F], F]:
    return click.option("-f", "--format", "fmt", type=click.Choice(choices), default=default, show_default=True, help="Output format.")


def output_option(f: F) -> F:
    return click.option("-o", "--output", "out", type=click.Path(dir_okay=False, readable=False, path_type=str), help="Write to this file instead of stdout.")(
        f
    )


def output_options(choices: tuple[str, ...] = ("table", "csv", "json", "parquet")) -> Callable[[F], F]:
    def deco(f: F) -> F:
        return format_option(choices)(output_option(f))

    return deco


def emit(ctx: click.Context, result: Result, fmt: str, out: str | None, *sources: HasNotes) -> None:
    """Write `result`; its notes are merged here, once, with those of `sources` (each note shown once)."""
    quiet = bool(ctx.find_root().obj and ctx.find_root().obj.get("quiet"))
    result.notes = list(dict.fromkeys([*(n for s in sources for n in s.notes), *result.notes]))
    if quiet:
        result.notes = []
    write(result, fmt, out)
    if result.notes and fmt != "table" and not quiet:
        for n in result.notes:
            click.echo(terminal_text(f"note: {n}", keep_layout=False), err=True)


def load(path: str) -> Trace:
    from nsysparse.trace import open_trace  # pandas and DuckDB: imported when a command runs, not for --help or a usage error

    return open_trace(path)
