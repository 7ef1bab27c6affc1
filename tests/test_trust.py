"""Trust (issue 14): no data loss, no wrong data, no private text on any output."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from pathlib import Path

import pytest

from nsysparse import outputs
from nsysparse.errors import NsysparseError


def fingerprint(p: Path) -> tuple[str, int]:
    return hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns


def decode_trace(builder, path: Path, *, steps: int = 5, layers: int = 2, fmha_ns: int = 100_000, gpu: str = "NVIDIA H100 80GB HBM3"):
    """NVTX forward_i > layer_j_dense > {fmha, o_proj}, one kernel each, 0.5 ms between steps."""
    b = builder("2024.5")
    b.gpu(0, gpu)
    t = 1_000_000
    for i in range(steps):
        t0 = t
        for j in range(layers):
            b.push(t + 10, t + 70, f"layer_{j}_dense")
            b.push(t + 20, t + 40, "fmha")
            b.kernel(t + 30_000, t + 30_000 + fmha_ns, "void flash::flash_fwd_kernel<T>()", short="flash_fwd_kernel", api_start=t + 25, api_end=t + 35)
            b.push(t + 50, t + 70, "o_proj")
            g0 = t + 30_000 + fmha_ns + 2_000
            b.kernel(g0, g0 + 20_000, "nvjet_sm90_tst_64x8_TNT", api_start=t + 55, api_end=t + 65)
            t = g0 + 20_000
        b.push(t0, t0 + 71 + (t - t0), f"forward_{i}")
        t += 500_000
    return b.write(path)


def one_error_line(res) -> str:
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


# -- 1. -o naming an input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["kernels", "{t}", "-f", "csv", "-o", "{t}"],
        ["export", "{t}", "-f", "parquet", "-o", "{t}"],
        ["export", "{t}", "-f", "json", "-o", "{t}"],
        ["info", "{t}", "-f", "json", "-o", "{t}"],
        ["steps", "{t}", "-o", "{t}"],
        ["compare", "{t}", "{o}", "-o", "{t}"],
        ["compare", "{o}", "{t}", "-f", "markdown", "-o", "{t}"],
    ],
    ids=["kernels-csv", "export-parquet", "export-json", "info-json", "steps-markdown", "compare-o-base", "compare-o-new"],
)
def test_output_naming_the_input_is_refused(run, builder, tmp_path, args):
    t = decode_trace(builder, tmp_path / "trace.sqlite")
    o = decode_trace(builder, tmp_path / "other.sqlite", fmha_ns=110_000)
    before = fingerprint(t)
    res = run(*[a.format(t=t, o=o) for a in args], expect=1)
    line = one_error_line(res)
    assert line.startswith(f"Error: {t}: is an input of this command"), line
    assert fingerprint(t) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite", "trace.sqlite"]  # no partial output left


def test_report_on_a_trace_named_html_is_refused(run, builder, tmp_path):
    t = decode_trace(builder, tmp_path / "trace.html")
    before = fingerprint(t)
    line = one_error_line(run("report", t, "-o", t, expect=1))
    assert f"{t}: is an input" in line
    assert fingerprint(t) == before


def test_output_through_a_hard_link_or_symlink_is_refused(run, builder, tmp_path):
    t = decode_trace(builder, tmp_path / "trace.sqlite")
    os.link(t, tmp_path / "hard.csv")
    (tmp_path / "soft.csv").symlink_to(t)
    before = fingerprint(t)
    for out in ("hard.csv", "soft.csv"):
        line = one_error_line(run("kernels", t, "-f", "csv", "-o", tmp_path / out, expect=1))
        assert f"the same file as {t}" in line, line
    assert fingerprint(t) == before


def test_output_naming_a_baseline_or_prediction_file_is_refused(run, builder, tmp_path):
    t = decode_trace(builder, tmp_path / "trace.sqlite")
    base = decode_trace(builder, tmp_path / "base.html")
    before = fingerprint(base)
    assert f"{base}: is an input" in one_error_line(run("report", t, "--baseline", base, "-o", base, expect=1))
    pred = tmp_path / "pred.csv"
    run("predict", "--model", "llama-mini", "--hardware", "h100_sxm", "--batch", "1", "--kv-len", "64", "-o", pred)
    pbefore = fingerprint(pred)
    line = one_error_line(run("simdiff", t, pred, "-f", "csv", "-o", pred, expect=1))
    assert f"{pred}: is an input" in line
    assert fingerprint(pred) == pbefore and fingerprint(base) == before


def test_output_naming_the_export_of_a_report_is_refused(run, builder, tmp_path):
    rep = tmp_path / "run1.nsys-rep"
    rep.write_bytes(b"\x00" * 4096)
    os.utime(rep, (1_000_000, 1_000_000))
    export = decode_trace(builder, tmp_path / "run1.sqlite")
    before = fingerprint(export), fingerprint(rep)
    for out in (export, rep):
        assert "is an input" in one_error_line(run("kernels", rep, "-f", "csv", "-o", out, expect=1))
    assert (fingerprint(export), fingerprint(rep)) == before


def test_outputs_elsewhere_still_work_and_replace_atomically(run, builder, tmp_path):
    t = decode_trace(builder, tmp_path / "trace.sqlite")
    out = tmp_path / "k.csv"
    out.write_text("old\n")
    run("kernels", t, "-f", "csv", "-o", out)
    assert out.read_text().startswith("name,") and "flash_fwd_kernel" in out.read_text()
    run("export", t, "-f", "parquet", "-o", tmp_path / "k.parquet")
    assert (tmp_path / "k.parquet").read_bytes()[:4] == b"PAR1"
    assert not list(tmp_path.glob(".*partial"))


def test_a_failed_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("previous content\n")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half a fi")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        outputs.write_with(target, half_then_fail)
    assert target.read_text() == "previous content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    outputs.reset_inputs()
    outputs.note_input(target)
    with pytest.raises(NsysparseError, match="is an input of this command"):
        outputs.write_text(target, "x")
    outputs.reset_inputs()
    outputs.write_text(target, "new\n")
    assert target.read_text() == "new\n"


def copy_fixture(name: str, dest: Path) -> Path:
    from conftest import fixture_trace

    return Path(shutil.copyfile(fixture_trace(name), dest))


# -- 2. exports of reports in read-only folders ---------------------------------------------------------

FAKE_NSYS = """#!/bin/sh
# fake `nsys export --type sqlite -o OUT REP`: the test's reports are SQLite files already
while [ $# -gt 0 ]; do case "$1" in -o) out="$2"; shift 2;; *) rep="$1"; shift;; esac; done
echo "$rep" >> "$(dirname "$0")/calls"
{body}
"""


def fake_nsys(folder: Path, body: str = 'cp "$rep" "$out"') -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nsys"
    exe.write_text(FAKE_NSYS.format(body=body))
    exe.chmod(0o755)
    return folder


def kernel_report(builder, path: Path, name: str, n: int) -> Path:
    b = builder("2024.5")
    b.gpu()
    for i in range(n):
        b.kernel(10_000 + i * 2_000, 11_000 + i * 2_000, f"void {name}<float>(float*)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return b.write(path)


@pytest.fixture
def read_only(monkeypatch):
    """Make folders read-only (mode 0555, and for root, who may write anyway, through os.access)."""
    folders: list[Path] = []
    real_access = os.access

    def access(path, mode, *a, **kw):
        if mode & os.W_OK and Path(path).resolve() in folders:
            return False
        return real_access(path, mode, *a, **kw)

    monkeypatch.setattr(os, "access", access)

    def make(folder: Path) -> Path:
        folder.chmod(0o555)
        folders.append(folder.resolve())
        return folder

    yield make
    for f in folders:
        f.chmod(0o755)


def kernel_names(run, trace: Path) -> list[str]:
    import csv
    import io

    return sorted(r["name"] for r in csv.DictReader(io.StringIO(run("kernels", trace, "-f", "csv").stdout)))


def test_reports_with_one_name_in_two_read_only_folders_are_not_confused(run, builder, tmp_path, monkeypatch, read_only):
    bin_dir = fake_nsys(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    a = kernel_report(builder, tmp_path / "a" / "trace.nsys-rep", "kernel_from_a", 3)
    b = kernel_report(builder, tmp_path / "b" / "trace.nsys-rep", "kernel_from_b", 5)
    read_only(a.parent)
    read_only(b.parent)
    assert kernel_names(run, a) == ["void kernel_from_a<float>(float*)"]
    assert kernel_names(run, b) == ["void kernel_from_b<float>(float*)"]
    assert kernel_names(run, a) == ["void kernel_from_a<float>(float*)"]  # reused, not exported again
    assert (bin_dir / "calls").read_text().splitlines() == [str(a), str(b)]
    exports = sorted((tmp_path / "cache" / "nsysparse" / "exports").glob("*.sqlite"))
    assert len(exports) == 2 and all(p.name.startswith("trace-") for p in exports)
    assert not (a.parent / "trace.sqlite").exists() and not (b.parent / "trace.sqlite").exists()
    # the same path, rewritten with other content: a new export, not the cached one
    a.parent.chmod(0o755)
    kernel_report(builder, a, "kernel_from_a_again", 2)
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))
    assert kernel_names(run, a) == ["void kernel_from_a_again<float>(float*)"]


@pytest.mark.parametrize(
    "body",
    ['head -c 3000 "$rep" > "$out"; echo "export crashed" >&2; exit 1', 'head -c 3000 "$rep" > "$out"; exit 0'],
    ids=["non-zero-exit", "exit-0-partial-file"],
)
@pytest.mark.parametrize("folder_writable", [True, False], ids=["beside", "cache"])
def test_a_failed_export_leaves_nothing_reused(run, builder, tmp_path, monkeypatch, read_only, body, folder_writable):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rep = kernel_report(builder, tmp_path / "rep" / "trace.nsys-rep", "kernel_x", 400)
    if not folder_writable:
        read_only(rep.parent)
    broken = fake_nsys(tmp_path / "broken", body)
    monkeypatch.setenv("PATH", f"{broken}{os.pathsep}{os.environ['PATH']}")
    res = run("kernels", rep, "-f", "csv", expect=1)
    line = one_error_line(res)
    assert line.startswith(f"Error: {rep}: nsys export"), line
    leftovers = [p for p in (*rep.parent.iterdir(), *(tmp_path / "cache").rglob("*")) if p.is_file() and p != rep]
    assert leftovers == []
    good = fake_nsys(tmp_path / "good")
    monkeypatch.setenv("PATH", f"{good}{os.pathsep}{os.environ['PATH']}")
    assert kernel_names(run, rep) == ["void kernel_x<float>(float*)"]


# -- 3. partial NULLs and reversed intervals ------------------------------------------------------------

KERNEL_TABLE = "CUPTI_ACTIVITY_KIND_KERNEL"
MEMCPY_TABLE = "CUPTI_ACTIVITY_KIND_MEMCPY"
VALID = '"start" IS NOT NULL AND "end" IS NOT NULL AND "deviceId" IS NOT NULL AND "streamId" IS NOT NULL AND "end" >= "start"'
# (column set to NULL, or "reverse" for end < start, how many rows)
DAMAGE = (("start", 3), ("end", 2), ("deviceId", 2), ("streamId", 1), ("reverse", 2))


def add_broken_rows(path: Path, table: str) -> int:
    """Append copies of existing rows, each with one hole, so the valid rows stay those of the clean trace."""
    import sqlite3

    con = sqlite3.connect(path)
    cols = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
    rows = con.execute(f'SELECT * FROM "{table}" ORDER BY "start"').fetchall()
    added, i = 0, 0
    for what, n in DAMAGE:
        for _ in range(n):
            row = dict(zip(cols, rows[i % len(rows)]))
            i += 3
            if what == "reverse":
                row["end"] = row["start"] - 777
            else:
                row[what] = None
            con.execute(f'INSERT INTO "{table}" VALUES ({", ".join("?" for _ in cols)})', [row[c] for c in cols])
            added += 1
    con.commit()
    con.close()
    return added


def sql_kernel_stats(path: Path) -> dict[str, tuple]:
    """count, total, mean, median, min, max, stddev (µs) per demangled name over the valid rows, in plain SQL + statistics."""
    import sqlite3
    import statistics

    con = sqlite3.connect(path)
    rows = con.execute(f'SELECT s.value, k."end" - k."start" FROM "{KERNEL_TABLE}" k JOIN StringIds s ON s.id = k.demangledName WHERE {VALID}').fetchall()
    con.close()
    per: dict[str, list[int]] = {}
    for name, d in rows:
        per.setdefault(name, []).append(d)
    return {
        n: (
            len(v),
            sum(v) / 1e3,
            sum(v) / len(v) / 1e3,
            statistics.median(v) / 1e3,
            min(v) / 1e3,
            max(v) / 1e3,
            (statistics.stdev(v) if len(v) > 1 else 0) / 1e3,
        )
        for n, v in per.items()
    }


def broken_trace(builder, tmp_path: Path) -> tuple[Path, Path, int]:
    clean = decode_trace(builder, tmp_path / "clean.sqlite", steps=6)
    broken = tmp_path / "broken.sqlite"
    shutil.copyfile(clean, broken)
    n = add_broken_rows(broken, KERNEL_TABLE)
    return clean, broken, n


@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
def test_kernel_rows_with_holes_are_left_out_with_a_note(run, builder, tmp_path, monkeypatch, engine):
    import csv
    import io
    import sqlite3

    monkeypatch.setenv("NSYSPARSE_ENGINE", engine)
    clean, broken, added = broken_trace(builder, tmp_path)
    con = sqlite3.connect(broken)
    bad = con.execute(f'SELECT count(*) FROM "{KERNEL_TABLE}" WHERE NOT ({VALID})').fetchone()[0]
    devices = {r[0] for r in con.execute(f'SELECT DISTINCT "deviceId" FROM "{KERNEL_TABLE}" WHERE {VALID}')}
    con.close()
    assert bad == added == 10
    res = run("kernels", broken, "-f", "csv")
    got = {r["name"]: r for r in csv.DictReader(io.StringIO(res.stdout))}
    want = sql_kernel_stats(broken)
    assert set(got) == set(want)
    for name, (count, total, mean, median, lo, hi, sd) in want.items():
        r = got[name]
        assert int(r["count"]) == count
        for col, v in zip(("total_us", "mean_us", "median_us", "min_us", "max_us", "stddev_us"), (total, mean, median, lo, hi, sd)):
            assert float(r[col]) == pytest.approx(v, rel=1e-9, abs=1e-9), (name, col)
    assert f"note: {bad} kernel rows with a missing start/end/device/stream or end < start were left out" in res.stderr
    assert res.stdout == run("kernels", clean, "-f", "csv").stdout
    # no phantom GPU or stream, no negative busy time, the time span of the valid rows
    import json

    info = json.loads(run("info", broken, "-f", "json").stdout)
    assert {g["device_id"] for g in info["gpus"]} == devices == {0}
    assert all(s["busy_ms"] >= 0 and s["stream_id"] >= 0 for s in info["streams"])
    assert info["gpus"][0]["kernels"] == info["tables"]["kernels"] - bad
    for cmd in (["steps"], ["ops"], ["layers"], ["gaps"]):
        res = run(*cmd, broken, "-f", "json")
        assert f"note: {bad} kernel rows with a missing start/end/device/stream or end < start were left out" in res.stderr, cmd
        out = json.loads(res.stdout)
        ref = json.loads(run(*cmd, clean, "-f", "json").stdout)
        if isinstance(out, dict):
            out.pop("notes", None), ref.pop("notes", None)
        assert out == ref, cmd
        assert "-9223372036854" not in json.dumps(out)


def test_compare_with_holes_is_not_a_regression(run, builder, tmp_path):
    clean, broken, _ = broken_trace(builder, tmp_path)
    res = run("compare", clean, broken, "-f", "json", expect=0)
    import json

    data = json.loads(res.stdout)
    assert data["verdict"] == "neutral" and data["regressions"] == 0
    assert all(abs(r["delta_us"]) < 1e-9 for r in data["rows"] if r["delta_us"] is not None)


def test_memcpy_rows_with_holes_are_left_out(run, builder, tmp_path):
    import csv
    import io
    import sqlite3

    b = builder("2024.5")
    b.gpu()
    for i in range(8):
        b.memcpy(100_000 + i * 10_000, 104_000 + i * 10_000, nbytes=4096 * (i + 1))
        b.kernel(106_000 + i * 10_000, 108_000 + i * 10_000, "void k<int>(int*)")
    p = b.write(tmp_path / "m.sqlite")
    added = add_broken_rows(p, MEMCPY_TABLE)
    con = sqlite3.connect(p)
    want = sorted(con.execute(f'SELECT "start", "end", "bytes" FROM "{MEMCPY_TABLE}" WHERE {VALID}').fetchall())
    con.close()
    res = run("export", p, "--what", "memcpy", "-f", "csv")
    got = sorted((int(r["start_ns"]), int(r["end_ns"]), int(r["bytes"])) for r in csv.DictReader(io.StringIO(res.stdout)))
    assert got == want and len(want) == 8
    assert f"note: {added} memcpy rows with a missing start/end/device/stream or end < start were left out" in res.stderr


# -- 4. a model that cannot be this trace ---------------------------------------------------------------


def nvtx_step_period_ms(path: Path, prefix: str = "forward_") -> float:
    """Median start-to-start period of the NVTX step ranges, in plain SQL."""
    import sqlite3
    import statistics

    con = sqlite3.connect(path)
    starts = sorted(r[0] for r in con.execute("SELECT start FROM NVTX_EVENTS WHERE text LIKE ?", (prefix + "%",)))
    con.close()
    return statistics.median(b - a for a, b in itertools.pairwise(starts)) / 1e6


def test_a_model_far_larger_than_the_trace_is_refused(run, tmp_path):
    t = copy_fixture("moe_decode_op", tmp_path / "trace.sqlite")
    res = run("mfu", t, "--model", "deepseek-v3", "--phase", "decode", "--batch", "32", "--kv-len", "2048", "-f", "json", expect=1)
    line = one_error_line(res)
    assert line.startswith(f"Error: {t}: MBU ") and "is above 100 %" in line and "cannot be this trace" in line, line
    assert "62 layers per step" in line and "the trace shows 9" in line
    assert res.stdout == ""  # nothing above 100 % was printed
    res = run("report", t, "-o", tmp_path / "r.html", "--model", "deepseek-v3", "--phase", "decode", "--batch", "32", "--kv-len", "2048", expect=1)
    assert "cannot be this trace" in one_error_line(res) and not (tmp_path / "r.html").exists()


def test_a_model_with_other_layers_is_warned_about(run, tmp_path):
    import json

    t = copy_fixture("moe_decode_op", tmp_path / "trace.sqlite")
    res = run("mfu", t, "--model", "llama-mini", "--phase", "decode", "--batch", "32", "--kv-len", "2048", "-f", "json")
    data = json.loads(res.stdout)
    assert data["mbu_pct"] < 100 and data["mfu_bf16_pct"] < 100
    assert any("llama-mini has 8 layers per step (dense 8) but the trace shows 9" in n for n in data["notes"]), data["notes"]
    # the right model: no such warning
    ok = json.loads(run("mfu", t, "--model", "ds-mini", "--phase", "decode", "--batch", "32", "--kv-len", "2048", "-f", "json").stdout)
    assert not any("layers per step" in n for n in ok["notes"]), ok["notes"]


def test_a_wrong_manifest_is_caught_by_its_measured_step_time_layers_and_gpu(run, tmp_path):
    import json
    import sqlite3
    import statistics

    from conftest import FIXTURES

    t = copy_fixture("moe_decode_op", tmp_path / "trace.sqlite")
    wrong = FIXTURES / "dense_decode_op" / "manifest.json"
    man = json.loads(wrong.read_text())
    data = json.loads(run("mfu", t, "--model", wrong, "-f", "json").stdout)
    ref_ms = statistics.median(man["host_step_seconds"]) * 1e3 + man["run"]["host_gap_ms"]
    period = nvtx_step_period_ms(t)
    assert data["step_time_ms"] == pytest.approx(period, rel=0.02)  # GPU-activity period vs the NVTX ranges'
    assert data["reference_step_time_ms"] == pytest.approx(ref_ms)
    assert data["step_time_diff_pct"] == pytest.approx((period - ref_ms) / ref_ms * 100, rel=0.03)
    assert data["step_time_diff_pct"] > 100
    assert data["reference_diff_pct"] is None  # no longer the manifest against itself (it was 0.0)
    notes = " | ".join(data["notes"])
    assert "differs by +" in notes and "the manifest looks like another run's" in notes
    assert "has 8 layers per step (dense 8) but the trace shows 9" in notes
    # the right manifest fits
    right = json.loads(run("mfu", t, "--model", FIXTURES / "moe_decode_op" / "manifest.json", "-f", "json").stdout)
    assert abs(right["step_time_diff_pct"]) < 2 and right["notes"] == []
    # the same trace relabelled as another GPU: the manifest was captured elsewhere
    con = sqlite3.connect(t)
    con.execute("UPDATE TARGET_INFO_GPU SET name = 'NVIDIA H200'")
    con.commit()
    con.close()
    h200 = json.loads(run("mfu", t, "--model", FIXTURES / "moe_decode_op" / "manifest.json", "-f", "json").stdout)
    assert h200["gpu"] == "H200"
    assert any("captured on NVIDIA H100 80GB HBM3 but the trace ran on NVIDIA H200" in n for n in h200["notes"]), h200["notes"]
    # peaks of another GPU than the trace's
    h100 = json.loads(run("mfu", t, "--model", FIXTURES / "moe_decode_op" / "manifest.json", "--hardware", "h100_sxm", "-f", "json").stdout)
    assert any("the peaks are those of H100 SXM but the trace ran on NVIDIA H200" in n for n in h100["notes"]), h100["notes"]
    # a workload other than the profiled one
    b64 = json.loads(run("mfu", t, "--model", FIXTURES / "moe_decode_op" / "manifest.json", "--batch", "64", "-f", "json").stdout)
    assert any("batch 64 differs from the profiled run's 32" in n for n in b64["notes"]), b64["notes"]


# -- 5. private values, invalid UTF-8 and escape sequences ------------------------------------------------

CANARY = "CANARY_SECRET_9f3a"
USER = "canaryuser"


def canary_trace(builder, path: Path) -> Path:
    """A decode-like trace whose every private field holds the canary, with one invalid UTF-8 byte in
    each, a process path under /home/<user>, and terminal escape sequences in kernel and NVTX names."""
    import sqlite3

    b = builder("2024.5")
    b.gpu()
    t = 1_000_000
    for i in range(5):
        b.push(t, t + 400_000, f"forward_{i}")
        b.push(t + 10, t + 300_000, "layer_0_dense")
        b.push(t + 20, t + 100, "fmha\x1b[31mRED\x1b[0m")
        b.kernel(t + 30_000, t + 130_000, "void evil\x1b]0;pwned\x07<T>()", short="evil\x1b[2J", api_start=t + 25, api_end=t + 35)
        b.kernel(t + 140_000, t + 200_000, "void plain\x9b31m<T>()", api_start=t + 150, api_end=t + 160)
        t += 1_000_000
    b.process(100, f"/home/{USER}")
    b.process(101, f"/home/{USER}/venv/bin/python3")
    b.thread(100, 100, f"{CANARY}-thread")
    b.sid(f"/home/{USER}/{CANARY}")
    p = b.write(path)
    bad = b"\xff"
    con = sqlite3.connect(p)
    blob = "CAST(? AS TEXT)"
    con.execute(f"INSERT INTO TARGET_INFO_SYSTEM_ENV VALUES (1, '', 'Env', 3, {blob})", (f'AWS_SECRET_ACCESS_KEY="{CANARY}"'.encode() + bad,))
    con.execute(f"INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_USER', {blob})", (f"{USER}-{CANARY}".encode() + bad,))
    con.execute(f"INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_HOST', {blob})", (f"host-{CANARY}".encode() + bad,))
    con.execute(f"INSERT INTO META_DATA_CAPTURE VALUES ('PROCESS_0:ENVIRONMENT_VARIABLE', {blob})", (f'TOKEN="{CANARY}"'.encode() + bad,))
    con.execute("INSERT INTO META_DATA_CAPTURE VALUES ('PROCESS_0:COMMAND_LINE', ?)", (f"/home/{USER}/run.sh --key {CANARY}",))
    con.execute(f"INSERT INTO StringIds VALUES (9999, {blob})", (f"{CANARY}".encode() + bad,))
    con.execute(
        "INSERT INTO ThreadNames VALUES (9999, 0, 77)",
    )
    con.execute(f"UPDATE PROCESSES SET name = {blob} WHERE pid = 101", (f"/home/{USER}/bin/py".encode() + bad,))
    con.commit()
    con.close()
    return p


TRACE_COMMANDS = (
    ["info"],
    ["info", "-f", "json"],
    ["info", "-f", "csv"],
    ["kernels"],
    ["kernels", "-f", "csv"],
    ["kernels", "--name", "short"],
    ["export", "--what", "kernels", "-f", "json"],
    ["export", "--what", "nvtx"],
    ["export", "--what", "launches", "-o", "{tmp}/launches.csv"],
    ["ops"],
    ["layers"],
    ["steps"],
    ["gaps"],
    ["rules", "check"],
    ["mfu", "--model", "llama-mini", "--phase", "decode", "--batch", "1", "--kv-len", "64"],
    ["report", "-o", "{tmp}/r.html"],
    ["compare", "{trace}"],
)


@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
def test_private_values_never_reach_any_output(run, builder, tmp_path, monkeypatch, engine):
    monkeypatch.setenv("NSYSPARSE_ENGINE", engine)
    p = canary_trace(builder, tmp_path / "canary.sqlite")
    for cmd in TRACE_COMMANDS:
        args = [cmd[0], *cmd[1:2]] if cmd[0] == "rules" else [cmd[0]]
        rest = cmd[len(args) :]
        argv = [*args, str(p), *(a.format(tmp=tmp_path, trace=p) for a in rest)]
        res = run(*argv)  # exit 0: a stray byte in a private value no longer breaks every command
        for text in (res.stdout, res.stderr):
            assert CANARY not in text and USER not in text, (argv, text[:300])
            assert "\ufffd" not in text or cmd[0] == "export", argv
        terminal = res.stdout if "json" not in cmd and "csv" not in cmd and "export" not in cmd else ""
        for ch in ("\x1b", "\x07", "\x9b"):
            assert ch not in terminal and ch not in res.stderr, (argv, repr(terminal[:300]))
    assert "evil]0;pwned<T>()" in run("kernels", p).stdout  # the name is shown, without its escape sequences
    for f in tmp_path.iterdir():
        if f.is_file() and f != p:
            data = f.read_bytes()
            assert CANARY.encode() not in data and USER.encode() not in data, f


def test_no_error_message_quotes_trace_text(run, builder, tmp_path, monkeypatch):
    import sqlite3

    from nsysparse.errors import redact
    from nsysparse.trace.engine import Engine

    assert CANARY not in redact(f"Could not decode to UTF-8 column 'value' with text '{CANARY}")
    assert CANARY not in redact(f'Conversion Error: Could not convert string "{CANARY}" to INT64')
    p = canary_trace(builder, tmp_path / "canary.sqlite")
    eng = Engine(p)
    err = eng._error(sqlite3.OperationalError(f"Could not decode to UTF-8 column 'value' with text '{CANARY}\ufffd'"))
    eng.close()
    assert str(err).startswith(f"{p}: query failed") and CANARY not in str(err)
    # an unexpected error quoting trace text (a bug) is reported without the text
    import nsysparse.cli.inspect as inspect_cli

    def boom(*a, **kw):
        raise ValueError(f"invalid literal for int() with base 10: '{CANARY} /home/{USER}'")

    monkeypatch.setattr(inspect_cli, "kernel_summary", boom)
    res = run("kernels", p, expect=1)
    assert "internal error (ValueError" in res.output and CANARY not in res.output and USER not in res.output, res.output


def test_process_names_show_no_folders():
    from nsysparse.trace.info import process_name

    assert process_name("/home/alice") == ""
    assert process_name("/home/alice/") == ""
    assert process_name("/Users/alice") == ""
    assert process_name("C:\\Users\\alice") == ""
    assert process_name("/home/alice/venv/bin/python3") == "python3"
    assert process_name("python3") == "python3"
    assert process_name("/opt/x/bin/\x1b[2Jtrainer") == "[2Jtrainer"
