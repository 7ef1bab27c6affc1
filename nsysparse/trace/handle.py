"""What the gateway's readers (tables, info, aggregates, graphs) need of an opened trace.

`Trace` (trace.py) implements it; the readers are typed against this protocol so that they never import
`Trace` itself and the gateway's modules form layers without a cycle: trace -> readers -> tables -> basics.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    import pandas as pd

    from nsysparse.trace.engine import Engine
    from nsysparse.trace.schema import ExportVersion, Schema
    from nsysparse.trace.strings import Strings

T = TypeVar("T")


class TraceHandle(Protocol):
    """An opened export: its files, engine, schema, strings, notes, and the canonical frames."""

    source_path: Path
    path: Path
    engine: Engine
    schema: Schema
    version: ExportVersion
    export_meta: dict[str, str]
    capture_meta: dict[str, list[str]]
    notes: list[str]

    @property
    def strings(self) -> Strings: ...

    def note(self, message: str) -> None: ...

    def collecting(self, build: Callable[[], T]) -> tuple[T, list[str]]: ...

    def validate(self, table: str) -> None: ...

    def has(self, kind: str) -> bool: ...

    def require(self, kind: str, purpose: str | None = None) -> None: ...

    def count(self, kind: str) -> int: ...

    def is_loaded(self, kind: str) -> bool: ...

    def capture_mode(self) -> str: ...

    def kernels(self, columns: tuple[str, ...] | None = None) -> pd.DataFrame: ...

    def api(self, columns: tuple[str, ...] | None = None) -> pd.DataFrame: ...

    def nvtx(self) -> pd.DataFrame: ...

    def launches(self) -> pd.DataFrame: ...
