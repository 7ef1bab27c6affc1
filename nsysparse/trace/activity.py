"""`info`'s per-table aggregates computed from columns the page reader decodes (see `pages`).

The same numbers as the SQL aggregates in `info` (`_gpu_work`, `_api_work`, `_nvtx_work`,
`_missing_launches`), which stay the reference and the fallback: each function here answers None when
the page reader cannot vouch for a column (or a column it needs is missing), and `info` then runs its
query. Reading the raw columns from the pages and grouping them in numpy costs a fraction of the SQL
scans (SQLite decodes every value at about 90 ns). Every row is counted, valid or not, exactly as the
queries count them; NULL keys count as 0, as the queries' COALESCE does. Where the page reader is
off (WAL, NSYSPARSE_ENGINE, a file it cannot map) every function here answers None.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nsysparse.trace import schema as S
from nsysparse.trace.engine import Column, Select

if TYPE_CHECKING:
    from nsysparse.trace.handle import TraceHandle as Trace

REQUIRED = ("start", "end", "deviceId", "streamId")  # what makes an operation valid (= tables.REQUIRED_SOURCES: tested)
TIME_LIMIT = 2**62  # beyond: the SQL path, whose range check names the damage
_BIG = np.iinfo(np.int64).max
_SMALL = np.iinfo(np.int64).min


# What `summary` reads of each table, once for all of its aggregates (kernels serve the GPU work and
# the launch check, API calls the per-thread work and the launch check).
READ = {
    "kernels": ("start", "end", "globalPid", "deviceId", "streamId", "graphNodeId", "correlationId"),
    "memcpy": ("start", "end", "globalPid", "deviceId", "streamId"),
    "memset": ("start", "end", "globalPid", "deviceId", "streamId"),
    "api": ("start", "end", "globalTid", "nameId", "correlationId"),
    "nvtx": ("start", "end", "eventType", "domainId", "globalTid"),
}
PRESENT = {"nvtx": ("text",)}
_memo: dict[int, dict[str, dict[str, tuple[np.ndarray, np.ndarray]] | None]] = {}


@contextmanager
def reading(trace: Trace) -> Iterator[None]:
    """Within: each table's columns are read once for all aggregates (what `summary` asks); dropped after."""
    key = id(trace.engine)
    if key in _memo:  # already within (a nested or concurrent summary of the same trace): share it
        yield
        return
    _memo[key] = {}
    try:
        yield
    finally:
        _memo.pop(key, None)


def _columns(trace: Trace, kind: str) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The `READ` columns of `kind` the table has, as (values with NULL as 0, NULL mask), and the
    `PRESENT` ones as (not-NULL flags, no mask); None when the page reader cannot answer."""
    memo = _memo.get(id(trace.engine))
    if memo is not None and kind in memo:
        return memo[kind]
    table = S.TABLES[kind]
    have = trace.schema.columns[table]
    sel = Select(table, tuple(Column(c, (c,)) for c in READ[kind] if c in have))
    got = trace.engine.from_pages(sel, present=tuple(c for c in PRESENT.get(kind, ()) if c in have))
    out: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    if got is not None:
        out = {}
        for c, v in got.items():
            if isinstance(v, np.ma.MaskedArray):
                out[c] = (np.asarray(v.filled(0), dtype=np.int64), np.ma.getmaskarray(v))
            elif v.dtype == bool:
                out[c] = (v, np.zeros(len(v), dtype=bool))
            else:
                out[c] = (np.asarray(v, dtype=np.int64), np.zeros(len(v), dtype=bool))
    if memo is not None:
        memo[kind] = out
    return out


def _in_range(*values: np.ndarray) -> bool:
    return all(len(v) == 0 or (int(v.max()) <= TIME_LIMIT and int(v.min()) >= -TIME_LIMIT) for v in values)


def _groups(keys: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per row its group's number, and each group's key values, groups in ascending key order. Each key
    is numbered by hashing (a handful of distinct devices, streams, processes), then the combinations."""
    n = len(keys[0])
    combined = np.zeros(n, dtype=np.int64)
    span, numbered = 1, 0
    for k in keys:
        if n and int(k.min()) == int(k.max()):  # one value (one process, one GPU, ...): nothing to number
            continue
        codes, distinct = pd.factorize(k, sort=False)
        span *= max(len(distinct), 1)
        numbered += 1
        if span >= 1 << 62:  # too many combinations to number exactly: let pandas group them
            frame = pd.DataFrame({f"k{i}": key for i, key in enumerate(keys)})
            combined = frame.groupby(list(frame.columns), sort=False).ngroup().to_numpy()
            numbered = 2
            break
        combined = combined * max(len(distinct), 1) + codes
    if numbered > 1:
        codes, distinct = pd.factorize(combined, sort=False)
        count = len(distinct)
    else:  # the codes of the one varying key (or none): already numbered 0.. in order of appearance
        codes, count = combined, (span if n else 0)
    first = np.zeros(count, dtype=np.int64)
    first[codes[::-1]] = np.arange(n)[::-1]  # a row of each group (any: they share the key)
    values = [k[first] for k in keys]
    order = np.lexsort(values[::-1])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], [v[order] for v in values]


def _running_max(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Per row the largest of `values` so far within its group (rows sorted by `group`, numbered from
    0): one running maximum over the values lifted by group * span, each group above the ones before
    (groupby().cummax() where that could overflow)."""
    if len(values) == 0:
        return values.astype(np.int64)
    lo, hi, groups = int(values.min()), int(values.max()), int(group[-1]) + 1
    span = hi - lo + 1
    if span * groups >= 1 << 62:
        return pd.Series(values).groupby(group).cummax().to_numpy(np.int64)
    lift = group.astype(np.int64) * span
    lifted = values - lo
    lifted += lift
    np.maximum.accumulate(lifted, out=lifted)
    lifted -= lift
    lifted += lo
    return lifted


def _sum(codes: np.ndarray, count: int, values: np.ndarray) -> np.ndarray:
    if values.dtype == bool:  # a count of rows: no sum at all
        return np.bincount(codes[values], minlength=count).astype(np.int64)
    return pd.Series(values.astype(np.int64)).groupby(codes).sum().reindex(range(count), fill_value=0).to_numpy(np.int64)


def _least(codes: np.ndarray, count: int, values: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Per group the smallest of `values` where `use`, else 0 (COALESCE(min(CASE WHEN use ...)), 0))."""
    got = pd.Series(np.where(use, values, _BIG)).groupby(codes).min().reindex(range(count), fill_value=_BIG).to_numpy(np.int64)
    return np.where(got == _BIG, 0, got)


def _most(codes: np.ndarray, count: int, values: np.ndarray, use: np.ndarray) -> np.ndarray:
    got = pd.Series(np.where(use, values, _SMALL)).groupby(codes).max().reindex(range(count), fill_value=_SMALL).to_numpy(np.int64)
    return np.where(got == _SMALL, 0, got)


def timed_gpu_kinds(trace: Trace) -> list[tuple[int, str, tuple[str, ...]]]:
    """(code, kind, the table's columns) of each GPU operation table the trace has with start and end."""
    out = []
    for code, kind in enumerate(S.GPU_OP_KINDS):
        have = trace.schema.columns.get(S.TABLES[kind], ()) if trace.has(kind) else ()
        if "start" in have and "end" in have:
            out.append((code, kind, have))
    return out


def gpu_work(trace: Trace) -> dict[str, np.ndarray] | None:
    """`info._gpu_work` from pages: per (kind, globalPid, deviceId, streamId) rows, valid and usable
    rows, span, busy ns (the union of each stream's usable operations: each one's part beyond the
    running maximum of the ends before it, in (start, end) order, on its device, stream and process)
    and graph-node kernels."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("kind", "g", "d", "s", "a", "b", "v", "u", "gn")}
    for code, kind, have in timed_gpu_kinds(trace):
        node = kind == "kernels" and "graphNodeId" in have
        got = _columns(trace, kind)
        if got is None:
            return None
        (a, a_null), (b, b_null) = got["start"], got["end"]
        n = len(a)
        if not _in_range(a, b):
            return None
        v = ~a_null & ~b_null & (b >= a)
        for c in REQUIRED[2:]:
            if c in got:
                v &= ~got[c][1]
        zero = np.zeros(n, dtype=np.int64)
        parts["kind"].append(np.full(n, code, dtype=np.int8))
        parts["g"].append(got["globalPid"][0] if "globalPid" in got else zero)
        parts["d"].append(got["deviceId"][0] if "deviceId" in got else zero)
        parts["s"].append(got["streamId"][0] if "streamId" in got else zero)
        parts["a"].append(a)
        parts["b"].append(b)
        parts["v"].append(v)
        parts["u"].append(v & ~((a == 0) & (b == 0)))
        parts["gn"].append((got["graphNodeId"][0] > 0) & ~got["graphNodeId"][1] if node else np.zeros(n, dtype=bool))
    names = ("kind", "g", "d", "s", "n", "nv", "nu", "lo", "hi", "busy", "gn")
    if not parts["kind"]:
        return {c: np.zeros(0, np.int64) for c in names}
    col = {k: np.concatenate(v) for k, v in parts.items()}
    add = np.zeros(len(col["a"]), dtype=np.int64)
    used = np.flatnonzero(col["u"])
    if len(used):
        every = len(used) == len(add)  # (the usual case: no copy of the columns)
        d, s, a, b, g, op_kind = (col[c] if every else col[c][used] for c in ("d", "s", "a", "b", "g", "kind"))
        stream, _ = _groups([d, s, (g >> 24) & 16777215])  # numbered in (device, stream, process) order
        order = np.lexsort((op_kind, b, a, stream))  # ties of (start, end): kernels, then memcpys, then memsets
        stream, a, b = stream[order], a[order], b[order]
        start = np.ones(len(order), dtype=bool)
        start[1:] = stream[1:] != stream[:-1]
        running = _running_max(b, stream)
        before = np.empty_like(running)
        before[1:] = running[:-1]
        before[start] = a[start]  # no operation before: COALESCE(prev, start)
        gained = b - np.maximum(a, before)
        add[order if every else used[order]] = np.where(gained > 0, gained, 0)
    codes, keys = _groups([col["kind"], col["g"], col["d"], col["s"]])
    count = len(keys[0])
    u = col["u"]
    return {
        "kind": keys[0].astype(np.int64),
        "g": keys[1],
        "d": keys[2],
        "s": keys[3],
        "n": np.bincount(codes, minlength=count).astype(np.int64),
        "nv": _sum(codes, count, col["v"]),
        "nu": _sum(codes, count, u),
        "lo": _least(codes, count, col["a"], u),
        "hi": _most(codes, count, col["b"], u),
        "busy": _sum(codes, count, add),
        "gn": _sum(codes, count, col["gn"]),
    }


def api_work(trace: Trace, graph_launch_ids: list[int]) -> dict[str, Any] | None:
    """`info._api_work` from pages: per globalTid rows, valid and usable rows, span, graph launches."""
    table = S.TABLES["api"]
    have = trace.schema.columns[table]
    if not ("start" in have and "end" in have) or any(c in have for c in REQUIRED[2:]):
        return None  # (a call table with devices or streams: the query's validity covers them, not this)
    got = _columns(trace, "api")
    if got is None or ("nameId" not in got and graph_launch_ids):
        return None
    (a, a_null), (b, b_null) = got["start"], got["end"]
    if not _in_range(a, b):
        return None
    n = len(a)
    v = ~a_null & ~b_null & (b >= a)
    u = v & ~((a == 0) & (b == 0))
    g = got["globalTid"][0] if "globalTid" in got else np.zeros(n, dtype=np.int64)
    gl = np.isin(got["nameId"][0], np.asarray(graph_launch_ids, dtype=np.int64)) & ~got["nameId"][1] if graph_launch_ids else np.zeros(n, bool)
    codes, keys = _groups([g])
    count = len(keys[0])
    return {
        "g": keys[0],
        "n": np.bincount(codes, minlength=count).astype(np.int64),
        "nv": _sum(codes, count, v),
        "nu": _sum(codes, count, u),
        "lo": _least(codes, count, a, u),
        "hi": _most(codes, count, b, u),  # usable rows have an end: COALESCE(end, start) is the end
        "gl": _sum(codes, count, gl),
        "has_tid": "globalTid" in have,
    }


def nvtx_work(trace: Trace, bounds: tuple[int, int] | None) -> dict[str, Any] | None:
    """`info._nvtx_work` from pages: per (domainId, globalTid) ranges, marks, valid and usable events,
    their span, those inside `bounds` (and their span) and outside, and the inline-text counts."""
    table = S.TABLES["nvtx"]
    have = trace.schema.columns[table]
    if not all(c in have for c in ("start", "end", "eventType")):
        return None
    got = _columns(trace, "nvtx")
    if got is None:
        return None
    (a, a_null), (e, e_null) = got["start"], got["end"]
    end = np.where(e_null, a, e)  # COALESCE(end, start)
    if not _in_range(a, end):
        return None
    n = len(a)
    etype, et_null = got["eventType"]
    v = ~a_null & (e_null | (e >= a))
    u = v & ~((a == 0) & (end == 0))
    kinds = np.where(et_null, -1, etype)
    ranges = np.isin(kinds, np.asarray(S.NVTX_RANGE_TYPES, dtype=np.int64))
    texted = np.isin(kinds, np.asarray((59, 60, 34), dtype=np.int64))
    inside = ~((a < bounds[0]) | (end > bounds[1])) if bounds is not None else np.ones(n, dtype=bool)
    zero = np.zeros(n, dtype=np.int64)
    codes, keys = _groups([got["domainId"][0] if "domainId" in got else zero, got["globalTid"][0] if "globalTid" in got else zero])
    count = len(keys[0])
    inline = got["text"][0] if "text" in got else np.zeros(n, dtype=bool)
    has_text = "text" in have
    return {
        "d": keys[0],
        "g": keys[1],
        "ranges": _sum(codes, count, ranges),
        "marks": _sum(codes, count, kinds == S.NVTX_MARK),
        "nv": _sum(codes, count, v),
        "nu": _sum(codes, count, u),
        "lo": _least(codes, count, a, u),
        "hi": _most(codes, count, end, u),
        "n_in": _sum(codes, count, u & inside),
        "lo_in": _least(codes, count, a, u & inside),
        "hi_in": _most(codes, count, end, u & inside),
        "n_out": _sum(codes, count, u & ~inside),
        "ti": _sum(codes, count, texted & inline) if has_text else np.zeros(count, np.int64),
        "tt": _sum(codes, count, texted) if has_text else np.zeros(count, np.int64),
        "has_tid": "globalTid" in have,
        "bounds": np.array(bounds or (0, 0), np.int64),
    }


def missing_launches(trace: Trace) -> int | None:
    """`info._missing_launches` from pages: valid kernels with no runtime/driver call of the same
    correlationId (and process, where both tables say which)."""
    k = _columns(trace, "kernels")
    r = _columns(trace, "api")
    if k is None or r is None or "correlationId" not in k or "correlationId" not in r:
        return None
    (a, a_null), (b, b_null) = k["start"], k["end"]
    valid = ~a_null & ~b_null & (b >= a)
    for c in REQUIRED[2:]:
        if c in k:
            valid &= ~k[c][1]
    pid_ok = "globalPid" in k and "globalTid" in r
    kc, kc_null = k["correlationId"]
    rc, rc_null = r["correlationId"]
    known_k, known_r = ~kc_null, ~rc_null
    if pid_ok:
        known_k &= ~k["globalPid"][1]
        known_r &= ~r["globalTid"][1]
    kc, rc = kc[known_k], rc[known_r]
    if (len(kc) and int(kc.min()) < 0) or (len(rc) and int(rc.min()) < 0):
        return None
    if pid_ok:  # the process of each side, numbered
        both = np.concatenate([(k["globalPid"][0][known_k] >> 24) & 16777215, (r["globalTid"][0][known_r] >> 24) & 16777215])
        if len(both) == 0 or int(both.min()) == int(both.max()):  # one process (the usual case): nothing to number
            kp, rp, width = np.zeros(len(kc), np.int64), np.zeros(len(rc), np.int64), 1
        else:
            procs, number = pd.factorize(both)
            kp, rp, width = procs[: len(kc)], procs[len(kc) :], max(len(number), 1)
    else:
        kp, rp, width = np.zeros(len(kc), np.int64), np.zeros(len(rc), np.int64), 1
    top = max(int(kc.max()) if len(kc) else 0, int(rc.max()) if len(rc) else 0) + 1
    if top * width <= 1 << 28:  # correlation ids are dense: one flag per (id, process), no hashing of millions
        called = np.zeros(top * width, dtype=bool)
        called[rc * width + rp] = True
        found = called[kc * width + kp]
    elif top < 1 << 38:
        found = np.isin(kc * width + kp, rc * width + rp, kind="sort")
    else:
        return None
    missing = np.ones(len(valid), dtype=bool)
    missing[np.flatnonzero(known_k)[found]] = False
    return int((valid & missing).sum())
