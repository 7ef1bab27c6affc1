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
from nsysparse.trace.ids import pid_of, tid_of

if TYPE_CHECKING:
    from nsysparse.trace.trace import Trace

COUNTED_KINDS = ("kernels", "api", "nvtx", "memcpy", "memset", "sync", "graph_trace", "osrt")


def gpus(trace: "Trace") -> pd.DataFrame:
    """device_id, name, sm_count, memory_gib, memory_bandwidth_gbps, compute_capability, source, kernels."""
    df = _gpu_table(trace)
    used = trace.kernels()["device_id"].value_counts() if trace.has("kernels") else pd.Series(dtype="int64")
    for dev in used.index:  # devices that ran kernels but have no GPU-table row
        if not (df["device_id"] == dev).any():
            df.loc[len(df)] = {"device_id": int(dev), "name": "unknown", "source": "kernels only"}
    df["kernels"] = df["device_id"].map(used).fillna(0).astype("int64")
    return df


def _gpu_table(trace: "Trace") -> pd.DataFrame:
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
            f'SELECT {c("deviceId")}, {c("name")}, {c("numMultiprocessors")}, {c("globalMemorySize")}, {c("globalMemoryBandwidth")}, '
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
    return {
        "device_id": int(did) if did is not None else -1,
        "name": str(name) if name else "unknown",
        "sm_count": int(sm) if sm else None,
        "memory_gib": round(float(mem) / 2**30, 1) if mem else None,
        "memory_bandwidth_gbps": round(float(bw) / 1e9, 1) if bw else None,
        "compute_capability": f"{cmaj}.{cmin}" if cmaj is not None and cmin is not None else None,
        "source": source,
    }


def graph_launches(trace: "Trace") -> int:
    """Number of cudaGraphLaunch / cuGraphLaunch calls (0 when none, or no API table)."""
    table = S.TABLES["api"]
    if not trace.schema.has(table, "nameId") or not trace.schema.has(S.STRINGS):
        return 0
    q = f'SELECT count(*) FROM "{table}" r JOIN "{S.STRINGS}" s ON s.id = r."nameId" WHERE s.value LIKE \'cudaGraphLaunch%\' OR s.value LIKE \'cuGraphLaunch%\''
    return int(trace.engine.rows(q)[0][0])


def gpu_name(trace: "Trace", device_id: int | None = None) -> str:
    """Name of one GPU (or the first), 'unknown' when the export has no GPU table."""
    g = _gpu_table(trace)
    if len(g) == 0:
        return "unknown"
    if device_id is not None and (g["device_id"] == device_id).any():
        return str(g.loc[g["device_id"] == device_id, "name"].iloc[0])
    return str(g["name"].iloc[0])


def processes(trace: "Trace") -> pd.DataFrame:
    """Processes with CUDA or NVTX activity: pid, name, threads, kernels, api_calls, nvtx_events, devices."""
    counts: dict[int, dict[str, Any]] = {}

    def bump(pids: np.ndarray, key: str) -> None:
        u, n = np.unique(pids, return_counts=True)
        for p, k in zip(u.tolist(), n.tolist()):
            counts.setdefault(p, {"kernels": 0, "api_calls": 0, "nvtx_events": 0, "threads": set(), "devices": set()})[key] += k

    if trace.has("kernels"):
        k = trace.kernels()
        bump(k["pid"].to_numpy(), "kernels")
        for p, d in k[["pid", "device_id"]].drop_duplicates().itertuples(index=False):
            counts[int(p)]["devices"].add(int(d))
    for kind, key in (("api", "api_calls"), ("nvtx", "nvtx_events")):
        if not trace.has(kind):
            continue
        col = "globalTid"
        table = S.TABLES[kind]
        if not trace.schema.has(table, col):
            continue
        rows = trace.engine.rows(f'SELECT "{col}", count(*) FROM "{table}" GROUP BY 1')
        for g, n in rows:
            g = int(g or 0)
            p = int(pid_of(np.array([g]))[0])
            entry = counts.setdefault(p, {"kernels": 0, "api_calls": 0, "nvtx_events": 0, "threads": set(), "devices": set()})
            entry[key] += int(n)
            entry["threads"].add(int(tid_of(np.array([g]))[0]))
    names: dict[int, str] = {}
    if trace.schema.has(S.PROCESSES, "pid") and trace.schema.has(S.PROCESSES, "name"):
        for pid, name in trace.engine.rows(f'SELECT "pid", "name" FROM "{S.PROCESSES}"'):
            if pid is not None and pid in counts:
                # Only the executable's base name: full paths can carry user and host names.
                names[int(pid)] = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
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


def streams(trace: "Trace") -> pd.DataFrame:
    """device_id, stream_id, pid, kernels, memcpy, memset, busy_ms (union of GPU work on the stream)."""
    cols = ["device_id", "stream_id", "pid", "kernels", "memcpy", "memset", "busy_ms"]
    if not any(trace.has(k) for k in S.GPU_OP_KINDS):
        return pd.DataFrame(columns=cols)
    ops = trace.gpu_ops()
    keys = ops[["device_id", "stream_id", "pid"]]
    codes, uniques = pd.MultiIndex.from_frame(keys).factorize()
    busy = intervals.union_by_group(codes, ops["start_ns"].to_numpy(), ops["end_ns"].to_numpy(), len(uniques))
    out = pd.DataFrame(list(uniques), columns=["device_id", "stream_id", "pid"])
    for kind in S.GPU_OP_KINDS:
        out[kind] = np.bincount(codes[(ops["kind"] == kind).to_numpy()], minlength=len(uniques)).astype(np.int64)
    out["busy_ms"] = busy / 1e6
    return out.sort_values(["device_id", "stream_id", "pid"]).reset_index(drop=True)[cols]


def nvtx_domains(trace: "Trace") -> pd.DataFrame:
    """domain, pid, ranges, marks."""
    cols = ["domain", "pid", "ranges", "marks"]
    if not trace.has("nvtx"):
        return pd.DataFrame(columns=cols)
    n = trace.nvtx()
    if len(n) == 0:
        return pd.DataFrame(columns=cols)
    g = n.assign(is_mark=(n["kind"] == "mark").to_numpy()).groupby(["domain", "pid"], observed=True)["is_mark"]
    out = pd.DataFrame({"ranges": g.size() - g.sum(), "marks": g.sum()}).reset_index()
    out["domain"] = out["domain"].astype(str)
    return out[cols].astype({"ranges": "int64", "marks": "int64"})


def time_span(trace: "Trace") -> tuple[int | None, int | None]:
    lo, hi = None, None
    for kind in ("kernels", "api", "nvtx", "memcpy", "memset"):
        if not trace.has(kind):
            continue
        table = S.TABLES[kind]
        if not (trace.schema.has(table, "start") and trace.schema.has(table, "end")):
            continue
        a, b = trace.engine.rows(f'SELECT min("start"), max("end") FROM "{table}" WHERE NOT ("start" = 0 AND "end" = 0)')[0]
        if a is not None:
            lo = a if lo is None else min(lo, a)
        if b is not None:
            hi = b if hi is None else max(hi, b)
    return lo, hi


def slice_status(trace: "Trace") -> tuple[bool, str]:
    """Whether the export is a time slice: metadata says so, or kernels lack their launching calls."""
    if "DERIVED_WINDOW_NS" in trace.export_meta:
        return True, f"export metadata marks a time window ({trace.export_meta['DERIVED_WINDOW_NS']} ns)"
    if not trace.has("kernels"):
        return False, "no kernels"
    if not trace.has("api"):
        return False, "no CUDA API table to check against"
    launches = trace.launches()
    missing = int((~launches["has_launch"].to_numpy()).sum())
    if missing:
        return True, f"{missing} of {len(launches)} kernels have no launching API call"
    return False, "every kernel has its launching API call"


def summary(trace: "Trace") -> dict[str, Any]:
    """The whole `info` answer as plain data (JSON-ready)."""
    lo, hi = time_span(trace)
    sliced, why = slice_status(trace)
    nvtx_text = "none"
    if trace.has("nvtx"):
        cols = trace.schema.columns[S.TABLES["nvtx"]]
        t = trace.engine.rows(f'SELECT sum(CASE WHEN "text" IS NOT NULL THEN 1 ELSE 0 END), count(*) FROM "{S.TABLES["nvtx"]}" WHERE "eventType" IN (59, 60, 34)') if "text" in cols and "eventType" in cols else [(0, 0)]
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
        "nvtx_strings": nvtx_text,
        "tables": {k: trace.count(k) for k in COUNTED_KINDS if trace.has(k)},
        "missing_tables": [k for k in ("kernels", "api", "nvtx", "memcpy", "memset", "sync") if not trace.has(k)],
        "gpus": gpus(trace).to_dict("records"),
        "processes": processes(trace).to_dict("records"),
        "streams": streams(trace).to_dict("records"),
        "nvtx_domains": nvtx_domains(trace).to_dict("records"),
        "notes": list(trace.notes),
    }
