"""The process's memory allocator, set for a command that builds and drops arrays of millions of rows.

glibc returns freed memory at the top of its heap to the system (trim), serves large blocks with their own
mappings (given back when freed), and gives each thread an arena of its own; each way the next array
arrives as fresh pages, and a fresh page costs a fault when it is first written: several microseconds each
on the machines measured (about 300,000 of them in a cold full analysis of 2.3 M kernels). `tune` keeps
freed memory for reuse (no trim) and serves every block, of every thread, from the one heap (no own
mappings, one arena), so that what one array freed serves the next, whichever thread asks. What is kept
is memory already in use once, and is not given back before the process ends; a freed block serves only
arrays that fit in it, so a run's peak can exceed what it holds at once by the holes no later array fits
(measured: the 400x full analysis peaks lower than with glibc's defaults, 1.09 against 1.17-1.19 GB).
glibc takes a trim threshold of at most 2 GiB, so a heap whose free top exceeds that is still trimmed.

The CLI calls it for its own process; a library caller is left alone. No-op where the C library is not
glibc, or with NSYSPARSE_MALLOC=default.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD_BYTES = 2**31 - 1  # the largest value glibc takes (an int): a free top above 2 GiB is still trimmed
SETTINGS = ((M_MMAP_MAX, 0), (M_ARENA_MAX, 1), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def tune() -> bool:
    """Set the allocator as above; False when a setting could not be set (not glibc, or NSYSPARSE_MALLOC=default;
    the settings before a refused one stay set)."""
    if os.environ.get("NSYSPARSE_MALLOC", "").lower() == "default":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library (no library search)
    except (OSError, AttributeError, TypeError):  # (TypeError: no C library of the process to name, as on Windows)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all([bool(mallopt(param, value)) for param, value in SETTINGS])  # (a list: every one is set)
