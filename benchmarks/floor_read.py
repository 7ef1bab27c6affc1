"""The read floor: DuckDB reading, through the same sqlite_scanner, exactly the columns a full analysis
reads (kernels, CUDA API calls, NVTX, memcpy, memset) into numpy arrays, one thread per table as nsysparse
does, and nothing else. No analysis can start before this much reading is done, so a cold full analysis
is judged against it as well as against the group-by floor (floor.py)."""

import sys
from concurrent.futures import ThreadPoolExecutor

import duckdb

from nsysparse.trace.engine import sqlite_scanner_path

COLUMNS = {
    "CUPTI_ACTIVITY_KIND_KERNEL": 'start, "end", deviceId, streamId, correlationId, globalPid, shortName, demangledName, graphNodeId',
    "CUPTI_ACTIVITY_KIND_RUNTIME": 'start, "end", globalTid, correlationId, nameId',
    "NVTX_EVENTS": 'start, "end", eventType, globalTid, endGlobalTid, domainId, rangeId, text, textId',
    "CUPTI_ACTIVITY_KIND_MEMCPY": 'start, "end", deviceId, streamId, correlationId, globalPid, bytes, copyKind, graphNodeId',
    "CUPTI_ACTIVITY_KIND_MEMSET": 'start, "end", deviceId, streamId, correlationId, globalPid, bytes, graphNodeId',
}

con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
con.execute(f"LOAD '{sqlite_scanner_path()}'")
con.execute(f"ATTACH '{sys.argv[1]}' AS t (TYPE sqlite, READ_ONLY)")
present = {r[0] for r in con.execute("SELECT name FROM (SHOW ALL TABLES) WHERE database = 't'").fetchall()}


def read(table: str) -> int:
    cur = con.cursor()
    where = " WHERE eventType IN (59, 60, 70, 71, 34)" if table == "NVTX_EVENTS" else ""
    got = cur.execute(f"SELECT {COLUMNS[table]} FROM t.{table}{where}").fetchnumpy()
    cur.close()
    return len(next(iter(got.values())))


with ThreadPoolExecutor(max_workers=3) as ex:
    rows = list(ex.map(read, [t for t in COLUMNS if t in present]))
print(sum(rows))
