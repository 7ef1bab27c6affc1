"""The floor: DuckDB's bare group-by over the kernel table (through the same sqlite_scanner, by path).
It computes what `nsysparse kernels` reports (count, total, mean, median, min, max, stddev per name)
and nothing else; `nsysparse kernels` is measured against it."""

import sys

import duckdb

from nsysparse.trace.engine import sqlite_scanner_path

con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
con.execute(f"LOAD '{sqlite_scanner_path()}'")
con.execute(f"ATTACH '{sys.argv[1]}' AS t (TYPE sqlite, READ_ONLY)")
rows = con.execute(
    'SELECT demangledName, count(*), sum("end" - start), avg("end" - start), median("end" - start), min("end" - start), '
    'max("end" - start), stddev_samp("end" - start) FROM t.CUPTI_ACTIVITY_KIND_KERNEL GROUP BY demangledName'
).fetchall()
print(len(rows))
