"""Every nsys table and column name nsysparse knows, and what an export's schema holds.

Nothing outside `nsysparse.trace` may spell an nsys table or column name: analyses work on the
canonical frames this package returns. Tables are created lazily by nsys (a table exists only when the
capture produced such events), columns come and go between versions, so everything is probed
(`sqlite_master`, `PRAGMA table_info`) before it is queried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Event tables, by the canonical kind name used throughout nsysparse.
TABLES = {
    "kernels": "CUPTI_ACTIVITY_KIND_KERNEL",
    "api": "CUPTI_ACTIVITY_KIND_RUNTIME",
    "nvtx": "NVTX_EVENTS",
    "memcpy": "CUPTI_ACTIVITY_KIND_MEMCPY",
    "memset": "CUPTI_ACTIVITY_KIND_MEMSET",
    "sync": "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION",
    "graph_trace": "CUPTI_ACTIVITY_KIND_GRAPH_TRACE",
    "cuda_event": "CUPTI_ACTIVITY_KIND_CUDA_EVENT",
    "graph_events": "CUDA_GRAPH_EVENTS",
    "graph_node_events": "CUDA_GRAPH_NODE_EVENTS",
    "osrt": "OSRT_API",
    "profiler_overhead": "PROFILER_OVERHEAD",
    "cupti_overhead": "CUPTI_ACTIVITY_KIND_OVERHEAD",
    "diagnostics": "DIAGNOSTIC_EVENT",
    "mpi_ranks": "MPI_RANKS",
}
STRINGS = "StringIds"
CUDA_CALLCHAINS = "CUDA_CALLCHAINS"  # present in captures with CUDA backtraces (--cudabacktrace)
THREAD_NAMES = "ThreadNames"
PROCESSES = "PROCESSES"
GPU_TABLES = ("TARGET_INFO_GPU", "TARGET_INFO_CUDA_GPU", "TARGET_INFO_CUDA_DEVICE")
STREAM_TABLE = "TARGET_INFO_CUDA_STREAM"
META_EXPORT_TABLES = ("META_DATA_EXPORT", "EXPORT_META_DATA")
META_CAPTURE_TABLE = "META_DATA_CAPTURE"
ANALYSIS_DETAILS = "ANALYSIS_DETAILS"
SESSION_START = "TARGET_INFO_SESSION_START_TIME"

# Never read for output: environment and host facts (see `info`). Listed so tests can assert it.
PRIVATE_TABLES = ("TARGET_INFO_SYSTEM_ENV", "ProcessStreams")

# Kinds whose tables carry GPU work intervals.
GPU_OP_KINDS = ("kernels", "memcpy", "memset")

# CUPTI / nsys enums we need, with built-in fallbacks (ENUM_* tables are absent in old exports).
EVENT_CLASS_RUNTIME = 0
EVENT_CLASS_DRIVER = 1
NVTX_MARK = 34
NVTX_PUSHPOP = 59
NVTX_STARTEND = 60
NVTXT_PUSHPOP = 70
NVTXT_STARTEND = 71
NVTX_DOMAIN_CREATE = 75
NVTX_RANGE_TYPES = (NVTX_PUSHPOP, NVTX_STARTEND, NVTXT_PUSHPOP, NVTXT_STARTEND)
NVTX_SOURCES = {
    "start_ns": "start",
    "end_ns": "end",
    "event_type": "eventType",
    "global_tid": "globalTid",
    "end_global_tid": "endGlobalTid",
    "domain_id": "domainId",
    "range_id": "rangeId",
}
"""The NVTX loader's integer columns and their sources in NVTX_EVENTS (`info`'s aggregates read them too)."""
NVTX_KIND = {NVTX_MARK: "mark", NVTX_PUSHPOP: "push_pop", NVTX_STARTEND: "start_end", NVTXT_PUSHPOP: "push_pop", NVTXT_STARTEND: "start_end"}
MEMCPY_KIND = {
    0: "unknown",
    1: "HtoD",
    2: "DtoH",
    3: "HtoA",
    4: "AtoH",
    5: "AtoA",
    6: "AtoD",
    7: "DtoA",
    8: "DtoD",
    9: "HtoH",
    10: "PtoP",
    11: "UVM HtoD",
    12: "UVM DtoH",
    13: "UVM DtoD",
}
SYNC_KIND = {0: "unknown", 1: "event_sync", 2: "stream_wait_event", 3: "stream_sync", 4: "context_sync"}

# Allow-list of capture/export metadata that may be shown. Everything else (environment variables,
# host names, user names, paths, command lines) stays unread by output code.
SHOWN_CAPTURE_KEYS = ("CUDA_GRAPH_TRACE_OPTIONS:MODE", "CUDA_TRACE_SCOPE", "START_DELAY_MS", "RUN_DURATION_MS", "CAPTURE_EVENT_TYPE")
SHOWN_EXPORT_KEYS = (
    "EXPORT_PRODUCT_VERSION",
    "EXPORT_SCHEMA_VERSION",
    "EXPORT_PARAM_TIME_NORMALIZE",
    "EXPORT_PARAM_TIME_SHIFT",
    "EXPORT_PARAM_LAZY",
    "DERIVED_WINDOW_NS",
)


@dataclass(frozen=True)
class ExportVersion:
    """nsys product and export-schema versions, and where they were read from."""

    product: str | None
    schema: str | None
    source: str  # table name, or "columns" when inferred
    era: str

    @property
    def label(self) -> str:
        if self.product:
            return f"nsys {self.product} (export schema {self.schema or '?'})"
        return f"unknown nsys version ({self.era})"


@dataclass
class Schema:
    """Tables present in one export and their columns (probed once, on open)."""

    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def has(self, table: str, column: str | None = None) -> bool:
        cols = self.columns.get(table)
        if cols is None:
            return False
        return column is None or column in cols

    def has_kind(self, kind: str) -> bool:
        return self.has(TABLES[kind])

    def first(self, *tables: str) -> str | None:
        return next((t for t in tables if t in self.columns), None)


def probe(rows_fn: Callable[[str], list[tuple[Any, ...]]]) -> Schema:  # rows_fn: Engine.rows
    tables = [r[0] for r in rows_fn("SELECT name FROM sqlite_master WHERE type IN ('table','view')")]
    schema = Schema()
    for t in tables:
        if not t.replace("_", "").isalnum():
            continue
        schema.columns[t] = tuple(r[1] for r in rows_fn(f'PRAGMA table_info("{t}")'))
    return schema


def is_nsys_export(schema: Schema) -> bool:
    """An nsys export always has StringIds plus at least one of its characteristic tables."""
    characteristic = (*TABLES.values(), THREAD_NAMES, *GPU_TABLES, *META_EXPORT_TABLES, ANALYSIS_DETAILS, SESSION_START)
    return schema.has(STRINGS) and any(schema.has(t) for t in characteristic)


def detect_version(schema: Schema, meta: dict[str, str]) -> ExportVersion:
    table = schema.first(*META_EXPORT_TABLES)
    if table and meta.get("EXPORT_PRODUCT_VERSION"):
        return ExportVersion(meta.get("EXPORT_PRODUCT_VERSION"), meta.get("EXPORT_SCHEMA_VERSION"), table, _era_of(meta.get("EXPORT_PRODUCT_VERSION", "")))
    if schema.has("TARGET_INFO_CUDA_GPU"):
        era = "2021 or older (no version recorded; TARGET_INFO_CUDA_GPU era)"
    elif schema.has("TARGET_INFO_GPU"):
        era = "late-2021 era (no version recorded)"
    else:
        era = "no version recorded"
    return ExportVersion(None, None, "columns", era)


def _era_of(product: str) -> str:
    year = product.split(".")[0]
    return f"{year} release" if year.isdigit() else "unknown"
