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
    # the NVTX loader's columns, which the domain names come from: `info` reads them from the same decode
    "nvtx": (*S.NVTX_SOURCES.values(), "textId"),
}
TEXTS = {"nvtx": ("text",)}  # read as texts; the aggregates use only whether each is not NULL
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
    `TEXTS` ones as (not-NULL flags, no mask); None when the page reader cannot answer."""
    memo = _memo.get(id(trace.engine))
    if memo is not None and kind in memo:
        return memo[kind]
    table = S.TABLES[kind]
    have = trace.schema.columns[table]
    texts = tuple(Column(c, (c,), text=True) for c in TEXTS.get(kind, ()) if c in have)
    sel = Select(table, tuple(Column(c, (c,)) for c in READ[kind] if c in have) + texts)
    got = trace.engine.from_pages(sel)
    out: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    if got is not None:
        out = {}
        for c, v in got.items():
            if isinstance(v, np.ma.MaskedArray):
                out[c] = (np.asarray(v.filled(0), dtype=np.int64), np.ma.getmaskarray(v))
            elif v.dtype == object:  # a text: whether it is not NULL
                out[c] = (np.asarray(pd.notna(v), dtype=bool), np.zeros(len(v), dtype=bool))
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
    if numbered == 0:  # every key of one value: one group (copies: not views holding the whole columns)
        return combined, [k[:1].copy() for k in keys]
    if numbered > 1:
        codes, distinct = pd.factorize(combined, sort=False)
        count = len(distinct)
    else:  # the codes of the one varying key (or of none: no rows), already numbered 0.. in order of appearance
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
    if count == 1:  # one group (one process, GPU, stream): no grouping
        return np.array([int(values.sum(dtype=np.int64))], dtype=np.int64)
    if values.dtype == bool:  # a count of rows: no sum at all
        return np.bincount(codes[values], minlength=count).astype(np.int64)
    return pd.Series(values.astype(np.int64)).groupby(codes).sum().reindex(range(count), fill_value=0).to_numpy(np.int64)


def _least(codes: np.ndarray, count: int, values: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Per group the smallest of `values` where `use`, else 0 (COALESCE(min(CASE WHEN use ...)), 0))."""
    if count == 1:
        got = np.array([np.min(values, where=use, initial=_BIG)], dtype=np.int64)
        return np.where(got == _BIG, 0, got)
    got = pd.Series(np.where(use, values, _BIG)).groupby(codes).min().reindex(range(count), fill_value=_BIG).to_numpy(np.int64)
    return np.where(got == _BIG, 0, got)


def _most(codes: np.ndarray, count: int, values: np.ndarray, use: np.ndarray) -> np.ndarray:
    if count == 1:
        got = np.array([np.max(values, where=use, initial=_SMALL)], dtype=np.int64)
        return np.where(got == _SMALL, 0, got)
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
    and graph-node kernels.

    Each kind's groups are counted on its own columns (no concatenated copy of them); only the usable
    rows' times and group are put together, for the busy time (a group's kind and stream are looked up)."""
    names = ("kind", "g", "d", "s", "n", "nv", "nu", "lo", "hi", "busy", "gn")
    stats: list[dict[str, np.ndarray]] = []
    busy: dict[str, list[np.ndarray]] = {k: [] for k in ("a", "b", "group")}
    groups = 0
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
        u = v & ~((a == 0) & (b == 0))
        zero = np.zeros(n, dtype=np.int64)
        g, d, s = (got[c][0] if c in got else zero for c in ("globalPid", "deviceId", "streamId"))
        codes, keys = _groups([g, d, s])  # in ascending (g, d, s) order: after the kinds before, in order
        count = len(keys[0])
        stats.append(
            {
                "kind": np.full(count, code, dtype=np.int64),
                "g": keys[0],
                "d": keys[1],
                "s": keys[2],
                "n": np.bincount(codes, minlength=count).astype(np.int64),
                "nv": _sum(codes, count, v),
                "nu": _sum(codes, count, u),
                "lo": _least(codes, count, a, u),
                "hi": _most(codes, count, b, u),
                "gn": _sum(codes, count, (got["graphNodeId"][0] > 0) & ~got["graphNodeId"][1]) if node else np.zeros(count, np.int64),
            }
        )
        used = slice(None) if bool(u.all()) else np.flatnonzero(u)
        busy["a"].append(a[used])
        busy["b"].append(b[used])
        busy["group"].append(codes[used] + groups if groups else codes[used])
        groups += count
    if not stats:
        return {c: np.zeros(0, np.int64) for c in names}
    out = {c: np.concatenate([part[c] for part in stats]) for c in stats[0]}
    a, b, group = (np.concatenate(busy[c]) if len(busy[c]) > 1 else busy[c][0] for c in ("a", "b", "group"))
    out["busy"] = _busy(out, a, b, group)
    return {c: out[c] for c in names}


def _busy(groups: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Per group of `groups` (kind, g, d, s), the busy ns of its usable operations (`a`, `b` and their
    `group`): in (stream, start, end, kind) order, a stream being a (device, stream, process), each
    operation's part beyond the running maximum of the ends before it on its stream (ties of (start,
    end): kernels, then memcpys, then memsets). Kind and stream are the group's: looked up, not stored."""
    count = len(groups["kind"])
    if len(a) == 0:
        return np.zeros(count, dtype=np.int64)
    stream_of, _ = _groups([groups["d"], groups["s"], (groups["g"] >> 24) & 16777215])
    one_stream = bool((stream_of == stream_of[0]).all())
    kind = groups["kind"].astype(np.int8)[group]
    order = np.lexsort((kind, b, a) if one_stream else (kind, b, a, stream_of[group]))
    a, b, group = a[order], b[order], group[order]
    before = np.empty_like(a)
    before[0] = a[0]  # no operation before: COALESCE(prev, start)
    if one_stream:
        np.maximum.accumulate(b[:-1], out=before[1:])
    else:
        stream = stream_of[group]
        before[1:] = _running_max(b, stream)[:-1]
        first = np.flatnonzero(stream[1:] != stream[:-1]) + 1
        before[first] = a[first]
    np.maximum(a, before, out=before)
    gained = np.subtract(b, before, out=before)
    np.maximum(gained, 0, out=gained)
    # a group's busy time is at most its stream's span: float sums are exact below 2**53 ns (104 days)
    if count == 1:
        return np.array([int(gained.sum())], dtype=np.int64)
    if int(b.max()) - int(a.min()) < 1 << 53:
        return np.rint(np.bincount(group, weights=gained, minlength=count)).astype(np.int64)
    return pd.Series(gained).groupby(group).sum().reindex(range(count), fill_value=0).to_numpy(np.int64)


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
    every_k, every_r = bool(known_k.all()), bool(known_r.all())
    kc, rc = (kc if every_k else kc[known_k]), (rc if every_r else rc[known_r])
    if (len(kc) and int(kc.min()) < 0) or (len(rc) and int(rc.min()) < 0):
        return None
    width = 1
    if pid_ok:  # the process of each side, numbered (none when there is one: the usual case)
        kg, rg = k["globalPid"][0], r["globalTid"][0]
        lo = min(int(np.min(kg, where=known_k, initial=_BIG)), int(np.min(rg, where=known_r, initial=_BIG)))
        hi = max(int(np.max(kg, where=known_k, initial=_SMALL)), int(np.max(rg, where=known_r, initial=_SMALL)))
        if len(kc) + len(rc) and lo >> 24 != hi >> 24:  # (the bits above the thread's: one value, one process)
            kp = (kg if every_k else kg[known_k]) >> 24 & 16777215
            rp = (rg if every_r else rg[known_r]) >> 24 & 16777215
            procs, number = pd.factorize(np.concatenate([kp, rp]))
            kp, rp, width = procs[: len(kc)], procs[len(kc) :], max(len(number), 1)
    top = max(int(kc.max()) if len(kc) else 0, int(rc.max()) if len(rc) else 0) + 1
    if width == 1 and top <= 1 << 28:  # correlation ids are dense: one flag per id, no hashing of millions
        called = np.zeros(top, dtype=bool)
        called[rc] = True
        found = called[kc]
    elif top * width <= 1 << 28:  # ... one per (id, process)
        called = np.zeros(top * width, dtype=bool)
        called[rc * width + rp] = True
        found = called[kc * width + kp]
    elif top < 1 << 38:
        found = np.isin(kc * width + kp, rc * width + rp, kind="sort") if width > 1 else np.isin(kc, rc, kind="sort")
    else:
        return None
    if every_k:
        return int((valid & ~found).sum())
    missing = np.ones(len(valid), dtype=bool)
    missing[np.flatnonzero(known_k)[found]] = False
    return int((valid & missing).sum())
