"""The trace gateway: the only package that knows nsys table and column names.

`open_trace(path)` returns a `Trace` whose methods hand back canonical DataFrames (see `tables`).
"""

from nsysparse.trace.trace import Trace, open_trace

__all__ = ["Trace", "open_trace"]
