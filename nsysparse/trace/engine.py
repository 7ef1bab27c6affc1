"""Read-only query engines over one SQLite export: stdlib sqlite3 and DuckDB's sqlite scanner.

Both open the file read-only (sqlite3 URI `mode=ro&immutable=1`, which creates no -wal, -shm or journal
file beside the input; DuckDB `ATTACH ... (TYPE sqlite, READ_ONLY)`, never used for a WAL-mode file, for
which it would create them), and
both run the same plain SQL (the loaders use a dialect common to both). DuckDB scans large tables with
all cores and hands back numpy columns; sqlite3 serves small files, metadata, and is the fallback when
the DuckDB extension is missing or refuses a table. The extension comes from the PyPI package
`duckdb-extension-sqlite-scanner` and is loaded by path: nothing is downloaded at run time.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from nsysparse.errors import TraceError, redact, reraise_interrupt
from nsysparse.trace import pages, validate

log = logging.getLogger("nsysparse.trace")

# Files at least this large are scanned with DuckDB; smaller ones with sqlite3 (DuckDB's start-up
# costs more than it saves on small files). NSYSPARSE_ENGINE=sqlite|duckdb forces one.
DUCKDB_MIN_BYTES = 48 * 1024 * 1024
# A table the caller counted below this many rows is read with sqlite3 even in a large file: starting
# DuckDB and its scanner (about 0.25 s) costs more than sqlite3 takes for it (6,000 strings: 9 ms).
SMALL_TABLE_ROWS = 100_000


def sqlite_scanner_path() -> Path | None:
    """Path of the sqlite_scanner extension shipped by the PyPI package, or None."""
    try:
        import duckdb
        import duckdb_extension_sqlite_scanner as pkg
    except ImportError:
        return None
    root = Path(pkg.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    candidate = root / "sqlite_scanner.duckdb_extension"
    if candidate.exists():
        return candidate
    found = sorted(Path(pkg.__file__).parent.glob("extensions/*/sqlite_scanner.duckdb_extension"))
    return found[-1] if found else None


@dataclass(frozen=True)
class Column:
    """One output column of a `Select`: a table column, the first non-NULL of several (COALESCE), or a
    constant (`sources` empty; None is NULL). `text` reads it as text (CAST AS TEXT)."""

    alias: str
    sources: tuple[str, ...] = ()
    constant: int | None = None
    text: bool = False

    def sql(self) -> str:
        if not self.sources:
            return f"{'NULL' if self.constant is None else int(self.constant)} AS {self.alias}"
        expr = f'"{self.sources[0]}"' if len(self.sources) == 1 else f"COALESCE({', '.join(chr(34) + c + chr(34) for c in self.sources)})"
        return f"{f'CAST({expr} AS TEXT)' if self.text else expr} AS {self.alias}"


@dataclass(frozen=True)
class Select:
    """A plain SELECT over one table: columns, and optionally only the rows whose `keep[0]` is one of
    `keep[1]`. What both SQL engines run (`sql`) and what the page reader answers without SQL."""

    table: str
    columns: tuple[Column, ...]
    keep: tuple[str, tuple[int, ...]] | None = None
    nothing: bool = False  # no row at all (the filter's column is missing)

    def sql(self) -> str:
        sql = f'SELECT {", ".join(c.sql() for c in self.columns)} FROM "{self.table}"'
        if self.nothing:
            return sql + " WHERE 0 = 1"
        if self.keep is not None:
            sql += f' WHERE "{self.keep[0]}" IN ({", ".join(str(int(v)) for v in self.keep[1])})'
        return sql


class Engine:
    """Owns the connections to one file. Every failure surfaces as TraceError naming the file."""

    def __init__(self, path: Path, prefer: str | None = None) -> None:
        self.path = path
        self._prefer = (prefer or os.environ.get("NSYSPARSE_ENGINE") or "auto").lower()
        # immutable: no lock, no journal, no -wal/-shm file is ever created beside the input (a trace in WAL
        # mode otherwise gets both, and cannot be read at all in a read-only folder)
        uri = f"file:{quote(os.fsencode(path.resolve()))}?mode=ro&immutable=1"
        self._wal = _is_wal(path)
        try:
            self._sqlite = sqlite3.connect(uri, uri=True, check_same_thread=False)
            # a value with an invalid UTF-8 byte (a captured environment variable, a path) must not make every
            # query fail, nor end up quoted in an error message: decode with replacement characters
            self._sqlite.text_factory = _decode_text
            self._sqlite.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as err:
            raise self._error(err) from None
        self._duck: Any = None
        self._duck_failed = False
        self._pages: pages.PageFile | None = None
        self._pages_failed = self._prefer != "auto" or self._wal
        self._layouts: dict[str, pages.Layout | None] = {}
        # within `sharing()`: per table, the columns read from its pages so far, all rows ("int" or "text",
        # the reader's array), for later reads of the same columns
        self._shared: dict[str, dict[str, tuple[str, np.ndarray]]] | None = None
        self._local = threading.local()
        self._lock = threading.Lock()

    # -- errors -------------------------------------------------------------------------------------
    def _error(self, err: Exception) -> TraceError:
        msg = redact(str(err)) or type(err).__name__  # never the trace text the library quotes
        low = msg.lower()
        if "malformed" in low or "not a database" in low or "corrupt" in low or "disk i/o" in low:
            return TraceError(f"{self.path}: cannot be read ({msg}); the file looks truncated or damaged", "Copy or export it again")
        return TraceError(f"{self.path}: query failed ({msg})", "The export may have been modified; re-export it with nsys export")

    # -- sqlite3 ------------------------------------------------------------------------------------
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Small queries (metadata, counts) through sqlite3."""
        try:
            return self._sqlite.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise self._error(err) from None

    def _sqlite_fetch(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of `sql` through sqlite3; an SQLite error names the file."""
        try:
            cur = self._sqlite.execute(sql)
            return [d[0] for d in cur.description], cur.fetchall()
        except sqlite3.Error as err:
            raise self._error(err) from None

    def _sqlite_frame(self, sql: str) -> pd.DataFrame:
        names, data = self._sqlite_fetch(sql)
        if not data:
            return pd.DataFrame({n: pd.Series(dtype="object") for n in names})
        cols = list(zip(*data))
        return pd.DataFrame({n: _column(c) for n, c in zip(names, cols)})

    # -- duckdb -------------------------------------------------------------------------------------
    def prefers_duckdb(self, rows: int | None = None) -> bool:
        """Whether a query goes to DuckDB; `rows`, when the caller knows it, is the size of the table read
        (below `SMALL_TABLE_ROWS`: sqlite3, unless NSYSPARSE_ENGINE=duckdb)."""
        if rows is not None and rows < SMALL_TABLE_ROWS and self._prefer != "duckdb":
            return False
        if self._duck_failed or self._prefer == "sqlite" or self._wal:  # DuckDB's scanner would create -wal/-shm files
            return False
        if self._prefer == "duckdb":
            return True
        try:
            return self.path.stat().st_size >= DUCKDB_MIN_BYTES
        except OSError:
            return False

    def duckdb(self) -> Any:
        if self._duck is not None:
            return self._duck
        ext = sqlite_scanner_path()
        if ext is None:
            log.debug("duckdb sqlite_scanner extension not installed; using sqlite3")
            self._duck_failed = True
            return None
        import duckdb

        try:
            con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
            con.execute(f"LOAD '{_sql_str(str(ext))}'")
            con.execute(f"ATTACH '{_sql_str(str(self.path.resolve()))}' AS nsys (TYPE sqlite, READ_ONLY)")
            con.execute("USE nsys")
        except Exception as err:  # duckdb.Error and friends: fall back to sqlite3
            reraise_interrupt(err)
            log.debug("duckdb unavailable (%s); using sqlite3", err)
            self._duck_failed = True
            return None
        self._duck = con
        return con

    def frame(self, sql: str, rows: int | None = None) -> pd.DataFrame:
        """Run a (large) SELECT and return a DataFrame; DuckDB when worthwhile (see `prefers_duckdb`),
        sqlite3 otherwise. Safe to call from several threads at once (each thread gets its own DuckDB cursor)."""
        if self.prefers_duckdb(rows):
            con = self._thread_cursor()
            if con is not None:
                try:
                    return con.execute(sql).df()
                except Exception as err:
                    reraise_interrupt(err)
                    # a value of the wrong type: the file is damaged, say where (never retried with sqlite3)
                    bad = validate.diagnose(self.path, self.rows, sql, str(err)) if "Mismatch Type" in str(err) else None
                    if bad is not None:
                        raise bad from None
                    log.debug("duckdb query failed (%s); retrying with sqlite3", err)
        return self._sqlite_frame(sql)

    def arrays(self, sql: str, masked: bool = False) -> dict[str, np.ndarray]:
        """Run a (large) SELECT and return its columns as numpy arrays (DuckDB's `fetchnumpy` when worthwhile,
        no DataFrame in between). A column holding NULLs comes back as float64 with NaN (integers) or object
        with None; with `masked`, an integer column holding NULLs comes back instead as an int64
        `np.ma.MaskedArray` (the NULLs masked, exact values kept) for the caller to fill."""
        if self.prefers_duckdb():
            con = self._thread_cursor()
            if con is not None:
                try:
                    got = con.execute(sql).fetchnumpy().items()
                    return {name: _masked_int(col) if masked else _plain(col) for name, col in got}
                except Exception as err:
                    reraise_interrupt(err)
                    bad = validate.diagnose(self.path, self.rows, sql, str(err)) if "Mismatch Type" in str(err) else None
                    if bad is not None:
                        raise bad from None
                    log.debug("duckdb query failed (%s); retrying with sqlite3", err)
        names, data = self._sqlite_fetch(sql)
        if not data:
            return {n: np.zeros(0, dtype=object) for n in names}
        return {n: _masked_int(_column(c)) if masked else np.asarray(_column(c)) for n, c in zip(names, zip(*data))}

    # -- pages --------------------------------------------------------------------------------------
    def from_pages(self, sel: Select) -> dict[str, np.ndarray] | None:
        """`sel` answered from the file's pages without SQL (see `pages`): the columns as `arrays(...,
        masked=True)` would return them; None when the page reader cannot vouch for the answer (the
        caller then runs `sel.sql()`, whose result and errors are the reference)."""
        reader = None if sel.nothing else self._page_file()
        table = self._layout(sel.table) if reader is not None else None
        if reader is None or table is None:
            return None
        ints = [c for col in sel.columns if not col.text for c in col.sources]
        texts = [c for col in sel.columns if col.text for c in col.sources]
        if any(col.text and len(col.sources) > 1 for col in sel.columns) or set(ints) & set(texts):
            return None  # COALESCE of texts, or a column read both ways: SQL's
        if sel.keep is not None:
            ints.append(sel.keep[0])
        ints, texts = list(dict.fromkeys(ints)), list(dict.fromkeys(texts))
        got = self._from_shared(sel.table, ints, texts)
        if got is None:
            try:
                got = reader.read(table, ints, texts=texts)
            except Exception as err:  # a damaged file the checks let through: SQL then names the damage
                reraise_interrupt(err)
                log.debug("page reader failed on %s (%s); reading through SQL", sel.table, type(err).__name__)
                return None
            if got:
                self._share(sel.table, got, ints, texts)
        if not got:
            return None
        n = len(next(iter(got.values())))
        rows: np.ndarray | None = None
        if sel.keep is not None:
            key = got[sel.keep[0]]
            rows = np.isin(np.asarray(np.ma.getdata(key)), np.asarray(sel.keep[1], dtype=np.int64)) & ~np.ma.getmaskarray(key)
            n = int(rows.sum())
        out: dict[str, np.ndarray] = {}
        for col in sel.columns:
            if not col.sources:
                if col.constant is None:
                    out[col.alias] = np.ma.MaskedArray(np.zeros(n, dtype=np.int64), mask=np.ones(n, dtype=bool))
                else:
                    out[col.alias] = np.full(n, int(col.constant), dtype=np.int64)
                continue
            value = _coalesce([got[c] for c in col.sources])
            out[col.alias] = value if rows is None else value[rows]
        return out

    @contextmanager
    def sharing(self) -> Iterator[None]:
        """Within: the columns read from a table's pages are kept, and a later read of columns already
        read (by another caller: the loaders, then `info`'s aggregates) is answered from them instead
        of the pages. Dropped on leaving (nested: the outermost leaves)."""
        if self._shared is not None:
            yield
            return
        self._shared = {}
        try:
            yield
        finally:
            self._shared = None

    def _share(self, table: str, got: dict[str, np.ndarray], ints: list[str], texts: list[str]) -> None:
        if self._shared is None:
            return
        with self._lock:
            kept = self._shared.setdefault(table, {})
            for c, v in got.items():
                kept[c] = ("int" if c in ints else "text", v)

    def _from_shared(self, table: str, ints: list[str], texts: list[str]) -> dict[str, np.ndarray] | None:
        """The reader's answer for these columns from what `sharing` kept of `table`, or None."""
        kept = self._shared.get(table) if self._shared is not None else None
        if not kept or any(kept.get(c, ("", None))[0] != "int" for c in ints) or any(kept.get(c, ("", None))[0] != "text" for c in texts):
            return None
        return {c: kept[c][1] for c in (*ints, *texts)}

    def count_rows(self, table: str) -> int:
        """Rows of `table`: its leaf cells counted on the pages (no record decoded), else count(*)."""
        layout = self._layout(table) if self._page_file() is not None else None
        if layout is not None and self._pages is not None:
            try:
                n = self._pages.count(layout)
            except Exception as err:  # (as in `from_pages`)
                reraise_interrupt(err)
                n = None
            if n is not None:
                return n
        return int(self.rows(f'SELECT count(*) FROM "{table}"')[0][0])

    def _page_file(self) -> pages.PageFile | None:
        if self._pages_failed:
            return None
        with self._lock:  # (loader threads may ask at once)
            if self._pages is None and not self._pages_failed:
                try:
                    reader = pages.PageFile(self.path)
                except (OSError, ValueError) as err:
                    log.debug("page reader unavailable (%s)", err)
                    self._pages_failed = True
                    return None
                if not reader.ok:  # not a plain SQLite 3 file in rollback-journal mode
                    reader.close()
                    self._pages_failed = True
                    return None
                self._pages = reader
        return self._pages

    def _layout(self, table: str) -> pages.Layout | None:
        with self._lock:
            if table not in self._layouts:
                self._layouts[table] = pages.layout(self.rows, table)
            return self._layouts[table]

    def reads_pages(self) -> bool:
        """Whether large tables are read from the file's pages first (see `pages`): not in WAL mode, nor
        with NSYSPARSE_ENGINE=sqlite|duckdb, nor when the file cannot be mapped or is not a plain file."""
        return self._page_file() is not None

    def uses_duckdb(self, rows: int | None = None) -> bool:
        """Whether a query (over a table of `rows`, when known) goes to DuckDB: preferred and available."""
        return self.prefers_duckdb(rows) and self.duckdb() is not None

    def _thread_cursor(self) -> Any:
        """The DuckDB connection on the main thread; a cursor of it (same attached file) elsewhere."""
        con = self.duckdb()
        if con is None or threading.current_thread() is threading.main_thread():
            return con
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                cur = con.cursor()
            cur.execute("USE nsys")
            self._local.cursor = cur
        return cur

    def close(self) -> None:
        if self._pages is not None:
            self._pages.close()
            self._pages = None
        if self._duck is not None:
            self._duck.close()
            self._duck = None
        self._sqlite.close()


def _coalesce(columns: list[np.ndarray]) -> np.ndarray:
    """The first non-NULL of `columns` per row (masked int64 arrays or plain ones), masked where all are."""
    value = columns[0]
    for other in columns[1:]:
        if not isinstance(value, np.ma.MaskedArray):
            break
        mask = np.ma.getmaskarray(value)
        data = np.where(mask, np.ma.getdata(other), value.data)
        still = mask & np.ma.getmaskarray(other)
        value = np.ma.MaskedArray(data, mask=still) if still.any() else data
    return value


def _is_wal(path: Path) -> bool:
    """Whether the database is in WAL mode (header bytes 18 and 19, the file format versions, are 2)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return False
    return len(head) == 20 and 2 in (head[18], head[19])


def _decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _sql_str(text: str) -> str:
    return text.replace("'", "''")


def _plain(col: Any) -> np.ndarray:
    """A fetchnumpy column without its mask: NULLs as NaN (numbers) or None (anything else)."""
    if not isinstance(col, np.ma.MaskedArray):
        return np.asarray(col)
    if not col.mask.any():
        return np.asarray(col.data)
    if col.dtype.kind in "iufb":
        out = col.data.astype(np.float64)
        out[col.mask] = np.nan
        return out
    obj = col.data.astype(object)
    obj[np.ma.getmaskarray(col)] = None
    return obj


def _masked_int(col: Any) -> np.ndarray:
    """An integer column with NULLs as an int64 masked array (0 under the mask); any other column as `_plain`."""
    if isinstance(col, np.ma.MaskedArray):
        if not col.mask.any():
            return np.asarray(col.data)
        if col.dtype.kind in "iub":
            return np.ma.MaskedArray(col.data.astype(np.int64, copy=False), mask=np.ma.getmaskarray(col))
        return _plain(col)
    if isinstance(col, pd.api.extensions.ExtensionArray) and pd.api.types.is_integer_dtype(col.dtype):
        mask = np.asarray(col.isna())
        return np.ma.MaskedArray(col.to_numpy(dtype=np.int64, na_value=0), mask=mask) if mask.any() else col.to_numpy(dtype=np.int64)
    values = np.asarray(col)
    if values.dtype == object and len(values) and bool(pd.isna(values).all()):  # every value NULL
        return np.ma.MaskedArray(np.zeros(len(values), dtype=np.int64), mask=np.ones(len(values), dtype=bool))
    return values


def _column(values: tuple[Any, ...]) -> Any:
    """Build a numpy column from sqlite3 values: int64 when all ints, float when NULLs mix in ints."""
    first = next((v for v in values if v is not None), None)
    if isinstance(first, int) and not isinstance(first, bool):
        if all(isinstance(v, int) for v in values):
            try:
                return np.fromiter(values, dtype=np.int64, count=len(values))
            except OverflowError:
                return np.array(values, dtype=object)
        return pd.array(values, dtype="Int64") if all(v is None or isinstance(v, int) for v in values) else np.array(values, dtype=object)
    if isinstance(first, float):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.array(values, dtype=object)
