"""What an export holds: versions, capture mode, GPUs, processes, streams, tables, NVTX domains.

Only allow-listed metadata is read for output. Environment variables, host and user names, command
lines and paths recorded by nsys (TARGET_INFO_SYSTEM_ENV, META_DATA_CAPTURE PROCESS_*:ENVIRONMENT_*,
EXPORT_HOST, EXPORT_USER, ...) are never selected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nsysparse import intervals
from nsysparse.trace import schema as S
from nsysparse.trace import tables
from nsysparse.trace.ids import pid_of, tid_of
from nsysparse.trace.validate import check_times

if TYPE_CHECKING:
    from nsysparse.trace.handle import TraceHandle as Trace

COUNTED_KINDS = ("kernels", "api", "nvtx", "memcpy", "memset", "sync", "graph_trace", "osrt")


def gpus(trace: Trace) -> pd.DataFrame:
    """device_id, name, sm_count, memory_gib, memory_bandwidth_gbps, compute_capability, source, kernels."""
    df = _gpu_table(trace)
    used = pd.Series(dtype="int64")
    kt = S.TABLES["kernels"]
    if trace.has("kernels") and trace.schema.has(kt, "deviceId"):
        if trace.is_loaded("kernels"):
            used = trace.kernels()["device_id"].value_counts()
        else:
            agg = trace.engine.frame(f'SELECT "deviceId" AS d, count(*) AS n FROM "{kt}" WHERE {tables.valid_rows_sql(trace, "kernels")} GROUP BY 1')
            used = pd.Series(agg["n"].to_numpy(np.int64), index=agg["d"].fillna(-1).to_numpy(np.int64))
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
    table = S.TABLES["api"]
    if not trace.schema.has(table, "nameId") or not trace.schema.has(S.STRINGS):
        return 0
    ids = [r[0] for r in trace.engine.rows(f"SELECT id FROM \"{S.STRINGS}\" WHERE value LIKE 'cudaGraphLaunch%' OR value LIKE 'cuGraphLaunch%'")]
    if not ids:
        return 0
    df = trace.engine.frame(f'SELECT count(*) AS n FROM "{table}" WHERE "nameId" IN ({", ".join(str(int(i)) for i in ids)})')
    return int(df["n"].iloc[0])


def gpu_name(trace: Trace, device_id: int | None = None) -> str:
    """Name of one GPU (or the first), 'unknown' when the export has no GPU table."""
    g = _gpu_table(trace)
    if len(g) == 0:
        return "unknown"
    if device_id is not None and (g["device_id"] == device_id).any():
        return str(g.loc[g["device_id"] == device_id, "name"].iloc[0])
    return str(g["name"].iloc[0])


def processes(trace: Trace) -> pd.DataFrame:
    """Processes with CUDA or NVTX activity: pid, name, threads, kernels, api_calls, nvtx_events, devices."""
    counts: dict[int, dict[str, Any]] = {}

    def bump(pids: np.ndarray, key: str) -> None:
        u, n = np.unique(pids, return_counts=True)
        for p, k in zip(u.tolist(), n.tolist()):
            counts.setdefault(p, {"kernels": 0, "api_calls": 0, "nvtx_events": 0, "threads": set(), "devices": set()})[key] += k

    if trace.has("kernels"):
        table = S.TABLES["kernels"]
        gp = '"globalPid"' if trace.schema.has(table, "globalPid") else "0"
        dev = '"deviceId"' if trace.schema.has(table, "deviceId") else "0"
        valid = tables.valid_rows_sql(trace, "kernels")
        df = trace.engine.frame(f'SELECT {gp} AS g, {dev} AS d, count(*) AS n FROM "{table}" WHERE {valid} GROUP BY 1, 2')
        pids = pid_of(df["g"].fillna(0).to_numpy(np.int64)) if len(df) else np.zeros(0, np.int64)
        for p, d, n in zip(pids.tolist(), df["d"].fillna(0).astype(np.int64).tolist(), df["n"].astype(np.int64).tolist()):
            entry = counts.setdefault(p, {"kernels": 0, "api_calls": 0, "nvtx_events": 0, "threads": set(), "devices": set()})
            entry["kernels"] += n
            entry["devices"].add(d)
    for kind, key in (("api", "api_calls"), ("nvtx", "nvtx_events")):
        if not trace.has(kind):
            continue
        col = "globalTid"
        table = S.TABLES[kind]
        if not trace.schema.has(table, col):
            continue
        valid = tables.valid_rows_sql(trace, kind) if kind in tables.SPECS else tables.nvtx_valid_sql(trace)
        df = trace.engine.frame(f'SELECT "{col}" AS g, count(*) AS n FROM "{table}" WHERE {valid} GROUP BY 1')
        g = df["g"].fillna(0).to_numpy(np.int64) if len(df) else np.zeros(0, np.int64)
        for p, t, n in zip(pid_of(g).tolist(), tid_of(g).tolist(), df["n"].astype(np.int64).tolist()):
            entry = counts.setdefault(p, {"kernels": 0, "api_calls": 0, "nvtx_events": 0, "threads": set(), "devices": set()})
            entry[key] += n
            entry["threads"].add(t)
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


def streams(trace: Trace) -> pd.DataFrame:
    """device_id, stream_id, pid, kernels, memcpy, memset, busy_ms (union of GPU work on the stream)."""
    cols = ["device_id", "stream_id", "pid", "kernels", "memcpy", "memset", "busy_ms"]
    if not any(trace.has(k) for k in S.GPU_OP_KINDS):
        return pd.DataFrame(columns=cols)
    ops = trace.gpu_ops(narrow=True)
    # one integer per (device, stream, pid): factorize each column (hash, O(n)), then combine the codes
    parts = [pd.factorize(ops[c].to_numpy()) for c in ("device_id", "stream_id", "pid")]
    combined = np.zeros(len(ops), dtype=np.int64)
    for codes_c, values_c in parts:
        combined = combined * len(values_c) + codes_c
    ucomb, codes = np.unique(combined, return_inverse=True)
    codes = codes.ravel()
    cols_out = []
    rest = ucomb.copy()
    for _, values_c in reversed(parts):
        cols_out.append(np.asarray(values_c)[rest % len(values_c)])
        rest //= len(values_c)
    uniq = np.stack(cols_out[::-1], axis=1) if len(ucomb) else np.zeros((0, 3), np.int64)
    busy = intervals.union_by_group(codes, ops["start_ns"].to_numpy(), ops["end_ns"].to_numpy(), len(uniq))
    out = pd.DataFrame(uniq, columns=["device_id", "stream_id", "pid"])
    for kind in S.GPU_OP_KINDS:
        out[kind] = np.bincount(codes[(ops["kind"] == kind).to_numpy()], minlength=len(uniq)).astype(np.int64)
    out["busy_ms"] = busy / 1e6
    return out.sort_values(["device_id", "stream_id", "pid"]).reset_index(drop=True)[cols]


def nvtx_domains(trace: Trace) -> pd.DataFrame:
    """domain, pid, ranges, marks (one SQL aggregate; names from the domain-create events)."""
    cols = ["domain", "pid", "ranges", "marks"]
    if not trace.has("nvtx"):
        return pd.DataFrame(columns=cols)
    table = S.TABLES["nvtx"]
    have = trace.schema.columns[table]
    if "eventType" not in have:
        return pd.DataFrame(columns=cols)
    dom = '"domainId"' if "domainId" in have else "0"
    gt = '"globalTid"' if "globalTid" in have else "0"
    ranges = ", ".join(str(t) for t in S.NVTX_RANGE_TYPES)
    trace.validate("nvtx")
    df = trace.engine.frame(
        f'SELECT COALESCE({dom}, 0) AS d, COALESCE({gt}, 0) AS g, sum(CASE WHEN "eventType" IN ({ranges}) THEN 1 ELSE 0 END) AS ranges, '
        f'sum(CASE WHEN "eventType" = {S.NVTX_MARK} THEN 1 ELSE 0 END) AS marks FROM "{table}" GROUP BY 1, 2'
    )
    if len(df) == 0:
        return pd.DataFrame(columns=cols)
    df = df.assign(pid=pid_of(df["g"].to_numpy(np.int64)), d=df["d"].astype(np.int64))
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


def _span(trace: Trace, kind: str) -> tuple[int | None, int | None]:
    table = S.TABLES[kind]
    if not trace.has(kind) or not (trace.schema.has(table, "start") and trace.schema.has(table, "end")):
        return None, None
    valid = tables.valid_rows_sql(trace, kind) if kind in tables.SPECS else tables.nvtx_valid_sql(trace)
    row = trace.engine.frame(
        f'SELECT min("start") AS a, max(COALESCE("end", "start")) AS b FROM "{table}" WHERE {valid} AND NOT ("start" = 0 AND COALESCE("end", 0) = 0)'
    )
    a, b = (row["a"].iloc[0], row["b"].iloc[0]) if len(row) else (None, None)
    a = None if a is None or pd.isna(a) else int(a)
    b = None if b is None or pd.isna(b) else int(b)
    check_times(trace.path, table, {"start": np.array([a or 0], np.int64), "end": np.array([b or 0], np.int64)})
    return a, b


def time_span(trace: Trace) -> tuple[int | None, int | None]:
    """The span of the trace's activity: CUDA work and calls, widened by the NVTX events near them. An
    NVTX event far outside (`nvtx_outliers`) is left out: one stray timestamp must not double the span."""
    return _time_span(trace)[:2]


def _time_span(trace: Trace) -> tuple[int | None, int | None, list[dict[str, Any]], int]:
    spans = [_span(trace, k) for k in ACTIVITY_KINDS]
    los = [a for a, _ in spans if a is not None]
    his = [b for _, b in spans if b is not None]
    lo, hi = (min(los) if los else None), (max(his) if his else None)
    if not trace.has("nvtx") or not trace.schema.has(S.TABLES["nvtx"], "start"):
        return lo, hi, [], 0
    if lo is None or hi is None:  # NVTX only: its own span, no outliers
        a, b = _span(trace, "nvtx")
        return a, b, [], 0
    margin = max(OUTLIER_MARGIN_NS, (hi - lo) // 10)
    table = S.TABLES["nvtx"]
    cols = trace.schema.columns[table]
    end = 'COALESCE("end", "start")' if "end" in cols else '"start"'
    valid = tables.nvtx_valid_sql(trace)
    outside = f'("start" < {lo - margin} OR {end} > {hi + margin})'
    row = trace.engine.frame(
        f'SELECT min(CASE WHEN NOT {outside} THEN "start" END) AS a, max(CASE WHEN NOT {outside} THEN {end} END) AS b, '
        f'sum(CASE WHEN {outside} THEN 1 ELSE 0 END) AS n FROM "{table}" WHERE {valid} AND NOT ("start" = 0 AND {end} = 0)'
    )
    a, b, n = row["a"].iloc[0], row["b"].iloc[0], row["n"].iloc[0]
    if a is not None and not pd.isna(a):
        lo = min(lo, int(a))
    if b is not None and not pd.isna(b):
        hi = max(hi, int(b))
    count = 0 if n is None or pd.isna(n) else int(n)
    listed: list[dict[str, Any]] = []
    if count:
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
    return lo, hi, listed, count


_NVTX_EVENT_NAMES = {S.NVTX_MARK: "mark", S.NVTX_DOMAIN_CREATE: "domain-create event", **dict.fromkeys(S.NVTX_RANGE_TYPES, "range")}


def outlier_note(listed: list[dict[str, Any]], count: int, lo: int | None, hi: int | None) -> str:
    first = listed[0]
    where = "before" if first["end_ns"] < (lo or 0) else "after"
    what = f"a {first['kind']} of NVTX domain {first['domain']!r} at {first['start_ns'] / 1e6:.3f} ms, {abs(first['ms_outside']):.3f} ms {where} it"
    return f"{count} NVTX event(s) lie far outside the CUDA activity and are left out of the time span ({what})"


def slice_status(trace: Trace) -> tuple[bool, str]:
    """Whether the export is a time slice: metadata says so, or kernels lack their launching calls."""
    if "DERIVED_WINDOW_NS" in trace.export_meta:
        return True, f"export metadata marks a time window ({trace.export_meta['DERIVED_WINDOW_NS']} ns)"
    if not trace.has("kernels"):
        return False, "no kernels"
    if not trace.has("api"):
        return False, "no CUDA API table to check against"
    missing, total = _kernels_without_launch(trace)
    if missing:
        return True, f"{missing} of {total} kernels have no launching API call"
    return False, "every kernel has its launching API call"


def _kernels_without_launch(trace: Trace) -> tuple[int, int]:
    """Kernels whose correlationId has no runtime/driver call in the same process: an anti-join in
    DuckDB for large files (hash join), the in-memory launch join otherwise."""
    kt, at = S.TABLES["kernels"], S.TABLES["api"]
    pid_ok = trace.schema.has(kt, "globalPid") and trace.schema.has(at, "globalTid")
    if trace.is_loaded("launches") or not trace.engine.prefers_duckdb() or trace.engine.duckdb() is None or not trace.schema.has(kt, "correlationId"):
        launches = trace.launches()
        return int((~launches["has_launch"].to_numpy()).sum()), len(launches)
    cond = 'r."correlationId" = k."correlationId"' + (' AND ((r."globalTid" >> 24) & 16777215) = ((k."globalPid" >> 24) & 16777215)' if pid_ok else "")
    valid = tables.valid_rows_sql(trace, "kernels", alias="k.")
    df = trace.engine.frame(
        f'SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM "{at}" r WHERE {cond})) AS missing, count(*) AS total FROM "{kt}" k WHERE {valid}'
    )
    return int(df["missing"].iloc[0]), int(df["total"].iloc[0])


def summary(trace: Trace) -> dict[str, Any]:
    """The whole `info` answer as plain data (JSON-ready)."""
    lo, hi, outliers, n_outliers = _time_span(trace)
    if n_outliers:
        trace.note(outlier_note(outliers, n_outliers, lo, hi))
    sliced, why = slice_status(trace)
    nvtx_text = "none"
    if trace.has("nvtx"):
        cols = trace.schema.columns[S.TABLES["nvtx"]]
        t = (
            trace.engine.rows(
                f'SELECT sum(CASE WHEN "text" IS NOT NULL THEN 1 ELSE 0 END), count(*) FROM "{S.TABLES["nvtx"]}" WHERE "eventType" IN (59, 60, 34)'
            )
            if "text" in cols and "eventType" in cols
            else [(0, 0)]
        )
        inline, total = (t[0][0] or 0), (t[0][1] or 0)
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
        "cuda_graph_launches": graph_launches(trace),
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
        "gpus": gpus(trace).to_dict("records"),
        "processes": processes(trace).to_dict("records"),
        "streams": streams(trace).to_dict("records"),
        "nvtx_domains": nvtx_domains(trace).to_dict("records"),
        "notes": list(trace.notes),
    }
