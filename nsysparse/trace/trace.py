"""`Trace`: one opened export. Loads canonical frames on demand and caches them on the instance."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from nsysparse.errors import MissingDataError, TraceError
from nsysparse.outputs import note_input
from nsysparse.trace import aggregates, graphs, info, tables, validate
from nsysparse.trace import schema as S
from nsysparse.trace.cache import FrameCache
from nsysparse.trace.engine import Engine
from nsysparse.trace.source import resolve_input
from nsysparse.trace.strings import Strings

_WHY_MISSING = {
    "kernels": "the capture recorded no CUDA kernels; profile with --trace=cuda and make sure the workload ran on the GPU",
    "api": "the capture has no CUDA API calls; profile with --trace=cuda",
    "nvtx": "the capture has no NVTX events; add NVTX ranges and profile with --trace=cuda,nvtx",
    "memcpy": "the capture recorded no memory copies",
    "memset": "the capture recorded no memsets",
    "sync": "the capture recorded no synchronization events",
}


T = TypeVar("T")


class Trace:
    """A read-only view of one Nsight Systems SQLite export.

    Use as a context manager, or call `close()`. All frames are canonical (see `nsysparse.trace.tables`).
    """

    def __init__(self, path: str | os.PathLike[str], engine: str | None = None) -> None:
        self.source_path = Path(path)
        self.path = resolve_input(path)
        note_input(self.source_path)  # the report and its export: no output may overwrite either
        note_input(self.path)
        self.engine = Engine(self.path, prefer=engine)
        try:
            self.schema = S.probe(self.engine.rows)
            if not S.is_nsys_export(self.schema):
                raise TraceError(
                    f"{self.path}: is an SQLite database but not an Nsight Systems export (no StringIds or CUPTI/NVTX tables)",
                    "Pass a file written by: nsys export --type sqlite",
                )
            self.export_meta = self._key_values(self.schema.first(*S.META_EXPORT_TABLES))
            self.capture_meta = self._capture_values()
            self.version = S.detect_version(self.schema, self.export_meta)
        except Exception:
            self.engine.close()
            raise
        self.notes: list[str] = []
        self._strings: Strings | None = None
        self._frames: dict[str, pd.DataFrame] = {}
        self._frame_cols: dict[str, tuple[str, ...]] = {}
        self._counts: dict[str, int] = {}
        self._api_index: tuple[pd.DataFrame, tables.LaunchIndex] | None = None
        self._validated: set[tuple[str, bool]] = set()  # (table, checked by DuckDB at query time)
        self._collect = threading.local()  # notes raised while one frame loads (stored with it in the cache)
        self._strings_lock = threading.Lock()
        self.cache = FrameCache(self.path)

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> Trace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.cache.wait()
        finally:
            self.engine.close()

    def note(self, message: str) -> None:
        sink = getattr(self._collect, "notes", None)
        if sink is not None and message not in sink:
            sink.append(message)
        if message not in self.notes:
            self.notes.append(message)

    def collecting(self, build: Callable[[], T]) -> tuple[T, list[str]]:
        """Run `build` and return what it returns with the notes it raised (on this thread), those of
        builds nested in it included (they are the outer build's notes too)."""
        outer = getattr(self._collect, "notes", None)
        inner: list[str] = []
        self._collect.notes = inner
        try:
            frame = build()
            return frame, list(inner)
        finally:
            self._collect.notes = outer
            if outer is not None:
                outer.extend(n for n in inner if n not in outer)

    def _cached(self, kind: str, columns: tuple[str, ...], build: Callable[[], pd.DataFrame], notes_now: bool = True) -> tuple[pd.DataFrame, list[str]]:
        """The frame of `kind` with at least `columns`: from the frame cache when it holds one, else built
        (and then stored). Returns it with the notes its loading raised; `notes_now` adds them to the trace."""
        hit = self.cache.get(kind, columns) if self.cache.active else None
        if hit is not None:
            frame, notes = hit
            if notes_now:
                for n in notes:
                    self.note(n)
            return frame, notes
        frame, notes = self.collecting(build)
        self.cache.put(kind, tuple(frame.columns), frame, notes)
        return frame, notes

    def keep_result(self, name: str, frames: dict[str, pd.DataFrame], data: dict[str, Any], notes: list[str]) -> bool:
        """Keep a derived result of this file (frames and a JSON-ready record) in the frame cache, for a later
        command to read back with `kept_result`. False when the cache is off or a frame cannot be kept exactly."""
        if not self.cache.active:
            return False
        for part, frame in frames.items():
            if not self.cache.put(f"{name}-{part}", tuple(frame.columns), frame, []):
                return False
        columns = {part: [str(c) for c in frame.columns] for part, frame in frames.items()}
        # the index last (the frames are still being written in the background: a reader that finds one of
        # them missing or incomplete gets None, and computes the result again)
        self.cache.put_record(name, {"columns": columns, "data": data}, notes)
        return True

    def kept_result(self, name: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any], list[str]] | None:
        """What `keep_result` kept under `name` (frames, record, notes), or None; the notes are not raised."""
        hit = self.cache.get_record(name) if self.cache.active else None
        if hit is None or not isinstance(hit[0], dict) or not isinstance(hit[0].get("columns"), dict):
            return None
        record, notes = hit
        frames: dict[str, pd.DataFrame] = {}
        for part, cols in record["columns"].items():
            got = self.cache.get(f"{name}-{part}", tuple(cols))
            if got is None or list(got[0].columns) != list(cols):
                return None
            frames[part] = got[0]
        return frames, dict(record.get("data", {})), notes

    def validate(self, table: str, rows: int | None = None) -> None:
        """Check the integer columns the gateway reads of `table` (a kind or a table name), once: with
        sqlite3 by one typeof scan; with DuckDB its scanner refuses a mistyped value at query time and the
        engine names it (see `validate`). `rows`: the table's size, when the caller passes it to the
        engine too (a small table is read with sqlite3). Raises TraceError naming the file, table and column."""
        table = S.TABLES.get(table, table)
        duck = self.engine.uses_duckdb(rows)
        if (table, False) in self._validated or (table, duck) in self._validated or not self.schema.has(table):
            return
        self._validated.add((table, duck))
        if duck:
            return
        present = self.schema.columns[table]
        validate.check(self.path, self.engine.rows, table, [c for c in tables.INTEGER_SOURCES.get(table, ()) if c in present])

    def is_loaded(self, kind: str) -> bool:
        """Whether the frame of `kind` is already in memory (readers then use it instead of SQL)."""
        return kind in self._frames

    # -- metadata -----------------------------------------------------------------------------------
    def _key_values(self, table: str | None) -> dict[str, str]:
        if not table or not self.schema.has(table, "name") or not self.schema.has(table, "value"):
            return {}
        # only allow-listed rows are read at all: EXPORT_USER, EXPORT_HOST and the like never leave the file
        keys = ", ".join("?" for _ in S.SHOWN_EXPORT_KEYS)
        rows = self.engine.rows(f'SELECT name, value FROM "{table}" WHERE name IN ({keys})', S.SHOWN_EXPORT_KEYS)
        return {str(k): str(v) for k, v in rows if k in S.SHOWN_EXPORT_KEYS}

    def _capture_values(self) -> dict[str, list[str]]:
        table = S.META_CAPTURE_TABLE
        if not self.schema.has(table, "name"):
            return {}
        out: dict[str, list[str]] = {}
        # only allow-listed keys (also as PROCESS_n:KEY) are read: environment variables and command lines stay unread
        keys = ", ".join("?" for _ in S.SHOWN_CAPTURE_KEYS)
        sql = f"SELECT name, value FROM \"{table}\" WHERE name IN ({keys}) OR (name LIKE 'PROCESS%' AND substr(name, instr(name, ':') + 1) IN ({keys}))"
        for k, v in self.engine.rows(sql, (*S.SHOWN_CAPTURE_KEYS, *S.SHOWN_CAPTURE_KEYS)):
            key = str(k)
            base = key.split(":", 1)[1] if key.startswith("PROCESS_") and ":" in key else key
            if base in S.SHOWN_CAPTURE_KEYS:
                out.setdefault(base, [])
                if str(v) not in out[base]:
                    out[base].append(str(v))
        return out

    @property
    def strings(self) -> Strings:
        if self._strings is None:
            with self._strings_lock:
                return self._read_strings()
        return self._strings

    def _read_strings(self) -> Strings:
        if self._strings is None:
            if self.schema.has(S.STRINGS, "id") and self.schema.has(S.STRINGS, "value"):
                n = self.engine.count_rows(S.STRINGS)  # (a few thousand, as a rule: then sqlite3 reads them)
                self.validate(S.STRINGS, rows=n)
                df = self.engine.frame(f'SELECT id, CAST(value AS TEXT) AS value FROM "{S.STRINGS}" WHERE id IS NOT NULL', rows=n)
                ids = tables.integer_column(self, S.STRINGS, "id", df["id"]) if len(df) else np.zeros(0, np.int64)
                self._strings = Strings(ids, df["value"].to_numpy(object))
            else:
                self._strings = Strings.empty()
        return self._strings

    def has(self, kind: str) -> bool:
        return self.schema.has_kind(kind)

    def require(self, kind: str, purpose: str | None = None) -> None:
        if not self.has(kind):
            what = f" ({purpose} needs it)" if purpose else ""
            raise MissingDataError(f"{self.path}: has no {S.TABLES[kind]} table{what}", _WHY_MISSING.get(kind, "the capture did not record it"))

    def require_rows(self, kind: str, purpose: str | None = None) -> None:
        """Like `require`, and the table must hold at least one usable row (an interval with real timestamps)."""
        self.require(kind, purpose)
        if not self.is_loaded(kind) and kind in tables.SPECS and self.cache.active:
            hit = self.cache.get(kind, tables.default_columns(kind))
            if hit is not None:  # a cached frame answers without a scan of the table
                for msg in hit[1]:
                    self.note(msg)
                self._keep(kind, hit[0])
        if self.is_loaded(kind) and len(self._frames[kind]):
            return
        table = S.TABLES[kind]
        tables.require_times(self, kind)
        valid = tables.valid_rows_sql(self, kind)
        zero = '("start" = 0 AND "end" = 0)'
        df = self.engine.frame(
            f"SELECT count(*) AS n, sum(CASE WHEN {valid} THEN 0 ELSE 1 END) AS bad, sum(CASE WHEN {valid} AND {zero} THEN 1 ELSE 0 END) AS zero, "
            f'sum(CASE WHEN {valid} AND NOT {zero} THEN 1 ELSE 0 END) AS good FROM "{table}"'
        )
        n, bad, zero_n, good = (0 if pd.isna(v) else int(v) for v in df.iloc[0][["n", "bad", "zero", "good"]])
        if good:
            return
        if n == 0:
            why = "it is empty"
        else:
            parts = [
                f"{bad} without a start, end, device or stream, or ending before they start" if bad else "",
                f"{zero_n} with unknown timestamps (start = end = 0)" if zero_n else "",
            ]
            why = f"of its {n} rows, " + " and ".join(p for p in parts if p)
        what = f" ({purpose} needs them)" if purpose else ""
        hint = _WHY_MISSING.get(kind, "the capture did not record it") if n == 0 else "The file was modified or damaged; re-export it from the report"
        raise MissingDataError(f"{self.path}: {table} has no usable rows{what}: {why}", hint)

    def kernel_devices(self) -> list[int]:
        """Device ids that ran at least one usable kernel, sorted."""
        if not self.has("kernels") or not self.schema.has(S.TABLES["kernels"], "deviceId"):
            return []
        if self.is_loaded("kernels"):
            return sorted(int(d) for d in np.unique(self._frames["kernels"]["device_id"].to_numpy()))
        valid = tables.valid_rows_sql(self, "kernels")
        df = self.engine.frame(f'SELECT DISTINCT "deviceId" AS d FROM "{S.TABLES["kernels"]}" WHERE {valid} AND NOT ("start" = 0 AND "end" = 0)')
        return sorted(int(d) for d in df["d"].dropna())

    def count(self, kind: str) -> int:
        """Rows of the table of `kind` (every row, valid or not); kept in the frame cache's "counts" record."""
        if not self._counts and self.cache.active:
            hit = self.cache.get_record("counts")
            if hit is not None and isinstance(hit[0], dict):
                self._counts.update({str(k): int(v) for k, v in hit[0].items()})
        if kind not in self._counts:
            self._counts[kind] = self.engine.count_rows(S.TABLES[kind]) if self.has(kind) else 0
            self.cache.put_record("counts", dict(self._counts), [])
        return self._counts[kind]

    def capture_mode(self) -> str:
        """CUDA-graph trace mode: 'node', 'graph', or 'unknown' (from metadata, else inferred)."""
        modes = [m.lower() for m in self.capture_meta.get("CUDA_GRAPH_TRACE_OPTIONS:MODE", [])]
        if "node" in modes:
            return "node"
        if "graph" in modes:
            return "graph"
        if self.has("graph_trace"):
            return "graph"
        if self.has("kernels") and self.schema.has(S.TABLES["kernels"], "graphNodeId"):
            n = self.engine.rows(f'SELECT count(*) FROM "{S.TABLES["kernels"]}" WHERE "graphNodeId" > 0')[0][0]
            if n:
                return "node"
        return "unknown"

    # -- frames -------------------------------------------------------------------------------------
    def _load(self, kind: str, columns: tuple[str, ...] | None) -> pd.DataFrame:
        spec = tables.SPECS[kind]
        want = tuple(columns) if columns else tables.default_columns(kind)
        have = self._frame_cols.get(kind)
        if have is not None and all(c in have for c in want if c in spec or c in tables.ON_REQUEST.get(kind, ())):
            return self._frames[kind]
        union = tuple(dict.fromkeys((*(have or ()), *want)))
        df, _ = self._cached(kind, union, lambda: _sorted(tables.load(self, kind, union)))
        self._keep(kind, df)
        return df

    def _keep(self, kind: str, df: pd.DataFrame) -> None:
        self._frames[kind] = df
        if kind != "nvtx":
            spec = tables.SPECS[kind]
            self._frame_cols[kind] = tuple(c for c in df.columns if c in spec or c in tables.ON_REQUEST.get(kind, ()))

    def sharing_reads(self) -> contextlib.AbstractContextManager[None]:
        """Within: what is read of a table's pages is read once for the loaders and `summary` alike (a
        `report` loads the tables, then summarises them); see `Engine.sharing`. Nothing is kept when the
        summary is in the frame cache already (it then reads nothing)."""
        if self.cache.active and self.cache.get_record("info") is not None:
            return contextlib.nullcontext()
        return self.engine.sharing()

    def prefetch(self, *kinds: str) -> None:
        """Load several event tables at once, so a full analysis pays for the slowest table rather than
        the sum: in threads where that overlaps (DuckDB scans outside the GIL, cache reads), one after
        another where the page reader decodes them (it uses both cores already, and its numpy steps
        between GIL releases do not overlap). Kinds the trace lacks are skipped. The frames' notes are
        added in the order of `kinds`, whichever finished first."""
        jobs = [k for k in kinds if self.has(k) and k not in self._frames]

        def load(kind: str) -> tuple[pd.DataFrame, list[str]]:
            if kind == "nvtx":
                return self._cached("nvtx", (), lambda: _sorted(tables.nvtx(self)), notes_now=False)
            cols = tables.default_columns(kind)
            return self._cached(kind, cols, lambda: _sorted(tables.load(self, kind, cols)), notes_now=False)

        serial = jobs
        if self.engine.prefers_duckdb() or self.cache.active:
            decoded = [k for k in jobs if self.engine.reads_pages() and not self.cache.holds(k, () if k == "nvtx" else tables.default_columns(k))]
            serial = decoded if len(jobs) - len(decoded) >= 2 else jobs
        done = {k: load(k) for k in serial}
        threaded = [k for k in jobs if k not in done]
        if threaded:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(3, len(threaded))) as ex:
                done |= dict(zip(threaded, ex.map(load, threaded)))
        for kind in jobs:
            df, notes = done[kind]
            for n in notes:
                self.note(n)
            self._keep(kind, df)

    def kernels(self, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
        """Kernels sorted by start (canonical columns; `columns` picks extra ones such as grid_x)."""
        return self._load("kernels", columns)

    def api(self, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
        """CUDA runtime and driver API calls (backtrace duplicates dropped), sorted by start."""
        return self._load("api", columns)

    def memcpy(self) -> pd.DataFrame:
        return self._load("memcpy", None)

    def memset(self) -> pd.DataFrame:
        return self._load("memset", None)

    def sync(self) -> pd.DataFrame:
        return self._load("sync", None)

    def nvtx(self) -> pd.DataFrame:
        if "nvtx" not in self._frames:
            self._frames["nvtx"], _ = self._cached("nvtx", (), lambda: _sorted(tables.nvtx(self)))
        return self._frames["nvtx"]

    def launches(self) -> pd.DataFrame:
        """Kernels joined to their launching API call (api_start_ns, global_tid, tid, api_name)."""
        if "launches" not in self._frames:
            k = self.kernels()
            if self.has("api"):
                df = self._launch_columns(k)
            else:
                df = k.copy(deep=False)
                df["has_launch"] = np.zeros(len(df), dtype=bool)
                for c in ("api_start_ns", "api_end_ns"):
                    df[c] = np.full(len(df), tables.NO_TIME, dtype=np.int64)
                for c in ("global_tid", "tid"):
                    df[c] = np.full(len(df), -1, dtype=np.int64)
                df["api_name"] = pd.Categorical([None] * len(df))
                self.note("no CUDA API table: kernels cannot be tied to launching threads or NVTX ranges")
            self._frames["launches"] = df
        return self._frames["launches"]

    def _launch_columns(self, k: pd.DataFrame) -> pd.DataFrame:
        """`k` with the columns of its launching calls; those columns come from the frame cache when it has them
        (the join then needs neither the CUDA API frame nor its sort)."""
        added = ("has_launch", "api_start_ns", "api_end_ns", "global_tid", "tid", "api_name")

        def build() -> pd.DataFrame:
            df = tables.kernel_launches(self, k, self.api(), self._launch_index())
            missing = int((~df["has_launch"].to_numpy()).sum())
            if missing:
                self.note(f"{missing} of {len(df)} kernels have no launching API call in the trace (time-sliced export or API tracing off)")
            return df

        hit = self.cache.get("launches", added) if self.cache.active else None
        if hit is not None and len(hit[0]) == len(k):
            cols, notes = hit
            for n in notes:
                self.note(n)
            return tables.with_columns(k, {c: cols[c].to_numpy() if c != "api_name" else cols[c].array for c in added})
        df, notes = self.collecting(build)
        self.cache.put("launches", added, df, notes)
        return df

    # -- summaries and joins (the readers behind the door) -----------------------------------------
    def summary(self) -> dict[str, Any]:
        """What `nsysparse info` shows: versions, GPUs, processes, streams, counts, span, NVTX domains.
        Kept in the frame cache: a second `info` (or `report`) on the same file reads it back."""
        hit = self.cache.get_record("info") if self.cache.active else None
        if hit is not None and isinstance(hit[0], dict):
            data, notes = hit
            for n in notes:
                self.note(n)
        else:
            data, notes = self.collecting(lambda: info.summary(self))
            self.cache.put_record("info", data, notes)
        # what depends on how the file was named, or on what was read before: never from the record
        return data | {"file": str(self.source_path), "sqlite_file": str(self.path), "size_bytes": self.path.stat().st_size, "notes": list(self.notes)}

    def gpu_name(self, device_id: int | None = None) -> str:
        """The GPU's product name (of `device_id`, else of the device that ran the most kernels)."""
        return info.gpu_name(self, device_id)

    def kernel_stats(self, name: str = "demangled", by_launch_config: bool = False, device_id: int | None = None) -> pd.DataFrame:
        """Per-kernel count/total/mean/median/min/max/stddev (the numbers of `nsys stats`), by SQL where possible."""
        return aggregates.kernel_stats(self, name, by_launch_config, device_id)

    def graph_node_origins(self) -> pd.DataFrame:
        """CUDA-graph node kernels: graph_node_id -> capture_ns, capture_global_tid of the node's creation."""
        return graphs.node_origins(self)

    def launches_of(self, kind: str) -> pd.DataFrame:
        """memcpy or memset rows joined to their launching API call (the columns of `launches()`)."""
        return tables.kernel_launches(self, self._load(kind, None), self.api(), self._launch_index())

    def _launch_index(self) -> tables.LaunchIndex:
        """The CUDA API calls' sorted join keys, built once for every join (kernels, memcpy, memset)."""
        api = self.api()
        if self._api_index is None or self._api_index[0] is not api:  # (positions into that very frame)
            self._api_index = (api, tables.launch_index(self, api))
        return self._api_index[1]

    def profiler_overhead(self) -> pd.DataFrame:
        """The profiler's own overhead ranges (start_ns, end_ns, global_tid), empty when not recorded."""
        if "overhead" not in self._frames:
            self._frames["overhead"] = self._cached("overhead", ("start_ns", "end_ns", "global_tid"), lambda: tables.profiler_overhead(self))[0]
        return self._frames["overhead"]

    def export_columns(self, kind: str) -> tuple[str, ...]:
        """Every canonical column of an event table (what `export` writes), the derived ones included."""
        return (*tables.SPECS[kind], *tables.ON_REQUEST.get(kind, ()))


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    if len(df) == 0:
        return df.reset_index(drop=True)
    start = df["start_ns"].to_numpy()
    if len(start) > 1 and bool(np.all(start[1:] >= start[:-1])):
        return df.reset_index(drop=True)
    order = np.lexsort((df["end_ns"].to_numpy(), start))
    return df.take(order).reset_index(drop=True)


def open_trace(path: str | os.PathLike[str], engine: str | None = None) -> Trace:
    """Open an nsys SQLite export (or .nsys-rep, exported through nsys when available) read-only."""
    return Trace(path, engine=engine)
