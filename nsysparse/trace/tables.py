"""Loaders: nsys event tables -> canonical DataFrames (the only contract analyses see).

Canonical columns (all times integer ns on the session clock; negative values are valid):

kernels  start_ns, end_ns, device_id, context_id, stream_id, correlation_id, global_pid, pid,
         short_name, name (demangled), mangled_name, grid_x/y/z, block_x/y/z, registers_per_thread,
         static_shared_bytes, dynamic_shared_bytes, graph_node_id, graph_id (0 = not in a graph)
api      start_ns, end_ns, global_tid, correlation_id, name (version suffix stripped),
         event_class (0 runtime, 1 driver), return_value; pid, tid when asked for (ON_REQUEST: 88 MB
         over 5.5 M calls that the analyses do without, deriving them from global_tid where they need them)
nvtx     start_ns, end_ns (-1 = open/mark), event_type, kind (push_pop|start_end|mark), global_tid,
         end_global_tid, pid, tid, domain_id, domain, range_id, text
memcpy   start_ns, end_ns, device_id, stream_id, correlation_id, global_pid, pid, bytes, copy_kind
memset   start_ns, end_ns, device_id, stream_id, correlation_id, global_pid, pid, bytes
sync     start_ns, end_ns, device_id, stream_id, correlation_id, global_pid, pid, sync_type

Columns missing from an older export are filled with a neutral value (0, or "" for names) and the
gap is recorded in `Trace.notes` so commands can say what was degraded. Rows that carry no interval
(a NULL start, end, device or stream, or end < start) are left out, with one note per table that
counts them (`valid_rows_sql` is the one definition, used by every query over these tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nsysparse.errors import MissingDataError
from nsysparse.trace import schema as S
from nsysparse.trace.engine import Column, Select
from nsysparse.trace.ids import ID_MASK, PID_SHIFT, pid_of, tid_of
from nsysparse.trace.strings import Strings, strip_version_suffix
from nsysparse.trace.validate import check, check_times, damaged

if TYPE_CHECKING:
    from nsysparse.trace.handle import TraceHandle as Trace


NO_TIME = np.iinfo(np.int64).min  # "no such timestamp" (real timestamps may be negative)


@dataclass(frozen=True)
class Col:
    source: str  # nsys column
    kind: str  # int | id0 | str_id | text
    default: int = 0


KERNEL_COLS = {
    "start_ns": Col("start", "int"),
    "end_ns": Col("end", "int"),
    "device_id": Col("deviceId", "int"),
    "context_id": Col("contextId", "id0"),
    "stream_id": Col("streamId", "int"),
    "correlation_id": Col("correlationId", "id0"),
    "global_pid": Col("globalPid", "id0"),
    "short_name": Col("shortName", "str_id"),
    "name": Col("demangledName", "str_id"),
    "mangled_name": Col("mangledName", "str_id"),
    "grid_x": Col("gridX", "id0"),
    "grid_y": Col("gridY", "id0"),
    "grid_z": Col("gridZ", "id0"),
    "block_x": Col("blockX", "id0"),
    "block_y": Col("blockY", "id0"),
    "block_z": Col("blockZ", "id0"),
    "registers_per_thread": Col("registersPerThread", "id0"),
    "static_shared_bytes": Col("staticSharedMemory", "id0"),
    "dynamic_shared_bytes": Col("dynamicSharedMemory", "id0"),
    "graph_node_id": Col("graphNodeId", "id0"),
    "graph_id": Col("graphId", "id0"),
}
KERNEL_DEFAULT = ("start_ns", "end_ns", "device_id", "stream_id", "correlation_id", "global_pid", "short_name", "name", "graph_node_id")

API_COLS = {
    "start_ns": Col("start", "int"),
    "end_ns": Col("end", "int"),
    "global_tid": Col("globalTid", "id0"),
    "correlation_id": Col("correlationId", "id0"),
    "name": Col("nameId", "str_id"),
    "event_class": Col("eventClass", "id0"),
    "return_value": Col("returnValue", "id0"),
}
API_DEFAULT = ("start_ns", "end_ns", "global_tid", "correlation_id", "name")
DERIVED = ("pid", "tid")  # decoded from the global ids by every loader, after the columns read
ON_REQUEST = {"api": DERIVED}  # derived only when asked for (other tables always carry theirs)

MEMCPY_COLS = {
    "start_ns": Col("start", "int"),
    "end_ns": Col("end", "int"),
    "device_id": Col("deviceId", "int"),
    "stream_id": Col("streamId", "int"),
    "correlation_id": Col("correlationId", "id0"),
    "global_pid": Col("globalPid", "id0"),
    "bytes": Col("bytes", "id0"),
    "copy_kind": Col("copyKind", "id0"),
    "graph_node_id": Col("graphNodeId", "id0"),
}
MEMSET_COLS = {k: v for k, v in MEMCPY_COLS.items() if k != "copy_kind"}
SYNC_COLS = {
    "start_ns": Col("start", "int"),
    "end_ns": Col("end", "int"),
    "device_id": Col("deviceId", "int"),
    "stream_id": Col("streamId", "int"),
    "correlation_id": Col("correlationId", "id0"),
    "global_pid": Col("globalPid", "id0"),
    "sync_type": Col("syncType", "id0"),
}
SPECS = {"kernels": KERNEL_COLS, "api": API_COLS, "memcpy": MEMCPY_COLS, "memset": MEMSET_COLS, "sync": SYNC_COLS}
# What the gateway reads as integers, per table (checked once per table: `Trace.validate`).
NVTX_INTEGER_SOURCES = ("start", "end", "eventType", "globalTid", "endGlobalTid", "domainId", "rangeId", "textId")
INTEGER_SOURCES = {
    **{S.TABLES[k]: (*dict.fromkeys(c.source for c in spec.values()), *(("deprecatedSyncType",) if k == "sync" else ())) for k, spec in SPECS.items()},
    S.TABLES["nvtx"]: NVTX_INTEGER_SOURCES,
    S.STRINGS: ("id",),
    "CUDA_GRAPH_NODE_EVENTS": ("graphNodeId", "originalGraphNodeId", "start", "globalTid"),
}
ROW_LABELS = {"kernels": "kernel", "api": "CUDA API", "memcpy": "memcpy", "memset": "memset", "sync": "synchronization"}
# An event row is usable only with all of these (where the table has the column) and end >= start.
REQUIRED_SOURCES = ("start", "end", "deviceId", "streamId")


def valid_rows_sql(trace: Trace, kind: str, alias: str = "") -> str:
    """SQL predicate (never NULL) for rows of `kind` with a start, an end, a device and a stream, and end >= start."""
    trace.validate(kind)  # every query over an event table builds this predicate: the values are checked first
    present = trace.schema.columns.get(S.TABLES[kind], ())
    parts = [f'{alias}"{c}" IS NOT NULL' for c in REQUIRED_SOURCES if c in present]
    if "start" in present and "end" in present:
        parts.append(f'{alias}"end" >= {alias}"start"')
    return "(" + " AND ".join(parts) + ")" if parts else "(1 = 1)"


def nvtx_valid_sql(trace: Trace, alias: str = "") -> str:
    """SQL predicate for NVTX rows with a start, and an end (when they have one) not before it."""
    trace.validate("nvtx")
    present = trace.schema.columns.get(S.TABLES["nvtx"], ())
    if "start" not in present:
        return "(1 = 1)"
    end = f' AND ({alias}"end" IS NULL OR {alias}"end" >= {alias}"start")' if "end" in present else ""
    return f'({alias}"start" IS NOT NULL{end})'


def require_times(trace: Trace, kind: str) -> None:
    """An event table without its start or end column carries no interval at all (never filled with 0)."""
    table = S.TABLES[kind]
    for c in ("start", "end"):
        if not trace.schema.has(table, c):
            raise MissingDataError(f"{trace.path}: {table} has no {c} column", "The file was modified, or is not an nsys export; re-export it")


def note_invalid_rows(trace: Trace, kind: str, count: int) -> None:
    if count:
        what = "start/end/device/stream" if kind != "api" else "start/end"
        trace.note(f"{count} {ROW_LABELS[kind]} rows with a missing {what} or end < start were left out")


def _select(trace: Trace, kind: str, wanted: tuple[str, ...], keep: tuple[str, tuple[int, ...]] | None = None) -> tuple[Select, list[str]]:
    """The plain SELECT of the `wanted` columns (those the table lacks as their neutral literal) and of the
    columns that make a row valid (`REQUIRED_SOURCES`), as `_req_<column>` where not wanted. No COALESCE
    (but syncType's) and no validity expression: evaluating them in DuckDB cost a third of the read;
    `_finish` fills NULLs and drops invalid rows on the arrays."""
    table = S.TABLES[kind]
    spec = SPECS[kind]
    present = trace.schema.columns[table]
    columns, missing = [], []
    for name in wanted:
        col = spec[name]
        if col.source in present:
            sources: tuple[str, ...] = (col.source,)
            if kind == "sync" and col.source == "syncType" and "deprecatedSyncType" in present:
                sources = ("syncType", "deprecatedSyncType")
            columns.append(Column(name, sources))
        else:
            missing.append(name)
            columns.append(Column(name, constant=-1 if col.kind == "str_id" else int(col.default)))
    selected = {spec[n].source for n in wanted if spec[n].source in present}
    columns += [Column(f"_req_{c}", (c,)) for c in REQUIRED_SOURCES if c in present and c not in selected]
    return Select(table, tuple(columns), keep), missing


def read_columns(trace: Trace, sel: Select, kind: str) -> dict[str, np.ndarray]:
    """The columns of `sel`: from the file's pages when the page reader vouches for them, else through
    SQL, whose integer columns are type-checked first (sqlite3: one typeof scan)."""
    got = trace.engine.from_pages(sel)
    if got is not None:
        return got
    trace.validate(kind)
    return trace.engine.arrays(sel.sql(), masked=True)


def _valid_rows(trace: Trace, kind: str, cols: dict[str, np.ndarray], spec: dict[str, Col]) -> np.ndarray | None:
    """Per row: it has every column of `REQUIRED_SOURCES` (that the table has) and end >= start — the
    predicate of `valid_rows_sql`, on the loaded arrays. None when every row is valid."""
    present = trace.schema.columns[S.TABLES[kind]]
    by_source = {spec[n].source: n for n in cols if n in spec}
    bad: np.ndarray | None = None
    for c in REQUIRED_SOURCES:
        if c not in present:
            continue
        v = cols.get(by_source.get(c, f"_req_{c}"))
        if isinstance(v, np.ma.MaskedArray):
            m = np.ma.getmaskarray(v)
            bad = m if bad is None else bad | m
    start, end = cols["start_ns"], cols["end_ns"]
    if start.dtype.kind in "iu" and end.dtype.kind in "iu" and len(start):
        order = np.asarray(end) < np.asarray(start)
        if order.any():
            bad = order if bad is None else bad | order
    return None if bad is None or not bad.any() else ~bad


def default_columns(kind: str) -> tuple[str, ...]:
    """Columns loaded when a caller names none: a narrower set for the two big tables, all otherwise."""
    return {"kernels": KERNEL_DEFAULT, "api": API_DEFAULT}.get(kind, tuple(SPECS[kind]))


def load(trace: Trace, kind: str, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Generic loader for kernels/api/memcpy/memset/sync. Adds `pid` (and `tid`) decoded from global ids."""
    trace.require(kind)
    require_times(trace, kind)
    spec = SPECS[kind]
    wanted = tuple(c for c in (columns or default_columns(kind)) if c in spec)
    for need in ("start_ns", "end_ns"):
        if need not in wanted:
            wanted = (need, *wanted)
    gid = "global_tid" if kind == "api" else "global_pid"
    if gid in spec and gid not in wanted:
        wanted = (*wanted, gid)
    keep = None
    table_cols = trace.schema.columns[S.TABLES[kind]]
    if kind == "api" and "eventClass" in table_cols and trace.schema.has(S.CUDA_CALLCHAINS):
        # Only a capture with CUDA backtraces (whose call chains fill CUDA_CALLCHAINS) holds the duplicate
        # class-67 rows; reading eventClass for every call otherwise costs a fifth of the API read.
        keep = ("eventClass", (S.EVENT_CLASS_RUNTIME, S.EVENT_CLASS_DRIVER))
    sel, missing = _select(trace, kind, wanted, keep)
    for m in missing:
        if m in ("global_pid", "global_tid", "correlation_id", "device_id", "stream_id", "event_class"):
            trace.note(f"{S.TABLES[kind]} has no {spec[m].source} column (older export): {m} is unknown")
    derived = tuple(c for c in DERIVED if c not in ON_REQUEST.get(kind, ()) or c in (columns or default_columns(kind)))
    return _finish(trace, read_columns(trace, sel, kind), kind, spec, wanted, derived)


def _finish(trace: Trace, cols: dict[str, np.ndarray], kind: str, spec: dict[str, Col], wanted: tuple[str, ...], derived: tuple[str, ...]) -> pd.DataFrame:
    table = S.TABLES[kind]
    n = len(cols["start_ns"])
    if n:
        for name in ("start_ns", "end_ns"):  # a NULL time is an invalid row, anything else is named
            integer_column(trace, table, spec[name].source, _unmasked(cols[name]))
        valid = _valid_rows(trace, kind, cols, spec)
        if valid is not None:
            note_invalid_rows(trace, kind, int((~valid).sum()))
            cols = {k: v[valid] for k, v in cols.items()}
            n = int(valid.sum())
    out: dict[str, object] = {}
    for name in wanted:
        col = spec[name]
        raw = cols[name]
        if isinstance(raw, np.ma.MaskedArray):  # NULLs: the neutral value (-1 for a missing string)
            raw = raw.filled(-1 if col.kind == "str_id" else col.default)
        values = integer_column(trace, table, col.source, raw) if n else np.zeros(0, dtype=np.int64)
        if col.kind == "str_id":
            cat = trace.strings.categorical(values.astype(np.int64, copy=False))
            if kind == "api" and name == "name":
                cat = strip_version_suffix(cat)
            out[name] = cat
        else:
            out[name] = values.astype(np.int64, copy=False)
    start, end = out["start_ns"], out["end_ns"]
    assert isinstance(start, np.ndarray) and isinstance(end, np.ndarray)
    check_times(trace.path, table, {"start": start, "end": end})
    # CUPTI's "timestamp unknown" rows (start = end = 0) carry no interval: drop them.
    bad = (start == 0) & (end == 0)
    if bad.any():
        trace.note(f"{int(bad.sum())} {kind} rows with unknown timestamps (start = end = 0) were ignored")
        out = {k: v[~bad] for k, v in out.items()}  # type: ignore[index]
    for gid in ("global_pid", "global_tid"):
        if gid in out:
            g = out[gid]
            assert isinstance(g, np.ndarray)
            if "pid" in derived:
                out["pid"] = pid_of(g)
            if gid == "global_tid" and "tid" in derived:
                out["tid"] = tid_of(g)
    # built once, one block per column: assigning a column to a frame copies it (pandas' copy-on-write)
    return pd.DataFrame(out, copy=False)


def integer_column(trace: Trace, table: str, source: str, series: pd.Series | np.ndarray) -> np.ndarray:
    """A loaded column as int64; any other content (the engines hand back what the file holds) is named."""
    values = np.asarray(series)
    if values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    if trace.schema.has(table, source):
        check(trace.path, trace.engine.rows, table, [source])  # names the class of the offending values
    raise damaged(trace.path, table, source, "values that are not integers")


def nvtx(trace: Trace) -> pd.DataFrame:
    """NVTX ranges and marks with resolved text and domain names (see module docstring). Rows without a
    start, or ending before they start, are left out with a note.

    Read as plain columns (the text's StringIds id, not the joined string: resolving 0.95 M texts in DuckDB
    and factorizing them again cost more than the rest of the read); NULLs are filled on the arrays."""
    trace.require("nvtx")
    table = S.TABLES["nvtx"]
    cols = trace.schema.columns[table]
    if "start" not in cols:
        raise MissingDataError(f"{trace.path}: {table} has no start column", "The file was modified, or is not an nsys export; re-export it")
    by_id = "textId" in cols and trace.schema.has(S.STRINGS)
    source = S.NVTX_SOURCES
    # the domain-create events come in the same read (their names label the ranges), then leave the rows
    wanted_types = ("eventType", (*S.NVTX_RANGE_TYPES, S.NVTX_MARK, S.NVTX_DOMAIN_CREATE))
    sel = Select(table, _nvtx_columns(cols, by_id), wanted_types, nothing="eventType" not in cols)
    got = read_columns(trace, sel, "nvtx")
    created = np.asarray(_unmasked(got["event_type"])) == S.NVTX_DOMAIN_CREATE
    domains = _created_domains(trace if by_id else None, {k: v[created] for k, v in got.items()}) if "domainId" in cols else _no_domains()
    if created.any():
        got = {k: v[~created] for k, v in got.items()}
    start = got["start_ns"]
    n = len(start)
    nulls = {k: _null_mask(got[k], n) for k in (*source, "text_id")}
    if n:
        for k, src in source.items():
            if src in cols and not nulls[k].all():
                integer_column(trace, table, src, _unmasked(got[k]))
        end = _unmasked(got["end_ns"])
        bad = nulls["start_ns"] | (~nulls["end_ns"] & (end < _unmasked(start)))
        if bad.any():
            trace.note(f"{int(bad.sum())} NVTX rows with a missing start or end < start were left out")
            got = {k: v[~bad] for k, v in got.items()}
            nulls = {k: v[~bad] for k, v in nulls.items()}
            n = int((~bad).sum())

    def ints(name: str, default: int, fallback: np.ndarray | None = None) -> np.ndarray:
        if n == 0:
            return np.zeros(0, np.int64)
        v = _unmasked(got[name]).astype(np.int64, copy=True)
        if nulls[name].any():
            v[nulls[name]] = default if fallback is None else fallback[nulls[name]]
        return v

    gtid = ints("global_tid", 0)
    out = pd.DataFrame(
        {
            "start_ns": ints("start_ns", 0),
            "end_ns": ints("end_ns", -1),
            "event_type": ints("event_type", 0),
            "global_tid": gtid,
            "end_global_tid": ints("end_global_tid", 0, fallback=gtid),
            "domain_id": ints("domain_id", 0),
            "range_id": ints("range_id", 0),
        },
        copy=False,
    )
    check_times(trace.path, table, {"start": out["start_ns"].to_numpy(), "end": out["end_ns"].to_numpy()})
    text_ids = ints("text_id", -1) if by_id else np.full(n, -1, dtype=np.int64)
    inline = got["text"] if n else np.zeros(0, dtype=object)
    out["text"] = _nvtx_text(trace.strings if by_id else None, text_ids, inline, ~nulls["text_id"] if by_id else np.zeros(n, bool))
    event = out["event_type"].to_numpy()
    kinds, inverse = np.unique(event, return_inverse=True)
    kind_names = np.array([S.NVTX_KIND.get(int(e), "other") for e in kinds], dtype=object)
    out["kind"] = _categorical_of(kind_names, inverse)
    out["pid"] = pid_of(out["global_tid"].to_numpy())
    out["tid"] = tid_of(out["global_tid"].to_numpy())
    out["domain"] = _nvtx_domain_names(domains, out["pid"].to_numpy(), out["domain_id"].to_numpy())
    return out


def _created_domains(trace: Trace | None, got: dict[str, np.ndarray]) -> pd.DataFrame:
    """pid, domain_id, domain of the NvtxDomainCreate rows in `got` (as `nvtx_domains` reads them: a
    NULL thread or domain id is 0, a missing name ""; the first row of a (pid, domain) pair wins). With
    `trace`, the name is the inline text, else the StringIds value of the text id."""
    n = len(got["start_ns"])
    if n == 0:
        return _no_domains()

    def ints(name: str, default: int) -> np.ndarray:
        null = _null_mask(got[name], n)
        return np.where(null, default, _unmasked(got[name])).astype(np.int64)

    has_id = ~_null_mask(got["text_id"], n) if trace is not None else np.zeros(n, bool)
    names = _nvtx_text(trace.strings if trace is not None else None, ints("text_id", -1), got["text"], has_id)
    found = pd.DataFrame({"pid": pid_of(ints("global_tid", 0)), "domain_id": ints("domain_id", 0)})
    found["domain"] = pd.Series(names).astype(object).fillna("").to_numpy(dtype=object)
    return found.drop_duplicates(["pid", "domain_id"])


def _null_mask(values: np.ndarray, n: int) -> np.ndarray:
    """Per row: the value is NULL (a masked integer, or None / NaN in any other column)."""
    if isinstance(values, np.ma.MaskedArray):
        return np.ma.getmaskarray(values)
    if values.dtype.kind in "iub":
        return np.zeros(n, dtype=bool)
    return np.asarray(pd.isna(values), dtype=bool)


def _unmasked(values: np.ndarray) -> np.ndarray:
    return values.data if isinstance(values, np.ma.MaskedArray) else values


def _categorical_of(names: np.ndarray, inverse: np.ndarray) -> pd.Categorical:
    """`pd.Categorical(names[inverse])` (categories sorted) without building the per-row values."""
    cats, code_of = np.unique(names.astype(str), return_inverse=True)
    return pd.Categorical.from_codes(code_of[inverse], categories=pd.Index(cats.astype(object), dtype="object"))


def _nvtx_text(strings: Strings | None, text_ids: np.ndarray, inline: np.ndarray, has_id: np.ndarray) -> pd.Categorical:
    """Per row: the inline text, else the StringIds value of its text id (COALESCE(text, value)), as a
    Categorical whose categories are in order of first appearance (what factorizing the row texts gives)."""
    n = len(text_ids)
    own = np.nonzero(~_null_mask(inline, n))[0]  # (an all-NULL column may come back as masked integers)
    icodes, iuniques = pd.factorize(pd.Series(np.asarray(_unmasked(inline))[own], dtype="object"), sort=False)
    cats = strings.categories if strings is not None else pd.Index([], dtype="object")
    # one key space: the strings' categories, then the inline texts; equal values merged below
    keys = np.full(n, -1, dtype=np.int64)
    if strings is not None and has_id.any():
        keys[has_id] = strings.codes(text_ids[has_id])
    icodes = np.asarray(icodes, dtype=np.int64)
    keys[own[icodes >= 0]] = len(cats) + icodes[icodes >= 0]
    used, first = np.unique(keys, return_index=True)
    first, used = first[used >= 0], used[used >= 0]
    values = np.concatenate([np.asarray(cats, dtype=object), np.asarray(iuniques, dtype=object)])[used]
    order = np.argsort(first, kind="stable")  # categories in order of first appearance
    canon, distinct = pd.factorize(pd.Series(values[order], dtype="object"), sort=False)
    remap = np.full(len(cats) + len(iuniques), -1, dtype=np.int64)
    remap[used[order]] = canon
    codes = np.where(keys >= 0, remap[np.clip(keys, 0, max(len(remap) - 1, 0))], -1) if len(remap) else keys
    return pd.Categorical.from_codes(codes, categories=pd.Index(distinct, dtype="object"))


def _nvtx_domain_names(domains: pd.DataFrame, pid: np.ndarray, domain_id: np.ndarray) -> pd.Categorical:
    """Per row: its process's name for its domain (`domains`: the NvtxDomainCreate events), else
    "default" (id 0) or "domain N"."""
    pid_code, pids = pd.factorize(pid, sort=False)  # hashing, not sorting, the rows
    dom_code, doms = pd.factorize(domain_id, sort=False)
    inverse, pair = pd.factorize(np.asarray(pid_code, dtype=np.int64) * len(doms) + dom_code, sort=False)
    named: dict[tuple[int, int], str] = {}
    for p, d, v in zip(domains["pid"], domains["domain_id"], domains["domain"]):
        named.setdefault((int(p), int(d)), str(v))
    at = [(int(pids[k // len(doms)]), int(doms[k % len(doms)])) for k in pair]
    names = np.array([named.get((p, d), "default" if d == 0 else f"domain {d}") for p, d in at], dtype=object)
    return _categorical_of(names, np.asarray(inverse).reshape(-1))


def nvtx_domains(trace: Trace) -> pd.DataFrame:
    """Domain names from NvtxDomainCreate rows: pid, domain_id, domain (read as the NVTX loader reads
    them, from pages where it can, else through SQL; none without a domainId column)."""
    table = S.TABLES["nvtx"]
    cols = trace.schema.columns.get(table, ())
    if "domainId" not in cols or "eventType" not in cols:
        return _no_domains()
    by_id = "textId" in cols and trace.schema.has(S.STRINGS)
    sel = Select(table, _nvtx_columns(cols, by_id), ("eventType", (S.NVTX_DOMAIN_CREATE,)))
    return _created_domains(trace if by_id else None, read_columns(trace, sel, "nvtx"))


def _no_domains() -> pd.DataFrame:
    return pd.DataFrame({"pid": [], "domain_id": [], "domain": []})


def _nvtx_columns(cols: tuple[str, ...] | list[str], by_id: bool) -> tuple[Column, ...]:
    """The NVTX columns the loader reads (a missing one as NULL)."""
    columns = [Column(name, (src,)) if src in cols else Column(name) for name, src in S.NVTX_SOURCES.items()]
    columns.append(Column("text", ("text",), text=True) if "text" in cols else Column("text"))
    columns.append(Column("text_id", ("textId",)) if by_id else Column("text_id"))
    return tuple(columns)


@dataclass(frozen=True)
class LaunchIndex:
    """The CUDA API calls' join keys ((process <<) 32 | correlationId), sorted: `order` (None: already in
    order) and the sorted keys. Built once per trace and shared by the kernel, memcpy and memset joins.
    `pid` (only with `by_pid`): the one process of every call, whose keys are then the bare correlation
    ids (no key arrays built: the usual single-process capture)."""

    order: np.ndarray | None
    keys: np.ndarray
    by_pid: bool
    pid: int | None = None


def launch_index(trace: Trace, api: pd.DataFrame) -> LaunchIndex:
    use_pid = trace.schema.has(S.TABLES["kernels"], "globalPid")
    gtid = api["global_tid"].to_numpy()
    one = _one_process(gtid) if use_pid else None
    pids = pid_of(gtid) if use_pid and one is None else None
    akey = _corr_key(api["correlation_id"].to_numpy(), pids)
    if len(akey) < 2 or bool((akey[1:] >= akey[:-1]).all()):  # calls in correlation order (the usual case): no sort
        return LaunchIndex(None, akey, use_pid, one)
    order = np.argsort(akey, kind="stable")
    return LaunchIndex(order, akey[order], use_pid, one)


def _one_process(global_tid: np.ndarray) -> int | None:
    """The process of every id in `global_tid`, when it is one, else None; told from the least and the largest
    id (the ids between them share the bits above the thread's when those two do), with no array built."""
    if len(global_tid) == 0:
        return None
    lo, hi = int(global_tid.min()), int(global_tid.max())
    return (lo >> PID_SHIFT) & ID_MASK if lo >> PID_SHIFT == hi >> PID_SHIFT else None


def kernel_launches(trace: Trace, kernels: pd.DataFrame, api: pd.DataFrame, index: LaunchIndex | None = None) -> pd.DataFrame:
    """Join each kernel to its launching API call (same correlationId, same process).

    Adds has_launch, api_start_ns, api_end_ns, global_tid, tid, api_name. Where the call is absent (a
    time-sliced trace, or a capture without CUDA API tracing) has_launch is False, the times are
    NO_TIME and global_tid/tid are -1 (times themselves may be negative, so test has_launch). Graph-node kernels all map to the one
    cudaGraphLaunch that replayed them. O(n log n): sort the API keys once, binary-search the kernels.
    """
    index = launch_index(trace, api) if index is None else index
    kpid = kernels["pid"].to_numpy() if "pid" in kernels else np.zeros(len(kernels), np.int64)
    bare = index.pid is not None  # the calls' keys are bare ids: kernels of another process match none
    kkey = _corr_key(kernels["correlation_id"].to_numpy(), kpid if index.by_pid and not bare else None)
    sorted_keys = index.keys
    pos = np.searchsorted(sorted_keys, kkey)
    pos_c = np.clip(pos, 0, max(len(sorted_keys) - 1, 0))
    found = (len(sorted_keys) > 0) & (pos < len(sorted_keys))
    if len(sorted_keys):
        found &= sorted_keys[pos_c] == kkey
    found &= kernels["correlation_id"].to_numpy() > 0
    if bare and len(kpid) and not (int(kpid.min()) == int(kpid.max()) == index.pid):
        found &= kpid == index.pid
    take = np.where(found, pos_c if index.order is None else index.order[pos_c], 0) if len(sorted_keys) else np.zeros(len(kkey), np.int64)
    every = bool(found.all()) and len(api) > 0  # (the usual case: each column is then one gather)

    def joined(values: np.ndarray, absent: int) -> np.ndarray:
        if every:
            return values[take]
        return np.where(found, values[take], absent) if len(api) else np.full(len(found), absent, dtype=np.int64)

    api_codes = joined(api["name"].cat.codes.to_numpy(), -1)
    gtid = joined(api["global_tid"].to_numpy(), -1)
    tid = tid_of(gtid)  # (the calls' own tid, derived here: their frame does without it)
    if not every:
        tid[~found] = -1
    added = {
        "has_launch": found,
        "api_start_ns": joined(api["start_ns"].to_numpy(), NO_TIME),
        "api_end_ns": joined(api["end_ns"].to_numpy(), NO_TIME),
        "global_tid": gtid,
        "tid": tid,
        "api_name": pd.Categorical.from_codes(api_codes, categories=api["name"].cat.categories) if len(api) else pd.Categorical([None] * len(kernels)),
    }
    return with_columns(kernels, added)


def with_columns(frame: pd.DataFrame, added: dict[str, object]) -> pd.DataFrame:
    """`frame` with the columns of `added` (one of the same name keeps its place, the others come last), as
    one new frame: its own columns shared (copy-on-write), the added ones not copied, as assigning each
    to the frame would copy it."""
    rest = dict(added)
    columns = {c: rest.pop(c, frame[c]) for c in frame.columns} | rest
    return pd.DataFrame(columns, index=frame.index, copy=False)


def _corr_key(corr: np.ndarray, pid: np.ndarray | None) -> np.ndarray:
    """(pid << 32) | (corr & 0xFFFFFFFF); without `pid`, the ids themselves where they are 32-bit already
    (no copy: the usual case)."""
    corr = corr.astype(np.int64, copy=False)
    if pid is None and (len(corr) == 0 or (int(corr.min()) >= 0 and int(corr.max()) <= 0xFFFFFFFF)):
        return corr
    corr = corr & 0xFFFFFFFF
    if pid is None:
        return corr
    return (pid.astype(np.int64) << 32) | corr


def require_columns(trace: Trace, kind: str, *columns: str) -> None:
    table = S.TABLES[kind]
    for col in columns:
        if not trace.schema.has(table, SPECS[kind][col].source):
            raise MissingDataError(f"{trace.path}: {table} has no {SPECS[kind][col].source} column", "Re-export with a newer nsys")


def profiler_overhead(trace: Trace) -> pd.DataFrame:
    """Intervals where the profiler itself worked (CUPTI buffer flushes and the like): start_ns, end_ns, global_tid."""
    cols: dict[str, list[int]] = {"start_ns": [], "end_ns": [], "global_tid": []}
    table = S.TABLES["profiler_overhead"]
    if not trace.schema.has(table, "globalTid"):
        return pd.DataFrame({k: pd.Series(v, dtype="int64") for k, v in cols.items()})
    df = trace.engine.frame(
        f'SELECT "start" AS start_ns, "end" AS end_ns, COALESCE("globalTid", 0) AS global_tid FROM "{table}" WHERE "end" IS NOT NULL',
        rows=trace.engine.count_rows(table),
    )
    if not len(df):
        return pd.DataFrame({k: pd.Series(v, dtype="int64") for k, v in cols.items()})
    # (sqlite3 hands back what the file holds: anything but integers is named)
    return pd.DataFrame({c: integer_column(trace, table, src, df[c]) for c, src in (("start_ns", "start"), ("end_ns", "end"), ("global_tid", "globalTid"))})
