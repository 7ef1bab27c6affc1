"""The allocator's settings and `reserve`, each in a fresh interpreter (they change the process's C library
state, which the test process must keep as it is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")

# Writes `mib` MiB of a block from malloc, page by page, and counts the page faults that took (ru_minflt).
PROBE = """
import ctypes, json, os, resource, sys
from nsysparse import allocator
mib, tune, ask = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
tuned = allocator.tune() if tune else False
readied = allocator.reserve(ask << 20)
libc = ctypes.CDLL(None)
libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
n = mib << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
at = libc.malloc(n)
ctypes.memset(at, 1, n)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"tuned": tuned, "readied": readied, "faults": faults, "pages": n // os.sysconf("SC_PAGE_SIZE")}))
"""


def _probe(mib: int, tune: bool, ask_mib: int, **env: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROBE), str(mib), "1" if tune else "0", str(ask_mib)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    got: dict[str, int] = json.loads(out.stdout)
    return got


def test_reserved_memory_is_written_without_faults() -> None:
    plain = _probe(48, tune=True, ask_mib=0)
    if not plain["tuned"]:
        pytest.skip("not glibc")
    # the control: a block of 48 MiB from the heap faults on (nearly) every page when first written
    assert plain["readied"] == 0
    assert plain["faults"] >= 0.9 * plain["pages"]
    ready = _probe(48, tune=True, ask_mib=64)
    if ready["readied"] == 0:
        pytest.skip("the kernel lacks MADV_POPULATE_WRITE (Linux 5.14)")
    assert (64 << 20) - 2 * 4096 <= ready["readied"] <= 64 << 20
    assert ready["faults"] <= 0.05 * ready["pages"]  # carved from the readied top of the heap


def test_reserve_does_nothing_unless_the_process_tuned_its_allocator() -> None:
    untuned = _probe(8, tune=False, ask_mib=64)
    assert untuned["readied"] == 0 and not untuned["tuned"]
    opted_out = _probe(8, tune=True, ask_mib=64, NSYSPARSE_MALLOC="default")
    assert opted_out == {**opted_out, "tuned": False, "readied": 0}


def test_reserve_is_capped() -> None:
    from nsysparse import allocator

    got = _probe(1, tune=True, ask_mib=64 << 10)  # 64 GiB asked
    if got["tuned"] and got["readied"]:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        assert got["readied"] <= min(allocator.RESERVE_CAP_BYTES, free)
