"""Bad input: one clear line naming the file, exit code 1, no traceback, and the input left untouched."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

COMMANDS = (
    ["info"],
    ["kernels"],
    ["export", "--what", "kernels"],
    ["ops"],
    ["layers"],
    ["steps"],
    ["gaps"],
    ["mfu", "--model", "llama-mini", "--batch", "1", "--seq", "8", "--hardware", "h100_sxm"],
)


def fingerprint(p: Path) -> tuple[str, int]:
    return hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns


def good_trace(builder, tmp_path: Path, n: int = 400) -> Path:
    b = builder("2024.5")
    b.gpu()
    for i in range(n):
        b.kernel(10_000 + i * 2_000, 11_000 + i * 2_000, f"void kernel_number_{i % 37}<float, {i % 5}>(float*, int)")
    return b.write(tmp_path / "good.sqlite")


def check_error(run, args, path: Path, needle: str) -> str:
    res = run(*args, str(path), expect=1)
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("Error: "), lines[0]
    assert str(path) in lines[0] or path.name in lines[0], lines[0]
    assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_nonexistent_path(run, tmp_path, cmd):
    check_error(run, cmd, tmp_path / "nope.sqlite", "no such file")


@pytest.mark.parametrize("cmd", COMMANDS)
def test_directory(run, tmp_path, cmd):
    check_error(run, cmd, tmp_path, "is a directory")


@pytest.mark.parametrize("cmd", COMMANDS)
def test_empty_file(run, tmp_path, cmd):
    p = tmp_path / "empty.sqlite"
    p.write_bytes(b"")
    before = fingerprint(p)
    check_error(run, cmd, p, "empty file")
    assert fingerprint(p) == before


@pytest.mark.parametrize("cmd", COMMANDS)
def test_text_file(run, tmp_path, cmd):
    p = tmp_path / "notes.sqlite"
    p.write_text("Time (%),Total Time (ns),Instances\n49.9,267059180,34\n")
    before = fingerprint(p)
    check_error(run, cmd, p, "text file")
    assert fingerprint(p) == before


@pytest.mark.parametrize("cmd", COMMANDS)
def test_report_renamed_to_sqlite(run, tmp_path, cmd):
    p = tmp_path / "report1.sqlite"
    p.write_bytes(bytes(range(256)) * 64)  # binary, not SQLite: what a renamed .nsys-rep looks like to us
    before = fingerprint(p)
    line = check_error(run, cmd, p, "not an SQLite database")
    assert "nsys export --type sqlite" in line
    assert fingerprint(p) == before


@pytest.mark.parametrize("cmd", COMMANDS)
def test_truncated_mid_page(run, builder, tmp_path, cmd):
    src = good_trace(builder, tmp_path)
    p = tmp_path / "cut.sqlite"
    data = src.read_bytes()
    p.write_bytes(data[: len(data) // 2 + 123])
    before = fingerprint(p)
    check_error(run, cmd, p, "truncated")
    assert fingerprint(p) == before


@pytest.mark.parametrize("cmd", COMMANDS)
def test_truncated_on_page_boundary(run, builder, tmp_path, cmd):
    src = good_trace(builder, tmp_path)
    p = tmp_path / "cut.sqlite"
    data = src.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    p.write_bytes(data[: (len(data) // page // 2) * page])
    before = fingerprint(p)
    check_error(run, cmd, p, "truncated")
    assert fingerprint(p) == before


@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
def test_damaged_pages(run, builder, tmp_path, monkeypatch, engine):
    monkeypatch.setenv("NSYSPARSE_ENGINE", engine)
    src = good_trace(builder, tmp_path, n=2000)
    p = tmp_path / "damaged.sqlite"
    data = bytearray(src.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for i in range(2 * page, len(data) - page, page):
        data[i : i + 64] = b"\xff" * 64  # smash every page header after the schema
    p.write_bytes(bytes(data))
    before = fingerprint(p)
    res = run("kernels", str(p), expect=1)
    assert res.output.startswith("Error: ") and "damaged" in res.output and len(res.output.strip().splitlines()) == 1
    assert fingerprint(p) == before


@pytest.mark.parametrize("cmd", COMMANDS)
def test_sqlite_that_is_not_an_export(run, tmp_path, cmd):
    p = tmp_path / "app.sqlite"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE users(id INTEGER, name TEXT)")
    con.commit()
    con.close()
    before = fingerprint(p)
    check_error(run, cmd, p, "not an Nsight Systems export")
    assert fingerprint(p) == before


def test_export_without_kernel_table(run, builder, tmp_path):
    b = builder("2024.5")
    b.gpu()
    b.push(0, 1_000, "cpu_only")
    p = b.write(tmp_path / "nokernels.sqlite")
    before = fingerprint(p)
    line = check_error(run, ["kernels"], p, "CUPTI_ACTIVITY_KIND_KERNEL")
    assert "--trace=cuda" in line
    res = run("info", str(p))  # info still describes what is there
    assert "missing: kernels" in res.output
    assert fingerprint(p) == before


def test_report_without_nsys_says_how_to_export(run, tmp_path, monkeypatch):
    rep = tmp_path / "run1.nsys-rep"
    rep.write_bytes(b"\x00" * 4096)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    line = check_error(run, ["info"], rep, "no nsys is on PATH")
    assert "nsys export --type sqlite -o" in line
    assert not (tmp_path / "run1.sqlite").exists()


def test_report_never_overwrites_an_older_export(run, builder, tmp_path, monkeypatch):
    export = good_trace(builder, tmp_path, n=3).rename(tmp_path / "run1.sqlite")
    rep = tmp_path / "run1.nsys-rep"
    rep.write_bytes(b"\x00" * 4096)
    os.utime(export, (1_000_000, 1_000_000))  # export older than the report
    before = fingerprint(export)
    line = check_error(run, ["info"], rep, "will not overwrite")
    assert "--force-overwrite true" in line
    assert fingerprint(export) == before


def test_report_reuses_a_newer_export(run, builder, tmp_path):
    rep = tmp_path / "run1.nsys-rep"
    rep.write_bytes(b"\x00" * 4096)
    os.utime(rep, (1_000_000, 1_000_000))
    good_trace(builder, tmp_path, n=3).rename(tmp_path / "run1.sqlite")
    res = run("kernels", str(rep), "-f", "csv")
    assert res.output.count("kernel_number_") == 3


def test_good_trace_is_not_modified_by_any_command(run, builder, tmp_path):
    p = good_trace(builder, tmp_path)
    before = fingerprint(p)
    for cmd in COMMANDS:
        run(*cmd, str(p), *([] if cmd[0] != "export" else ["-o", str(tmp_path / "out.csv")]))
    assert fingerprint(p) == before
    assert not list(tmp_path.glob("good.sqlite-*")), "no journal/WAL files may appear beside the input"
