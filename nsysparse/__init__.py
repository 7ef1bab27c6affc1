"""nsysparse: Nsight Systems SQLite traces of LLM training and inference -> answers.

Library first: `open_trace(path)` gives a `Trace`; analyses in `nsysparse.analyses` take a Trace and
return pandas DataFrames with documented columns. The `nsysparse` command is a thin adapter over them.
"""

__version__ = "0.1.0"

from nsysparse.errors import NsysparseError
from nsysparse.trace import Trace, open_trace

__all__ = ["NsysparseError", "Trace", "__version__", "open_trace"]
