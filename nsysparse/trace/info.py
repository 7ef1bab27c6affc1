"""What an export holds: versions, capture mode, GPUs, processes, streams, tables, NVTX domains.

Only allow-listed metadata is read for output. Environment variables, host and user names, command
lines and paths recorded by nsys (TARGET_INFO_SYSTEM_ENV, META_DATA_CAPTURE PROCESS_*:ENVIRONMENT_*,
EXPORT_HOST, EXPORT_USER, ...) are never selected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nsysparse.trace import activity, tables
from nsysparse.trace import schema as S
from nsysparse.trace.ids import pid_of, tid_of
from nsysparse.trace.validate import check_times

if TYPE_CHECKING:
    from nsysparse.trace.handle import TraceHandle as Trace

COUNTED_KINDS = ("kernels", "api", "nvtx", "memcpy", "memset", "sync", "graph_trace", "osrt")


def gpus(trace: Trace, work: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """device_id, name, sm_count, memory_gib, memory_bandwidth_gbps, compute_capability, source, kernels."""
    df = _gpu_table(trace)
    used = pd.Series(dtype="int64")
    kt = S.TABLES["kernels"]
    if trace.has("kernels") and trace.schema.has(kt, "deviceId"):
        w = _gpu_work(trace) if work is None else work
        # a loaded kernel frame holds the usable rows; SQL counts every valid row (as before: same numbers either way)
        n = w["nu"] if trace.is_loaded("kernels") else w["nv"]
        m = (w["kind"] == _OP_CODES["kernels"]) & (n > 0)
        if m.any():
            dev, inv = np.unique(w["d"][m], return_inverse=True)
            used = pd.Series(np.bincount(inv.ravel(), weights=n[m]).astype(np.int64), index=dev)
    for dev in used.index:  # devices that ran kernels but have no GPU-table row
        if not (df["device_id"] == dev).any():
            df.loc[len(df)] = {"device_id": int(dev), "name": "unknown", "source": "kernels only"}
    df["kernels"] = df["device_id"].map(used).fillna(0).astype("int64")
    return df.sort_values("device_id", kind="stable").reset_index(drop=True)  # by device id, not file order


def _gpu_table(trace: Trace) -> pd.DataFrame:
    cols = ["device_id", "name", "sm_count", "memory_gib", "memory_bandwidth_gbps", "compute_capability", "source"]
    sc = trace.schema
    rows: list[dict[str, Any]] = []
    if sc.has("TARGET_INFO_GPU"):
        c = _picker(sc.columns["TARGET_INFO_GPU"])
        q = f'SELECT {c("id")}, {c("name")}, {c("smCount")}, {c("totalMemory")}, {c("memoryBandwidth")}, {c("computeMajor")}, {c("computeMinor")} FROM "TARGET_INFO_GPU"'
        for did, name, sm, mem, bw, cmaj, cmin in trace.engine.rows(q):
            rows.append(_gpu_row(did, name, sm, mem, bw, cmaj, cmin, "TARGET_INFO_GPU"))
    elif sc.has("TARGET_INFO_CUDA_GPU"):
        c = _picker(sc.columns["TARGET_INFO_CUDA_GPU"])
        q = (
            f"SELECT {c('deviceId')}, {c('name')}, {c('numMultiprocessors')}, {c('globalMemorySize')}, {c('globalMemoryBandwidth')}, "
            f'{c("computeCapabilityMajor")}, {c("computeCapabilityMinor")} FROM "TARGET_INFO_CUDA_GPU"'
        )
        for did, name, sm, mem, bw, cmaj, cmin in trace.engine.rows(q):
            rows.append(_gpu_row(did, name, sm, mem, bw, cmaj, cmin, "TARGET_INFO_CUDA_GPU"))
    elif sc.has("TARGET_INFO_CUDA_DEVICE"):
        have = sc.columns["TARGET_INFO_CUDA_DEVICE"]
        sm = '"numMultiprocessors"' if "numMultiprocessors" in have else "NULL"
        for did, nsm in trace.engine.rows(f'SELECT DISTINCT "gpuId", {sm} FROM "TARGET_INFO_CUDA_DEVICE"'):
            rows.append(_gpu_row(did, None, nsm, None, None, None, None, "TARGET_INFO_CUDA_DEVICE"))
    df = pd.DataFrame(rows, columns=cols).drop_duplicates("device_id") if rows else pd.DataFrame(columns=cols)
    return df.reset_index(drop=True)


def _picker(have: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """SQL for a column that may be absent in this export version: the quoted name, or NULL."""
    return lambda name: f'"{name}"' if name in have else "NULL"


def _gpu_row(did: Any, name: Any, sm: Any, mem: Any, bw: Any, cmaj: Any, cmin: Any, source: str) -> dict[str, Any]:
    did, sm, cmaj, cmin = (_int(v) for v in (did, sm, cmaj, cmin))
    mem, bw = (_number(v) for v in (mem, bw))
    return {
        "device_id": did if did is not None else -1,
        "name": _text(name) or "unknown",
        "sm_count": sm or None,
        "memory_gib": round(mem / 2**30, 1) if mem else None,
        "memory_bandwidth_gbps": round(bw / 1e9, 1) if bw else None,
        "compute_capability": f"{cmaj}.{cmin}" if cmaj is not None and cmin is not None else None,
        "source": source,
    }


def _int(v: Any) -> int | None:
    """An integer cell of a descriptive table, or None (a damaged value describes nothing)."""
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return "".join(ch for ch in v if ch.isprintable()) if isinstance(v, str) else ""


def graph_launches(trace: Trace) -> int:
    """Number of cudaGraphLaunch / cuGraphLaunch calls (0 when none, or no API table)."""
    return int(_api_work(trace)["gl"].sum())


def _graph_launch_ids(trace: Trace) -> list[int]:
    table = S.TABLES["api"]
    if not trace.has("api") or not trace.schema.has(table, "nameId") or not trace.schema.has(S.STRINGS):
        return []
    return [int(r[0]) for r in trace.engine.rows(f"SELECT id FROM \"{S.STRINGS}\" WHERE value LIKE 'cudaGraphLaunch%' OR value LIKE 'cuGraphLaunch%'")]


def gpu_name(trace: Trace, device_id: int | None = None) -> str:
    """Name of one GPU (or the first), 'unknown' when the export has no GPU table."""
    g = _gpu_table(trace)
    if len(g) == 0:
        return "unknown"
    if device_id is not None and (g["device_id"] == device_id).any():
        return str(g.loc[g["device_id"] == device_id, "name"].iloc[0])
    return str(g["name"].iloc[0])


def processes(trace: Trace, work: tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]] | None = None) -> pd.DataFrame:
    """Processes with CUDA or NVTX activity: pid, name, threads, kernels, api_calls, nvtx_events, devices."""
    gw, aw, nw = work if work is not None else (_gpu_work(trace), _api_work(trace), _nvtx_work(trace))
    counts: dict[int, dict[str, Any]] = {}

    def entry(p: int) -> dict[str, Any]:
        return counts.setdefault(p, {"kernels": 0, "api_calls": 0, "nvtx_events": 0, "threads": set(), "devices": set()})

    m = (gw["kind"] == _OP_CODES["kernels"]) & (gw["nv"] > 0)
    for p, d, n in zip(pid_of(gw["g"][m]).tolist(), gw["d"][m].tolist(), gw["nv"][m].tolist()):
        e = entry(p)
        e["kernels"] += n
        e["devices"].add(d)
    for w, key in ((aw, "api_calls"), (nw, "nvtx_events")):
        if not w["has_tid"]:
            continue
        m = w["nv"] > 0
        for p, t, n in zip(pid_of(w["g"][m]).tolist(), tid_of(w["g"][m]).tolist(), w["nv"][m].tolist()):
            e = entry(p)
            e[key] += n
            e["threads"].add(t)
    names: dict[int, str] = {}
    if trace.schema.has(S.PROCESSES, "pid") and trace.schema.has(S.PROCESSES, "name"):
        for pid, name in trace.engine.rows(f'SELECT "pid", "name" FROM "{S.PROCESSES}"'):
            if _int(pid) is not None and pid in counts:
                names[int(pid)] = process_name(_text(name))
    rows = [
        {
            "pid": p,
            "name": names.get(p, ""),
            "threads": len(v["threads"]),
            "kernels": v["kernels"],
            "api_calls": v["api_calls"],
            "nvtx_events": v["nvtx_events"],
            "devices": ",".join(str(d) for d in sorted(v["devices"])),
        }
        for p, v in sorted(counts.items())
    ]
    return pd.DataFrame(rows, columns=["pid", "name", "threads", "kernels", "api_calls", "nvtx_events", "devices"])


def process_name(raw: object) -> str:
    """Only the executable's base name: full paths carry user and host names. A name that is a home
    folder itself (/home/<user>, /Users/<user>, C:\\Users\\<user>) or a bare folder shows as empty."""
    parts = [p for p in str(raw or "").replace("\\", "/").split("/") if p]
    if not parts:
        return ""
    if len(parts) >= 2 and parts[-2].lower() in ("home", "users"):
        return ""
    if str(raw).rstrip().endswith(("/", "\\")) or parts[-1] in ("root", "~") or parts[-1].startswith("~"):
        return ""
    return "".join(ch for ch in parts[-1] if ch.isprintable())


_LOAD_NOTED = ("global_pid", "global_tid", "correlation_id", "device_id", "stream_id", "event_class")
_NARROW_KERNELS = ("start_ns", "end_ns", "device_id", "stream_id", "global_pid")


def streams(trace: Trace, work: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """device_id, stream_id, pid, kernels, memcpy, memset, busy_ms (union of GPU work on the stream).

    From the aggregate of `_gpu_work`; the notes are those that loading the GPU operations would raise."""
    cols = ["device_id", "stream_id", "pid", "kernels", "memcpy", "memset", "busy_ms"]
    if not any(trace.has(k) for k in S.GPU_OP_KINDS):
        return pd.DataFrame(columns=cols)
    w = _gpu_work(trace) if work is None else work
    for kind in S.GPU_OP_KINDS:
        if not trace.has(kind):
            continue
        tables.require_times(trace, kind)
        spec = tables.SPECS[kind]
        present = trace.schema.columns[S.TABLES[kind]]
        for c in _NARROW_KERNELS if kind == "kernels" else tuple(spec):
            if c in _LOAD_NOTED and spec[c].source not in present:
                trace.note(f"{S.TABLES[kind]} has no {spec[c].source} column (older export): {c} is unknown")
        m = w["kind"] == _OP_CODES[kind]
        n, nv, nu = (int(w[c][m].sum()) for c in ("n", "nv", "nu"))
        tables.note_invalid_rows(trace, kind, n - nv)
        if nv - nu:
            trace.note(f"{nv - nu} {kind} rows with unknown timestamps (start = end = 0) were ignored")
    use = w["nu"] > 0
    if not use.any():
        return pd.DataFrame(columns=cols)
    key = pd.DataFrame({"device_id": w["d"][use], "stream_id": w["s"][use], "pid": pid_of(w["g"][use])})
    for kind in S.GPU_OP_KINDS:
        key[kind] = np.where(w["kind"][use] == _OP_CODES[kind], w["nu"][use], 0)
    key["busy_ms"] = w["busy"][use]
    out = key.groupby(["device_id", "stream_id", "pid"], as_index=False, sort=True).sum()
    for c in ("device_id", "stream_id", "pid", *S.GPU_OP_KINDS):
        out[c] = out[c].astype(np.int64)
    out["busy_ms"] = out["busy_ms"].to_numpy(np.int64) / 1e6
    return out.reset_index(drop=True)[cols]


def nvtx_domains(trace: Trace, work: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """domain, pid, ranges, marks (from the NVTX aggregate; names from the domain-create events)."""
    cols = ["domain", "pid", "ranges", "marks"]
    if not trace.has("nvtx") or "eventType" not in trace.schema.columns[S.TABLES["nvtx"]]:
        return pd.DataFrame(columns=cols)
    w = _nvtx_work(trace) if work is None else work
    df = pd.DataFrame({"d": w["d"], "pid": pid_of(w["g"]), "ranges": w["ranges"], "marks": w["marks"]})
    if len(df) == 0:
        return pd.DataFrame(columns=cols)
    df = df.groupby(["d", "pid"], as_index=False)[["ranges", "marks"]].sum()
    df = df[(df["ranges"] + df["marks"]) > 0]
    names = tables.nvtx_domains(trace)
    lookup = {(int(p), int(d)): str(n) for p, d, n in zip(names["pid"], names["domain_id"], names["domain"])}
    df["domain"] = [lookup.get((int(p), int(d)), "default" if d == 0 else f"domain {d}") for p, d in zip(df["pid"], df["d"])]
    out = df.groupby(["domain", "pid"], as_index=False)[["ranges", "marks"]].sum()
    return out[cols].astype({"ranges": "int64", "marks": "int64", "pid": "int64"}).reset_index(drop=True)


ACTIVITY_KINDS = ("kernels", "api", "memcpy", "memset")
OUTLIER_MARGIN_NS = 1_000_000
"""An NVTX event further than this (or than 10 % of the activity span, if more) outside the CUDA activity is an outlier."""


def _checked_span(trace: Trace, kind: str, n: int, a: int, b: int) -> tuple[int | None, int | None]:
    """(first start, last end) of the usable rows of `kind` (None without any), range-checked as the loaders do."""
    lo, hi = (a, b) if n else (None, None)
    check_times(trace.path, S.TABLES[kind], {"start": np.array([lo or 0], np.int64), "end": np.array([hi or 0], np.int64)})
    return lo, hi


def _activity_spans(trace: Trace, gw: dict[str, np.ndarray], aw: dict[str, np.ndarray]) -> list[tuple[int | None, int | None]]:
    spans: list[tuple[int | None, int | None]] = []
    for kind in ACTIVITY_KINDS:
        table = S.TABLES[kind]
        if not trace.has(kind) or not (trace.schema.has(table, "start") and trace.schema.has(table, "end")):
            spans.append((None, None))
            continue
        w, m = (aw, slice(None)) if kind == "api" else (gw, gw["kind"] == _OP_CODES[kind])
        have = w["nu"][m] > 0
        n = int(have.sum())
        spans.append(_checked_span(trace, kind, n, int(w["lo"][m][have].min()) if n else 0, int(w["hi"][m][have].max()) if n else 0))
    return spans


def time_span(trace: Trace) -> tuple[int | None, int | None]:
    """The span of the trace's activity: CUDA work and calls, widened by the NVTX events near them. An
    NVTX event far outside (`nvtx_outliers`) is left out: one stray timestamp must not double the span."""
    lo, hi, _, _, _ = _time_span(trace, _gpu_work(trace), _api_work(trace))
    return lo, hi


def _time_span(
    trace: Trace, gw: dict[str, np.ndarray], aw: dict[str, np.ndarray]
) -> tuple[int | None, int | None, list[dict[str, Any]], int, dict[str, np.ndarray]]:
    """(lo, hi, the first outliers, their count, the NVTX aggregate): the NVTX table is read once, after the
    activity's span is known (which NVTX events lie far outside it is part of that one query)."""
    spans = _activity_spans(trace, gw, aw)
    los = [a for a, _ in spans if a is not None]
    his = [b for _, b in spans if b is not None]
    lo, hi = (min(los) if los else None), (max(his) if his else None)
    if not trace.has("nvtx") or not trace.schema.has(S.TABLES["nvtx"], "start"):
        return lo, hi, [], 0, _nvtx_work(trace)
    table = S.TABLES["nvtx"]
    cols = trace.schema.columns[table]
    if lo is None or hi is None:  # NVTX only: its own span, no outliers
        nw = _nvtx_work(trace)
        if "end" not in cols:
            return None, None, [], 0, nw
        have = nw["nu"] > 0
        n = int(have.sum())
        a, b = _checked_span(trace, "nvtx", n, int(nw["lo"][have].min()) if n else 0, int(nw["hi"][have].max()) if n else 0)
        return a, b, [], 0, nw
    margin = max(OUTLIER_MARGIN_NS, (hi - lo) // 10)
    nw = _nvtx_work(trace, (lo - margin, hi + margin))
    inside = nw["n_in"] > 0
    if inside.any():
        lo = min(lo, int(nw["lo_in"][inside].min()))
        hi = max(hi, int(nw["hi_in"][inside].max()))
    count = int(nw["n_out"].sum())
    listed: list[dict[str, Any]] = []
    if count:
        end = 'COALESCE("end", "start")' if "end" in cols else '"start"'
        valid = tables.nvtx_valid_sql(trace)
        outside = f'("start" < {int(nw["bounds"][0])} OR {end} > {int(nw["bounds"][1])})'
        et = '"eventType"' if "eventType" in cols else "NULL"
        dom = '"domainId"' if "domainId" in cols else "0"
        gt = '"globalTid"' if "globalTid" in cols else "0"
        rows = trace.engine.rows(
            f'SELECT "start", {end}, {et}, {dom}, {gt} FROM "{table}" WHERE {valid} AND NOT ("start" = 0 AND {end} = 0) AND {outside} ORDER BY "start" LIMIT 5'
        )
        names = tables.nvtx_domains(trace)
        lookup = {(int(p), int(d)): str(x) for p, d, x in zip(names["pid"], names["domain_id"], names["domain"])}
        for start, stop, etype, did, g in rows:
            d = int(did or 0)
            pid = int(pid_of(np.array([int(g or 0)], np.int64))[0])
            listed.append(
                {
                    "start_ns": int(start),
                    "end_ns": int(stop),
                    "kind": _NVTX_EVENT_NAMES.get(int(etype) if etype is not None else -1, "event"),
                    "domain": lookup.get((pid, d), "default" if d == 0 else f"domain {d}"),
                    "ms_outside": round(((lo - int(stop)) if int(stop) < lo else (int(start) - hi)) / 1e6, 3) if int(stop) < lo or int(start) > hi else 0.0,
                }
            )
    return lo, hi, listed, count, nw


# -- one aggregate query per table ------------------------------------------------------------------
# `summary` reads each event table once: kernels, memcpys and memsets in one query (per kind, process,
# device and stream: rows, valid and usable rows, their span, the stream's busy time by a running maximum
# of the ends before each operation), the CUDA API calls in one (per thread: counts, span, graph launches)
# and the NVTX events in one (per domain and thread: ranges, marks, counts, the span inside and the events
# far outside the CUDA activity, the text column's use). No frame is loaded (on small files, which sqlite3
# reads, the launch check still uses the launch join, as before).

_ZERO = '("start" = 0 AND "end" = 0)'
_OP_CODES = {kind: i for i, kind in enumerate(S.GPU_OP_KINDS)}


def _max_sql(a: str, b: str) -> str:
    """The larger of two SQL values, in the dialect common to sqlite3 and DuckDB."""
    return f"(CASE WHEN {a} > {b} THEN {a} ELSE {b} END)"


def _flag(cond: str) -> str:
    return f"CASE WHEN {cond} THEN 1 ELSE 0 END"


def _ints(trace: Trace, sql: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The columns of an aggregate whose every value is an integer (keys and sums are coalesced in SQL)."""
    got = trace.engine.arrays(sql)
    return {c: np.asarray(got[c]).astype(np.int64) for c in names}


def _gpu_work(trace: Trace) -> dict[str, np.ndarray]:
    """Per (kind, globalPid, deviceId, streamId): rows n, valid rows nv, usable rows nu (valid, timestamps
    known), their first start lo and last end hi, busy ns (each usable row's part beyond the running maximum
    of the ends before it on its device, stream and process: summed, the union of the stream's work) and
    kernels that are graph nodes gn. Keys are the loaders' values for usable rows (globalPid NULL -> 0).
    From the file's pages when the page reader can (`activity.gpu_work`), this query otherwise."""
    if (fast := activity.gpu_work(trace)) is not None:
        return fast
    names = ("kind", "g", "d", "s", "n", "nv", "nu", "lo", "hi", "busy", "gn")
    parts = []
    for _, kind, have in activity.timed_gpu_kinds(trace):
        table = S.TABLES[kind]
        valid = tables.valid_rows_sql(trace, kind)
        gp = 'COALESCE("globalPid", 0)' if "globalPid" in have else "0"
        dev = 'COALESCE("deviceId", 0)' if "deviceId" in have else "0"
        st = 'COALESCE("streamId", 0)' if "streamId" in have else "0"
        node = _flag('"graphNodeId" > 0') if kind == "kernels" and "graphNodeId" in have else "0"
        parts.append(
            f'SELECT {_OP_CODES[kind]} AS kind, {gp} AS g, {dev} AS d, {st} AS s, "start" AS a, "end" AS b, {_flag(valid)} AS v, '
            f'{_flag(f"{valid} AND NOT {_ZERO}")} AS u, {node} AS gn FROM "{table}"'
        )
    if not parts:
        return {c: np.zeros(0, np.int64) for c in names}
    pid = "((g >> 24) & 16777215)"
    # ties of (start, end) on a stream: kernels first, then memcpys, then memsets (as `activity.gpu_work`)
    prev = f"max(b) OVER (PARTITION BY u, d, s, {pid} ORDER BY a, b, kind ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
    ops = " UNION ALL ".join(parts)
    inner = f"SELECT kind, g, d, s, a, b, v, u, gn, CASE WHEN u = 1 THEN b - {_max_sql('a', f'COALESCE({prev}, a)')} ELSE 0 END AS add_ns FROM ({ops}) ops"
    sql = (
        "SELECT kind, g, d, s, count(*) AS n, CAST(COALESCE(sum(v), 0) AS BIGINT) AS nv, CAST(COALESCE(sum(u), 0) AS BIGINT) AS nu, "
        "COALESCE(min(CASE WHEN u = 1 THEN a END), 0) AS lo, COALESCE(max(CASE WHEN u = 1 THEN b END), 0) AS hi, "
        "CAST(COALESCE(sum(CASE WHEN add_ns > 0 THEN add_ns ELSE 0 END), 0) AS BIGINT) AS busy, CAST(COALESCE(sum(gn), 0) AS BIGINT) AS gn "
        f"FROM ({inner}) w GROUP BY 1, 2, 3, 4"
    )
    return _ints(trace, sql, names)


def _api_work(trace: Trace) -> dict[str, Any]:
    """Per globalTid of the CUDA API calls: n, valid nv, usable nu, lo, hi, and graph launches gl (every row)."""
    names = ("g", "n", "nv", "nu", "lo", "hi", "gl")
    table = S.TABLES["api"]
    if not trace.has("api"):
        return {**{c: np.zeros(0, np.int64) for c in names}, "has_tid": False}
    if (fast := activity.api_work(trace, _graph_launch_ids(trace))) is not None:
        return fast
    have = trace.schema.columns[table]
    timed = "start" in have and "end" in have
    valid = tables.valid_rows_sql(trace, "api")
    usable = f'{valid} AND NOT ("start" = 0 AND COALESCE("end", 0) = 0)' if timed else "1 = 0"
    ids = _graph_launch_ids(trace)
    gl = _flag(f'"nameId" IN ({", ".join(str(i) for i in ids)})') if ids else "0"
    gt = 'COALESCE("globalTid", 0)' if "globalTid" in have else "0"
    lo = f'COALESCE(min(CASE WHEN {usable} THEN "start" END), 0)' if timed else "0"
    hi = f'COALESCE(max(CASE WHEN {usable} THEN COALESCE("end", "start") END), 0)' if timed else "0"
    sql = (
        f"SELECT {gt} AS g, count(*) AS n, CAST(COALESCE(sum({_flag(valid)}), 0) AS BIGINT) AS nv, CAST(COALESCE(sum({_flag(usable)}), 0) AS BIGINT) AS nu, "
        f'{lo} AS lo, {hi} AS hi, CAST(COALESCE(sum({gl}), 0) AS BIGINT) AS gl FROM "{table}" GROUP BY 1'
    )
    return {**_ints(trace, sql, names), "has_tid": "globalTid" in have}


def _nvtx_work(trace: Trace, bounds: tuple[int, int] | None = None) -> dict[str, Any]:
    """Per (domainId, globalTid) of the NVTX events (NULL -> 0): ranges and marks (every row), valid nv,
    usable nu, lo, hi; with `bounds` (lo, hi of the activity widened by the margin) the usable events inside
    them (n_in, lo_in, hi_in) and outside (n_out); ti/tt: ranges and marks with inline text / all."""
    names = ("d", "g", "ranges", "marks", "nv", "nu", "lo", "hi", "n_in", "lo_in", "hi_in", "n_out", "ti", "tt")
    empty = {**{c: np.zeros(0, np.int64) for c in names}, "has_tid": False, "bounds": np.zeros(2, np.int64)}
    table = S.TABLES["nvtx"]
    if not trace.has("nvtx"):
        return empty
    have = trace.schema.columns[table]
    if "start" not in have and "eventType" not in have:
        return empty
    if (fast := activity.nvtx_work(trace, bounds)) is not None:
        return fast
    valid = tables.nvtx_valid_sql(trace)
    end = 'COALESCE("end", "start")' if "end" in have else '"start"'
    usable = f'{valid} AND NOT ("start" = 0 AND {end} = 0)' if "start" in have else "1 = 0"
    et = "eventType" in have
    ranges = _flag(f'"eventType" IN ({", ".join(str(t) for t in S.NVTX_RANGE_TYPES)})') if et else "0"
    marks = _flag(f'"eventType" = {S.NVTX_MARK}') if et else "0"
    texted = '"eventType" IN (59, 60, 34)'
    ti = _flag(f'{texted} AND "text" IS NOT NULL') if et and "text" in have else "0"
    tt = _flag(texted) if et and "text" in have else "0"
    inside = f'NOT ("start" < {bounds[0]} OR {end} > {bounds[1]})' if bounds is not None else "1 = 1"

    def sums(cond: str) -> str:
        return f"CAST(COALESCE(sum({_flag(cond)}), 0) AS BIGINT)"

    def total(expr: str) -> str:
        return f"CAST(COALESCE(sum({expr}), 0) AS BIGINT)"

    start = '"start"' if "start" in have else "0"
    dom = 'COALESCE("domainId", 0)' if "domainId" in have else "0"
    gt = 'COALESCE("globalTid", 0)' if "globalTid" in have else "0"
    sql = (
        f"SELECT {dom} AS d, {gt} AS g, "
        f"{total(ranges)} AS ranges, {total(marks)} AS marks, {sums(valid)} AS nv, {sums(usable)} AS nu, "
        f"COALESCE(min(CASE WHEN {usable} THEN {start} END), 0) AS lo, COALESCE(max(CASE WHEN {usable} THEN {end} END), 0) AS hi, "
        f"{sums(f'{usable} AND {inside}')} AS n_in, COALESCE(min(CASE WHEN {usable} AND {inside} THEN {start} END), 0) AS lo_in, "
        f"COALESCE(max(CASE WHEN {usable} AND {inside} THEN {end} END), 0) AS hi_in, {sums(f'{usable} AND NOT ({inside})')} AS n_out, "
        f'{total(ti)} AS ti, {total(tt)} AS tt FROM "{table}" GROUP BY 1, 2'
    )
    out = _ints(trace, sql, names)
    return {**out, "has_tid": "globalTid" in have, "bounds": np.array(bounds or (0, 0), np.int64)}


_NVTX_EVENT_NAMES = {S.NVTX_MARK: "mark", S.NVTX_DOMAIN_CREATE: "domain-create event", **dict.fromkeys(S.NVTX_RANGE_TYPES, "range")}


def outlier_note(listed: list[dict[str, Any]], count: int, lo: int | None, hi: int | None) -> str:
    first = listed[0]
    where = "before" if first["end_ns"] < (lo or 0) else "after"
    what = f"a {first['kind']} of NVTX domain {first['domain']!r} at {first['start_ns'] / 1e6:.3f} ms, {abs(first['ms_outside']):.3f} ms {where} it"
    return f"{count} NVTX event(s) lie far outside the CUDA activity and are left out of the time span ({what})"


def slice_status(trace: Trace, kernels: int | None = None, missing: int | None = None) -> tuple[bool, str]:
    """Whether the export is a time slice: metadata says so, or kernels lack their launching calls
    (`kernels`: the count of valid kernel rows, and `missing`: those without a call, when the caller has them)."""
    if "DERIVED_WINDOW_NS" in trace.export_meta:
        return True, f"export metadata marks a time window ({trace.export_meta['DERIVED_WINDOW_NS']} ns)"
    if not trace.has("kernels"):
        return False, "no kernels"
    if not trace.has("api"):
        return False, "no CUDA API table to check against"
    if missing is None or kernels is None:
        missing, kernels = _kernels_without_launch(trace, kernels)
    if missing:
        return True, f"{missing} of {kernels} kernels have no launching API call"
    return False, "every kernel has its launching API call"


def _launch_check_in_sql(trace: Trace) -> bool:
    """Whether the launch check runs as one join over the tables (large files: from the pages, else in
    DuckDB, or sqlite3 where DuckDB is missing) rather than on the in-memory launch join."""
    kt = S.TABLES["kernels"]
    big = trace.engine.prefers_duckdb() and (trace.engine.reads_pages() or trace.engine.uses_duckdb())  # (pages: no DuckDB needed)
    return not trace.is_loaded("launches") and big and trace.schema.has(kt, "correlationId") and trace.has("api")


def _kernels_without_launch(trace: Trace, total: int | None = None) -> tuple[int, int]:
    """Kernels whose correlationId has no runtime/driver call in the same process: an outer join in
    DuckDB for large files (hash join), the in-memory launch join otherwise."""
    if not _launch_check_in_sql(trace):
        launches = trace.launches()
        return int((~launches["has_launch"].to_numpy()).sum()), len(launches)
    if total is None:
        total = int(trace.engine.frame(f'SELECT count(*) AS n FROM "{S.TABLES["kernels"]}" WHERE {tables.valid_rows_sql(trace, "kernels")}')["n"].iloc[0])
    return _missing_launches(trace), total


def _missing_launches(trace: Trace) -> int:
    """The DuckDB join of `_kernels_without_launch`: valid kernels without a call of the same process
    (from the file's pages when the page reader can)."""
    if (fast := activity.missing_launches(trace)) is not None:
        return fast
    kt, at = S.TABLES["kernels"], S.TABLES["api"]
    pid_ok = trace.schema.has(kt, "globalPid") and trace.schema.has(at, "globalTid")
    cond = 'r."correlationId" = k."correlationId"' + (' AND ((r."globalTid" >> 24) & 16777215) = ((k."globalPid" >> 24) & 16777215)' if pid_ok else "")
    valid = tables.valid_rows_sql(trace, "kernels", alias="k.")
    # a left join rather than NOT EXISTS: DuckDB then builds its hash table on the kernels, not on the (larger)
    # API table (half the time at 400x); a kernel without a call is the one row with a NULL right side
    df = trace.engine.frame(f'SELECT count(*) FILTER (WHERE r."correlationId" IS NULL) AS missing FROM "{kt}" k LEFT JOIN "{at}" r ON {cond} WHERE {valid}')
    return int(df["missing"].iloc[0])


def _concurrently(trace: Trace, jobs: dict[str, Callable[[Trace], Any]]) -> dict[str, Any]:
    """Run the aggregate queries `jobs` at once, on threads (each with its own DuckDB cursor; DuckDB works
    outside the GIL), when DuckDB runs them; one after the other with sqlite3. The notes each raises are
    raised again on the calling thread, so they are the trace's (and its cached summary's) whichever ran it."""
    # (pages: numpy holds the GIL; and asked first, so that DuckDB is not even connected for them)
    if len(jobs) < 2 or trace.engine.reads_pages() or not trace.engine.uses_duckdb():
        return {k: fn(trace) for k, fn in jobs.items()}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(jobs)) as ex:
        futures = {k: ex.submit(trace.collecting, lambda fn=fn: fn(trace)) for k, fn in jobs.items()}
        done = {k: f.result() for k, f in futures.items()}
    for _, notes in done.values():
        for n in notes:
            trace.note(n)
    return {k: value for k, (value, _) in done.items()}


def summary(trace: Trace) -> dict[str, Any]:
    """The whole `info` answer as plain data (JSON-ready): one aggregate per event table, from the
    file's pages where the page reader can (each table's columns read once), else one query each."""
    for kind in ("kernels", "api"):
        if trace.has(kind) and not trace.engine.reads_pages():
            trace.validate(kind)  # (on this thread, before the queries run at once; with pages they run in turn)
    jobs: dict[str, Callable[[Trace], Any]] = {"gw": _gpu_work, "aw": _api_work}
    if "DERIVED_WINDOW_NS" not in trace.export_meta and _launch_check_in_sql(trace):
        jobs["missing"] = _missing_launches
    # each table's columns read once for every aggregate, and for the NVTX domain names (`nvtx_domains`)
    with activity.reading(trace), trace.engine.sharing():
        got = _concurrently(trace, jobs)
        gw, aw = got["gw"], got["aw"]
        lo, hi, outliers, n_outliers, nw = _time_span(trace, gw, aw)
        if n_outliers:
            trace.note(outlier_note(outliers, n_outliers, lo, hi))
        sliced, why = slice_status(trace, int(gw["nv"][gw["kind"] == _OP_CODES["kernels"]].sum()), got.get("missing"))
        nvtx_text = "none"
        if trace.has("nvtx"):
            inline, total = int(nw["ti"].sum()), int(nw["tt"].sum())
            nvtx_text = "text" if inline == total and total else ("textId" if inline == 0 and total else "mixed text/textId")
        return {
            "file": str(trace.source_path),
            "sqlite_file": str(trace.path),
            "size_bytes": trace.path.stat().st_size,
            "nsys_version": trace.version.product,
            "export_schema_version": trace.version.schema,
            "version_source": trace.version.source,
            "era": trace.version.era,
            "cuda_graph_trace_mode": trace.capture_mode(),
            "cuda_graph_launches": int(aw["gl"].sum()),
            "capture_event_types": trace.capture_meta.get("CAPTURE_EVENT_TYPE", []),
            "time_slice": sliced,
            "time_slice_reason": why,
            "start_ns": lo,
            "end_ns": hi,
            "duration_ms": (hi - lo) / 1e6 if lo is not None and hi is not None else None,
            "nvtx_outliers": n_outliers,
            "nvtx_outliers_first": outliers,
            "nvtx_strings": nvtx_text,
            "tables": {k: trace.count(k) for k in COUNTED_KINDS if trace.has(k)},
            "missing_tables": [k for k in ("kernels", "api", "nvtx", "memcpy", "memset", "sync") if not trace.has(k)],
            "gpus": gpus(trace, gw).to_dict("records"),
            "processes": processes(trace, (gw, aw, nw)).to_dict("records"),
            "streams": streams(trace, gw).to_dict("records"),
            "nvtx_domains": nvtx_domains(trace, nw).to_dict("records"),
            "notes": list(trace.notes),
        }
