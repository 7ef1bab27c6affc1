"""nsysparse: Nsight Systems SQLite traces of LLM training and inference -> answers.

Library first: `open_trace(path)` gives a `Trace`; analyses in `nsysparse.analyses` take a Trace and
return pandas DataFrames with documented columns. The `nsysparse` command is a thin adapter over them.

The package itself imports nothing heavy (pandas, DuckDB): `Trace` and `open_trace` are loaded on first
use, so that the command can turn a Ctrl-C during its start-up into one line and exit code 130.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from nsysparse.errors import NsysparseError
    from nsysparse.trace import Trace, open_trace

__all__ = ["NsysparseError", "Trace", "__version__", "open_trace"]


def __getattr__(name: str) -> Any:
    if name == "NsysparseError":
        from nsysparse.errors import NsysparseError

        return NsysparseError
    if name in ("Trace", "open_trace"):
        import nsysparse.trace as trace

        return getattr(trace, name)
    raise AttributeError(f"module 'nsysparse' has no attribute {name!r}")
