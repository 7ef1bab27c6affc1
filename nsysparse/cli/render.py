"""Render command results as a terminal table (rich), CSV, JSON, Parquet or Markdown.

A command returns a `Result`: named frames (the first is the primary one written by csv/parquet), a
`meta` block of headline facts, optional JSON payload (else frames become record lists), and notes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nsysparse.errors import UsageError, reraise_interrupt
from nsysparse.outputs import terminal_text, write_text, write_with

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "csv", "json", "parquet", "markdown")


@dataclass
class Result:
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    title: str = ""

    @property
    def primary(self) -> pd.DataFrame:
        import pandas as pd

        return next(iter(self.frames.values())) if self.frames else pd.DataFrame()


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    out = df.copy()
    for c in out.columns:
        if isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = out[c].astype(object)
    return out


def write(result: Result, fmt: str, out: str | None) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", f"Use one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        if not out:
            raise UsageError("--format parquet needs -o/--output PATH")
        write_parquet(_plain(result.primary), Path(out))
        return
    if fmt == "csv":
        text = _plain(result.primary).to_csv(index=False)
    elif fmt == "json":
        payload = result.payload if result.payload is not None else {"meta": result.meta, **{k: v for k, v in result.frames.items()}, "notes": result.notes}
        from nsysparse.formatting import jsonable

        text = json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n"
    elif fmt == "markdown":
        text = to_markdown(result)
    else:
        if out:
            text = to_markdown(result)
        else:
            print_table(result)
            return
    if out:
        write_text(out, text)
    else:
        sys.stdout.write(text if fmt == "json" else terminal_text(text))


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    import duckdb

    def copy(tmp: Path) -> None:
        con = duckdb.connect(":memory:")
        try:
            con.register("frame", df)
            con.execute(f"COPY frame TO '{str(tmp).replace(chr(39), chr(39) * 2)}' (FORMAT parquet)")
        except Exception as err:  # Ctrl-C inside DuckDB: an interrupt, and the partial file is removed
            reraise_interrupt(err)
            raise
        finally:
            con.close()

    write_with(path, copy)


def print_table(result: Result) -> None:
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from nsysparse.formatting import fmt_value

    # On a terminal rich uses its width; piped output gets room for long kernel names.
    console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)
    if result.title:
        console.print(f"[bold]{_esc(result.title)}[/bold]")
    for k, v in result.meta.items():
        console.print(f"{_esc(k)}: {_esc(_meta_text(v))}", highlight=False)
    for name, df in result.frames.items():
        table = Table(title=_esc(name) if name else None, title_justify="left", show_lines=False)
        for c in df.columns:
            numeric = pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
            table.add_column(_esc(str(c)), justify="right" if numeric else "left", overflow="fold")
        for row in df.itertuples(index=False):
            table.add_row(*(_esc(fmt_value(str(c), v)) for c, v in zip(df.columns, row)))
        console.print(table)
    for n in result.notes:
        console.print(f"note: {_esc(n)}", highlight=False)


def _meta_text(v: Any) -> str:
    from nsysparse.formatting import fmt_value

    if isinstance(v, float):
        return fmt_value("", v)
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v) or "-"
    return "-" if v is None else str(v)


def _esc(text: str) -> str:
    """Rich markup escaped, and no control characters: every string the table renderer prints goes through here."""
    from rich.markup import escape

    return escape(terminal_text(text, keep_layout=False))


def to_markdown(result: Result) -> str:
    import pandas as pd

    from nsysparse.formatting import fmt_value

    lines: list[str] = []
    if result.title:
        lines += [f"### {result.title}", ""]
    for k, v in result.meta.items():
        lines.append(f"- **{k}**: {_meta_text(v)}")
    if result.meta:
        lines.append("")
    for name, df in result.frames.items():
        if name:
            lines += [f"#### {name}", ""]
        cols = [str(c) for c in df.columns]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns) + "|")
        for row in df.itertuples(index=False):
            lines.append("| " + " | ".join(fmt_value(c, v).replace("|", "\\|") for c, v in zip(cols, row)) + " |")
        lines.append("")
    for n in result.notes:
        lines.append(f"> note: {n}")
    return "\n".join(lines).rstrip() + "\n"
