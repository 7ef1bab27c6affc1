"""The trace gateway: the only package that knows nsys table and column names, and its one door.

`open_trace(path)` returns a `Trace` whose methods hand back canonical DataFrames (see `tables`) and the
summaries built on them (`summary`, `gpu_name`, `kernel_stats`, ...). Code outside `nsysparse/trace/`
imports only this package, never its modules (the import contract in pyproject.toml checks it).
"""

from nsysparse.trace.aggregates import LAUNCH_COLUMNS, NAME_COLUMNS
from nsysparse.trace.tables import NO_TIME
from nsysparse.trace.trace import Trace, open_trace

__all__ = ["LAUNCH_COLUMNS", "NAME_COLUMNS", "NO_TIME", "Trace", "open_trace"]
