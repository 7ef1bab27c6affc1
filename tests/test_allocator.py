"""The allocator's settings (`nsysparse.allocator.tune`), each probe in a fresh interpreter: they change the
C library's state of the process, which the test process keeps as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only"),
    # with huge pages for every mapping, a block faults once per 2 MiB, and the probe counts no pages
    pytest.mark.skipif(THP.exists() and "[always]" in THP.read_text(), reason="transparent huge pages always on"),
]

# Writes a block of `mib` MiB from malloc page by page and frees it, then does the same again (on another
# thread with "thread"), counting the page faults of each write (ru_minflt, which counts every thread's).
PROBE = """
import ctypes, json, os, resource, sys, threading
from nsysparse import allocator
mib, tune, where = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
tuned = allocator.tune() if tune else False
libc = ctypes.CDLL(None)
libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
libc.free.argtypes, libc.free.restype = [ctypes.c_void_p], None
n = mib << 20
faults = []
def write_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    at = libc.malloc(n)
    ctypes.memset(at, 1, n)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    libc.free(at)
write_block()
if where == "thread":
    t = threading.Thread(target=write_block); t.start(); t.join()
else:
    write_block()
print(json.dumps({"tuned": tuned, "first": faults[0], "again": faults[1], "pages": n // os.sysconf("SC_PAGE_SIZE")}))
"""


def _probe(mib: int, tune: bool, where: str = "same", **env: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROBE), str(mib), "1" if tune else "0", where],
        capture_output=True,
        text=True,
        check=True,
        env={**{k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}, **env},  # glibc's defaults
    )
    got: dict[str, int] = json.loads(out.stdout)
    return got


@pytest.mark.parametrize("where", ["same", "thread"])
def test_freed_memory_serves_the_next_block_without_faults(where: str) -> None:
    tuned = _probe(48, tune=True, where=where)
    if not tuned["tuned"]:
        pytest.skip("not glibc")
    # the control: glibc's defaults give a block this large its own mapping, returned when freed, so each
    # write of it faults on (nearly) every page; a thread's block comes from that thread's own arena
    plain = _probe(48, tune=False, where=where)
    assert plain["first"] >= 0.9 * plain["pages"] and plain["again"] >= 0.9 * plain["pages"]
    assert tuned["first"] >= 0.9 * tuned["pages"]  # fresh memory, the first time
    assert tuned["again"] <= 0.05 * tuned["pages"]  # then the freed block, from the one heap


def test_opting_out_leaves_the_defaults() -> None:
    got = _probe(48, tune=True, NSYSPARSE_MALLOC="default")
    assert not got["tuned"]
    assert got["again"] >= 0.9 * got["pages"]
