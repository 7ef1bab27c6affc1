"""Column types and value ranges of what the gateway reads, checked in the gateway, once per table.

nsys writes integers (timestamps in ns, ids, enums) and text. A value of another storage class in an
integer column (text, a BLOB, a REAL such as 1e19) or a timestamp beyond ±2^62 ns (146 years: no clock
nsys uses gets there, and two such values still subtract without overflow) means the file was modified
or damaged. Such a file gets one error naming the file, the table, the column and what was found, and
never reaches an analysis.

How it is checked costs nothing on a clean file: the page reader (`pages`) reads a column only when
every value has the storage class it reads, and otherwise hands the table to SQL; DuckDB's sqlite scanner
refuses a value that does not match the declared column type (`Engine` turns that refusal into
`diagnose`); and the loaded timestamps are range-checked in numpy. With sqlite3 (small files) every
integer column a reader uses is checked by one `typeof` scan per table before its first query
(`Trace.validate`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nsysparse.errors import TraceError

TIME_LIMIT = 2**62  # |timestamp| in ns
TIME_SOURCES = ("start", "end")
# Columns read as text (a value of another class is cast: never an error).
TEXT_SOURCES = frozenset({"text", "value", "name", "jsonText", "busLocation", "uuid", "label", "devStateName", "pciBusId"})

Rows = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def damaged(path: Path, table: str, column: str, what: str) -> TraceError:
    return TraceError(
        f"{path}: {table}.{column} holds {what}; the file was modified or damaged",
        "Re-export it from the report: nsys export --type sqlite -o OUT.sqlite REPORT.nsys-rep",
    )


def check(path: Path, rows: Rows, table: str, columns: Sequence[str]) -> None:
    """One scan over `table`: every one of `columns` (present in it) integer or NULL, timestamps in range."""
    cols = [c for c in columns if c not in TEXT_SOURCES]
    if not cols:
        return
    parts = [f"sum(CASE WHEN typeof(\"{c}\") NOT IN ('integer', 'null') THEN 1 ELSE 0 END)" for c in cols]
    times = [c for c in cols if c in TIME_SOURCES]
    parts += [f'sum(CASE WHEN typeof("{c}") = \'integer\' AND ("{c}" > {TIME_LIMIT} OR "{c}" < -{TIME_LIMIT}) THEN 1 ELSE 0 END)' for c in times]
    got = rows(f'SELECT {", ".join(parts)} FROM "{table}"', ())[0]
    for c, n in zip(cols, got[: len(cols)]):
        if n:
            raise damaged(path, table, c, _classes(rows, table, c, int(n)))
    for c, n in zip(times, got[len(cols) :]):
        if n:
            raise damaged(path, table, c, f"{int(n)} timestamp(s) beyond ±2^62 ns")


def _classes(rows: Rows, table: str, column: str, n: int) -> str:
    found = rows(f'SELECT typeof("{column}"), count(*) FROM "{table}" WHERE typeof("{column}") NOT IN (\'integer\', \'null\') GROUP BY 1 ORDER BY 2 DESC', ())
    kinds = ", ".join(f"{int(k)} {_CLASS.get(str(t), str(t))}" for t, k in found) or f"{n} non-integer"
    return f"{kinds} value(s) where nsys writes integers"


_CLASS = {"text": "text", "blob": "BLOB", "real": "real-number"}


def check_times(path: Path, table: str, values: dict[str, np.ndarray]) -> None:
    """Loaded timestamp columns within ±2^62 ns (the loaders call it: free on a clean file)."""
    for c, v in values.items():
        if len(v) and (int(v.max()) > TIME_LIMIT or int(v.min()) < -TIME_LIMIT):
            n = int(((v > TIME_LIMIT) | (v < -TIME_LIMIT)).sum())
            raise damaged(path, table, c, f"{n} timestamp(s) beyond ±2^62 ns")


_MISMATCH = re.compile(r'column "(?P<col>[A-Za-z0-9_]+)": column was declared as (?P<decl>\w+)')
_TABLES = re.compile(r'(?:FROM|JOIN)\s+"(?P<table>[A-Za-z0-9_]+)"')


def diagnose(path: Path, rows: Rows, sql: str, message: str) -> TraceError | None:
    """DuckDB refused a value of the wrong type: the error naming table and column (None when the
    column is a text column, which sqlite3 reads with a cast instead)."""
    m = _MISMATCH.search(message)
    if not m or m.group("col") in TEXT_SOURCES:
        return None
    col = m.group("col")
    for table in dict.fromkeys(t.group("table") for t in _TABLES.finditer(sql)):
        have = {r[1] for r in rows(f'PRAGMA table_info("{table}")', ())}
        if col in have:
            try:
                check(path, rows, table, [col])
            except TraceError as err:
                return err
    return None
