"""The process's memory allocator, set for a command that builds and drops arrays of millions of rows.

glibc returns freed memory at the top of its heap to the system (trim) and serves blocks above an
adaptive size with their own mappings; either way the next array of that size arrives as fresh pages,
and on the machines measured a fresh page costs a fault of several microseconds (about 300,000 of them
in a cold full analysis of 2.3 M kernels: a quarter of its time). `tune` keeps freed memory for reuse
(no trim) and maps only blocks of 32 MiB and more (which numpy backs with huge pages). What is kept is
memory already in use once: the peak of a run is what it was, but freed memory is not given back before
the process ends (each thread's arena keeps its own). The CLI calls it for its own process; a library
caller is left alone. No-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 2**31 - 1  # the largest value glibc takes (an int): never trim in practice


def tune() -> bool:
    """Set the thresholds above; False when they could not be set (not glibc, or NSYSPARSE_MALLOC=default)."""
    if os.environ.get("NSYSPARSE_MALLOC", "").lower() == "default":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library (no library search)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mapped = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    trimmed = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return mapped and trimmed
