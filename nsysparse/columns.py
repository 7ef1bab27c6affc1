"""Declared output columns: every analysis states its columns (name, dtype kind, meaning) once.

Units live in the names (`_ns`, `_us`, `_ms`, `_pct`). `validate_frame` checks a frame against its
declaration; tests call it on every analysis output and `docs/columns.md` is generated from these.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

_KINDS = {
    "int": "iu",
    "float": "fiu",
    "str": "OUSTb",  # object/str/category-of-str; bool tolerated for flags rendered as text
    "bool": "b",
    "category": "OUST",
}


@dataclass(frozen=True)
class Column:
    """One output column: its name (with unit suffix), a kind (int, float, str, bool) and a meaning."""

    name: str
    kind: str
    doc: str

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown column kind {self.kind!r}")


def _dtype_char(series: pd.Series) -> str:
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "S"
    if pd.api.types.is_string_dtype(dtype):
        return "S"
    return dtype.kind


def validate_frame(df: pd.DataFrame, columns: tuple[Column, ...]) -> None:
    """Raise AssertionError-like ValueError if `df` does not have exactly the declared columns and kinds."""
    names = [c.name for c in columns]
    if list(df.columns) != names:
        raise ValueError(f"columns {list(df.columns)} != declared {names}")
    for col in columns:
        series = df[col.name]
        if series.isna().all():
            continue
        char = _dtype_char(series)
        if char not in _KINDS[col.kind]:
            raise ValueError(f"column {col.name}: dtype {series.dtype} is not {col.kind}")


def empty_frame(columns: tuple[Column, ...]) -> pd.DataFrame:
    """An empty frame with the declared columns and sensible dtypes."""
    dtypes = {"int": "int64", "float": "float64", "str": "object", "bool": "bool", "category": "object"}
    return pd.DataFrame({c.name: pd.Series(dtype=dtypes[c.kind]) for c in columns})


def describe(columns: tuple[Column, ...]) -> str:
    """Markdown table documenting columns (used by the docs generator and `--help` epilogs)."""
    lines = ["| column | kind | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.kind} | {c.doc.replace('|', chr(92) + '|')} |" for c in columns]
    return "\n".join(lines)
