"""The process's memory allocator, set for a command that builds and drops arrays of millions of rows.

glibc returns freed memory at the top of its heap to the system (trim) and serves large blocks with their
own mappings, given back when freed; either way the next array arrives as fresh pages, and a fresh page
costs a fault when it is first written: several microseconds each on the machines measured (about
300,000 of them in a cold full analysis of 2.3 M kernels, a quarter of its time). `tune` keeps freed
memory for reuse (no trim) and serves every block, of every thread, from the one heap (no own mappings,
one arena), so that freed memory serves any later array. What is kept is memory already in use once: the
peak of a run is what it was, but freed memory is not given back before the process ends.

`reserve` readies memory a command is about to fill (the loaders, before decoding millions of rows): it
grows the heap's free top and faults its pages in with one call (`MADV_POPULATE_WRITE`, Linux 5.14), which
on those machines costs a fraction of faulting them one by one as arrays are first written.

The CLI calls `tune` for its own process; a library caller is left alone (`reserve` does nothing unless
`tune` succeeded). No-op where the C library is not glibc, or with NSYSPARSE_MALLOC=default.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD_BYTES = 2**31 - 1  # the largest value glibc takes (an int): never trim in practice
MADV_POPULATE_WRITE = 23
RESERVE_CAP_BYTES = 1536 * 2**20  # with what is free already, below the trim threshold
RESERVE_SHARE_OF_FREE = 0.5  # never more than this share of the machine's free memory

_TUNED: dict[str, Any] = {}  # "libc": the C library, once `tune` has set it


def tune() -> bool:
    """Set the allocator as above; False when it could not be set (not glibc, or NSYSPARSE_MALLOC=default)."""
    if os.environ.get("NSYSPARSE_MALLOC", "").lower() == "default":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own C library (no library search)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = all(mallopt(param, value) for param, value in ((M_MMAP_MAX, 0), (M_ARENA_MAX, 1), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)))
    if ok:
        libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
        libc.free.argtypes, libc.free.restype = [ctypes.c_void_p], None
        libc.madvise.argtypes, libc.madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
        _TUNED["libc"] = libc
    return ok


def reserve(nbytes: int) -> int:
    """Make about `nbytes` of the heap ready to be written without faults (capped at RESERVE_CAP_BYTES and at
    half the free memory): the bytes readied, 0 where nothing was done (not tuned, too little, or a kernel
    without MADV_POPULATE_WRITE). Pages already present cost nothing, so asking twice readies no more."""
    libc = _TUNED.get("libc")
    if libc is None:
        return 0
    page = os.sysconf("SC_PAGE_SIZE")
    free = os.sysconf("SC_AVPHYS_PAGES") * page
    n = int(min(nbytes, RESERVE_CAP_BYTES, free * RESERVE_SHARE_OF_FREE))
    if n < 16 * page:
        return 0
    at = libc.malloc(n)  # a block this large comes from the top of the heap, which it grows
    if not at:
        return 0
    try:
        lo = -(-at // page) * page
        hi = (at + n) // page * page
        readied = hi - lo if libc.madvise(lo, hi - lo, MADV_POPULATE_WRITE) == 0 else 0
    finally:
        libc.free(at)  # back to the free top (never trimmed): the next arrays are carved from it
    return readied
