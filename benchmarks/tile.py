"""Make a large nsys export by tiling a real one N times in time.

Every event table (kernels, runtime API, NVTX, memcpy, memset, sync, profiler overhead) is copied N
times; copy k has its timestamps shifted by k × span (the source's activity span plus one inter-step
gap) and its correlationId, rangeId and gridId offset so the kernel ↔ API join and NVTX start/end pairs
stay unique. StringIds and the metadata tables are kept as they are. The result is what a capture N
times longer of the same workload would look like.

    python benchmarks/tile.py fixtures/moe_decode_op/trace.sqlite 400 -o benchmarks/data/moe_decode_op_x400.sqlite
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import time
from pathlib import Path

TIME_COLS = ("start", "end", "timestamp")
ID_COLS = ("correlationId", "rangeId", "gridId")
SKIP = {"ANALYSIS_DETAILS", "DIAGNOSTIC_EVENT", "TARGET_INFO_SESSION_START_TIME"}


def _tables(con: sqlite3.Connection) -> dict[str, list[str]]:
    out = {}
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        cols = [r[1] for r in con.execute(f'PRAGMA table_info("{name}")')]
        if "start" in cols and name not in SKIP:
            out[name] = cols
    return out


def tile(src: Path, n: int, dst: Path, gap_ns: int | None = None) -> dict[str, int]:
    if n < 1:
        raise SystemExit("N must be at least 1")
    if dst.exists():
        dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    con = sqlite3.connect(dst)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    tables = _tables(con)
    kern = "CUPTI_ACTIVITY_KIND_KERNEL"
    lo = min(con.execute(f'SELECT min(start) FROM "{t}"').fetchone()[0] for t in (kern, "CUPTI_ACTIVITY_KIND_RUNTIME") if t in tables)
    hi = max(con.execute(f'SELECT max(coalesce("end", start)) FROM "{t}" WHERE start >= ?', (lo,)).fetchone()[0] or lo for t in tables)
    if gap_ns is None:  # the source's typical gap between kernels' busy stretches: reuse its largest kernel gap
        row = con.execute(f'SELECT max(s - e) FROM (SELECT start AS s, lag("end") OVER (ORDER BY start) AS e FROM "{kern}")').fetchone()
        gap_ns = int(row[0] or 1_000_000)
    span = int(hi - lo + gap_ns)
    offsets = {}
    for c in ID_COLS:
        vals = [con.execute(f'SELECT max("{c}") FROM "{t}"').fetchone()[0] for t, cols in tables.items() if c in cols]
        offsets[c] = int(max([v for v in vals if v is not None], default=0)) + 1
    counts = {}
    for t, cols in tables.items():
        exprs = []
        for c in cols:
            if c in TIME_COLS:
                exprs.append(f'"{c}" + :k * {span}')
            elif c in offsets:
                exprs.append(f'"{c}" + :k * {offsets[c]}')
            else:
                exprs.append(f'"{c}"')
        con.execute(f'CREATE TEMP TABLE src AS SELECT * FROM "{t}" WHERE start >= {lo}')
        sql = f'INSERT INTO "{t}" ({", ".join(chr(34) + c + chr(34) for c in cols)}) SELECT {", ".join(exprs)} FROM temp.src'
        for k in range(1, n):
            con.execute(sql, {"k": k})
        con.execute("DROP TABLE temp.src")
        counts[t] = con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
    if "ANALYSIS_DETAILS" in {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}:
        con.execute("UPDATE ANALYSIS_DETAILS SET stopTime = stopTime + ?, duration = duration + ?", ((n - 1) * span, (n - 1) * span))
    con.commit()
    con.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("n", type=int)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--gap-ns", type=int, default=None, help="idle time between tiles (default: the source's largest kernel gap)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    counts = tile(a.source, a.n, a.output, a.gap_ns)
    print(
        f"{a.output}: {counts.get('CUPTI_ACTIVITY_KIND_KERNEL', 0):,} kernels, {a.output.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
