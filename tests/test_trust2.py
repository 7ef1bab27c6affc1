"""Trust (issue 14, items 6-16): clean errors, no hangs, clean interrupts, numbers that do not mislead."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from test_trust import decode_trace, fingerprint, one_error_line

KERNEL_TABLE = "CUPTI_ACTIVITY_KIND_KERNEL"
ANALYSES = (
    ["kernels"],
    ["steps"],
    ["ops"],
    ["layers"],
    ["gaps"],
    ["mfu", "--model", "llama-mini", "--batch", "1", "--seq", "8", "--hardware", "h100_sxm"],
)


def mutated(builder, tmp_path: Path, *sql: str, name: str = "t.sqlite") -> Path:
    p = decode_trace(builder, tmp_path / name)
    con = sqlite3.connect(p)
    for s in sql:
        con.execute(s)
    con.commit()
    con.close()
    return p


def error_line(run, args, path: Path, expect: int = 1) -> str:
    res = run(*args[:1], *([args[1]] if args[0] == "rules" else []), path, *args[1 + (args[0] == "rules") :], expect=expect)
    line = one_error_line(res)
    assert str(path) in line, line
    assert "internal error" not in line and "please report" not in line, line
    return line


# -- 6. bad contents: one line naming the file, the table and the column -----------------------------------

BAD_CONTENTS = {
    # mutation: (SQL, what the error says)
    "zero-kernel-rows": ([f'DELETE FROM "{KERNEL_TABLE}"'], f"{KERNEL_TABLE} has no usable rows"),
    "all-timestamps-0": ([f'UPDATE "{KERNEL_TABLE}" SET "start" = 0, "end" = 0'], "20 with unknown timestamps (start = end = 0)"),
    "null-every-start": ([f'UPDATE "{KERNEL_TABLE}" SET "start" = NULL'], "20 without a start, end, device or stream"),
    "text-in-start": ([f'UPDATE "{KERNEL_TABLE}" SET "start" = \'soon\' WHERE rowid = 3'], f"{KERNEL_TABLE}.start holds 1 text value(s)"),
    "blob-in-device": ([f'UPDATE "{KERNEL_TABLE}" SET "deviceId" = X\'00ff\' WHERE rowid = 2'], f"{KERNEL_TABLE}.deviceId holds 1 BLOB value(s)"),
    "text-in-name-id": ([f'UPDATE "{KERNEL_TABLE}" SET "demangledName" = \'gemm\''], f"{KERNEL_TABLE}.demangledName holds 20 text value(s)"),
    "end-1e19": ([f'UPDATE "{KERNEL_TABLE}" SET "end" = 1e19 WHERE rowid = 4'], f"{KERNEL_TABLE}.end holds 1 real-number value(s)"),
    "end-beyond-2^62": ([f'UPDATE "{KERNEL_TABLE}" SET "end" = {2**62 + 1} WHERE rowid = 4'], f"{KERNEL_TABLE}.end holds 1 timestamp(s) beyond ±2^62 ns"),
    "dropped-start": ([f'ALTER TABLE "{KERNEL_TABLE}" DROP COLUMN "start"'], f"{KERNEL_TABLE} has no start column"),
    "text-in-nvtx-start": (["UPDATE NVTX_EVENTS SET start = 'x' WHERE rowid = 1"], "NVTX_EVENTS.start holds 1 text value(s)"),
    "text-string-id": (["UPDATE StringIds SET id = 'one' WHERE id = 1"], "StringIds.id holds 1 text value(s)"),
}


@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
@pytest.mark.parametrize("case", list(BAD_CONTENTS))
def test_bad_contents_give_one_line_naming_file_table_and_column(run, builder, tmp_path, monkeypatch, engine, case):
    monkeypatch.setenv("NSYSPARSE_ENGINE", engine)
    sql, needle = BAD_CONTENTS[case]
    p = mutated(builder, tmp_path, *sql)
    before = fingerprint(p)
    commands = ANALYSES if not case.startswith(("text-in-nvtx", "text-string")) else ANALYSES[1:]
    for cmd in commands:
        line = error_line(run, cmd, p)
        assert needle in line, (cmd, line)
        assert ". " in line and line.split(". ", 1)[1][:1].isupper(), line  # the hint is a sentence of its own
    assert fingerprint(p) == before


def test_null_nvtx_start_is_left_out_with_a_note(run, builder, tmp_path):
    clean = decode_trace(builder, tmp_path / "clean.sqlite")
    p = mutated(builder, tmp_path, "UPDATE NVTX_EVENTS SET start = NULL WHERE text = 'fmha' AND rowid < 10", name="t.sqlite")
    con = sqlite3.connect(p)
    nulls = con.execute("SELECT count(*) FROM NVTX_EVENTS WHERE start IS NULL").fetchone()[0]
    con.close()
    assert nulls == 3  # rowids 3, 6, 9: the fmha ranges of step 0 and 1
    res = run("steps", p, "-f", "json")
    assert f"note: {nulls} NVTX rows with a missing start or end < start were left out" in res.stderr
    assert json.loads(res.stdout)["steps"] == json.loads(run("steps", clean, "-f", "json").stdout)["steps"]
    # every start NULL: no NVTX at all, so steps are inferred, still no traceback
    p2 = mutated(builder, tmp_path, "UPDATE NVTX_EVENTS SET start = NULL", name="t2.sqlite")
    res = run("steps", p2, "-f", "json")
    assert "NVTX rows with a missing start" in res.stderr


# -- 8. errors that name the file; never size arrays by ids -------------------------------------------------


def test_mfu_without_steps_names_the_file(run, builder, tmp_path):
    b = builder("2024.5")
    b.gpu()
    for i in range(3):
        b.kernel(10_000 + i * 2_000, 11_000 + i * 2_000, "void k<int>()")
    p = b.write(tmp_path / "nosteps.sqlite")
    line = error_line(run, ["mfu", "--model", "llama-mini", "--batch", "1", "--seq", "8", "--hardware", "h100_sxm"], p)
    assert line.startswith(f"Error: {p}: no steps found"), line
    layers = run("layers", p).stdout
    assert "nan" not in layers and "step time: no steps found" in layers


@pytest.mark.parametrize("big_id", [2**29, 2**40, 2**62])
def test_a_huge_string_id_costs_no_memory(run, builder, tmp_path, big_id):
    import resource

    p = mutated(builder, tmp_path, f"UPDATE StringIds SET id = {big_id} WHERE value = 'fmha'")  # unused by kernels
    clean = decode_trace(builder, tmp_path / "clean.sqlite")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert run("kernels", p, "-f", "csv").stdout == run("kernels", clean, "-f", "csv").stdout
    # the kernel names themselves moved to the huge id: still resolved
    con = sqlite3.connect(p)
    con.execute("UPDATE StringIds SET id = ? WHERE value = 'nvjet_sm90_tst_64x8_TNT'", (big_id + 1,))
    con.execute(
        "UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET demangledName = ? WHERE shortName = (SELECT shortName FROM CUPTI_ACTIVITY_KIND_KERNEL ORDER BY start LIMIT 1 OFFSET 1)",
        (big_id + 1,),
    )
    con.commit()
    con.close()
    assert "nvjet_sm90_tst_64x8_TNT" in run("kernels", p, "-f", "csv").stdout
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, grown_mib  # 2^29 ids used to cost 4.3 GB


# -- 7. file-system conditions ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def cli_process(*args, stdout=None, env_extra: dict | None = None, timeout: float = 120):
    """The real command in a fresh interpreter (what a shell runs), from this checkout."""
    import os
    import subprocess
    import sys

    extra = dict(env_extra or {})
    first = extra.pop("PYTHONPATH_FIRST", None)  # a folder of stand-in modules, ahead of this checkout
    env = {**os.environ, **extra, "PYTHONPATH": os.pathsep.join(p for p in (first, str(ROOT)) if p)}
    return subprocess.run(
        [sys.executable, "-m", "nsysparse", *map(str, args)], stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=timeout
    )


def test_outputs_into_missing_read_only_or_special_paths(run, builder, tmp_path, monkeypatch):
    import errno
    import stat
    import tempfile

    t = decode_trace(builder, tmp_path / "trace.sqlite")
    line = one_error_line(run("kernels", t, "-f", "csv", "-o", tmp_path / "no" / "such" / "k.csv", expect=1))
    assert f"the folder {tmp_path / 'no' / 'such'} does not exist" in line, line
    ro = tmp_path / "ro"
    ro.mkdir()
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*a, dir=None, **kw):  # root writes into a mode-0555 folder anyway: refuse as the kernel would
        if dir is not None and Path(dir).resolve() == ro.resolve():
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_mkstemp(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    line = one_error_line(run("kernels", t, "-f", "csv", "-o", ro / "k.csv", expect=1))
    assert f"{ro / 'k.csv'}: cannot be written: the folder {ro} accepts no new file (Permission denied)" in line, line
    line = one_error_line(run("kernels", t, "-f", "csv", "-o", "/dev/full", expect=1))
    assert line.startswith("Error: /dev/full: cannot be written (No space left on device)"), line
    assert stat.S_ISCHR(os_stat("/dev/full").st_mode)  # still the device, never replaced by a file
    line = one_error_line(run("export", t, "-f", "parquet", "-o", "/proc/version", expect=1))
    assert line.startswith("Error: /proc/version: cannot be written"), line
    assert run("kernels", t, "-f", "csv", "-o", "/dev/null").output == ""
    assert stat.S_ISCHR(os_stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro", "trace.sqlite"]


def os_stat(p):
    import os

    return os.stat(p)


@pytest.mark.parametrize("cmd", [["info"], ["kernels", "-f", "json"], ["steps"]])
def test_a_closed_or_full_stdout_is_one_line_and_exit_1(builder, tmp_path, cmd):
    t = decode_trace(builder, tmp_path / "trace.sqlite")
    with open("/dev/full", "w") as full:
        res = cli_process(cmd[0], t, *cmd[1:], stdout=full)
    err = res.stderr.decode()
    assert res.returncode == 1, (res.returncode, err)  # was 120, with 3 lines of "Exception ignored"
    assert err == "Error: standard output cannot be written (No space left on device).\n", err


def test_non_utf8_and_too_long_file_names(run, builder, tmp_path):
    import os

    t = decode_trace(builder, tmp_path / "trace.sqlite")
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/run\xff\xfe.sqlite"))
    t.rename(odd)
    assert "flash_fwd_kernel" in run("kernels", odd, "-f", "csv").stdout
    res = run("kernels", odd, "-f", "csv", "-o", Path(os.fsdecode(bytes(tmp_path) + b"/out\xff.csv")))
    assert res.output == "" and (tmp_path / os.fsdecode(b"out\xff.csv")).exists()
    line = one_error_line(run("info", Path(os.fsdecode(bytes(tmp_path) + b"/gone\xff.sqlite")), expect=1))
    assert "gone\ufffd.sqlite: no such file" in line, line
    long = tmp_path / ("x" * 300 + ".sqlite")
    assert "(File name too long)" in one_error_line(run("info", long, expect=1))
    assert "(File name too long)" in one_error_line(run("kernels", odd, "-f", "csv", "-o", tmp_path / ("y" * 300 + ".csv"), expect=1))


def test_a_report_when_home_is_not_writable(run, builder, tmp_path, monkeypatch):
    import os

    from test_trust import fake_nsys, kernel_report

    bin_dir = fake_nsys(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", "/proc/nsysparse-home")  # no folder can be made under /proc, not even by root
    rep = kernel_report(builder, tmp_path / "rep" / "trace.nsys-rep", "kernel_x", 3)
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, m, *a, **kw: False if m & os.W_OK and Path(p).resolve() == rep.parent.resolve() else real_access(p, m, *a, **kw)
    )
    line = one_error_line(run("kernels", rep, expect=1))
    assert line.startswith(f"Error: {rep}: its folder is read-only and the export cache /proc/nsysparse-home/.cache/nsysparse/exports cannot be created"), line
    assert "nsys export --type sqlite -o" in line
    assert sorted(p.name for p in rep.parent.iterdir()) == ["trace.nsys-rep"]
    # no HOME at all (and no passwd entry): Path.home() raises; the cache goes to the temporary folder
    import tempfile

    monkeypatch.delenv("HOME")
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: (_ for _ in ()).throw(RuntimeError("Could not determine home directory."))))
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert "kernel_x" in run("kernels", rep, "-f", "csv").stdout
    assert len(list((tmp_path / "tmp").rglob("trace-*.sqlite"))) == 1


def test_an_unreadable_input_is_our_error_not_clicks_usage(run, builder, tmp_path, monkeypatch):
    import errno
    import os

    import nsysparse.trace.source as source

    t = decode_trace(builder, tmp_path / "trace.sqlite")
    real_access, real_open = os.access, open
    monkeypatch.setattr(os, "access", lambda p, m, *a, **kw: False if m & os.R_OK and str(p) == str(t) else real_access(p, m, *a, **kw))

    def deny(p, *a, **kw):
        if str(p) == str(t):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(p, *a, **kw)

    monkeypatch.setattr(source, "open", deny, raising=False)
    res = run("kernels", t, expect=1)
    line = one_error_line(res)
    assert "Usage:" not in res.output and line == f"Error: {t}: cannot read (Permission denied). Check the file permissions.", line


# -- 9. no hangs -------------------------------------------------------------------------------------------


def test_a_fifo_or_device_as_the_trace_is_refused_at_once(tmp_path):
    import os
    import time

    fifo = tmp_path / "trace.sqlite"
    os.mkfifo(fifo)
    for path, what in ((fifo, "a FIFO (named pipe)"), (Path("/dev/zero"), "a character device")):
        t0 = time.monotonic()
        res = cli_process("info", path, timeout=60)  # used to block forever on open()
        assert time.monotonic() - t0 < 30
        err = res.stderr.decode()
        assert (
            res.returncode == 1
            and err == f"Error: {path}: is {what}, not a regular file. Pass the .sqlite export (or .nsys-rep report) itself, not a pipe or device.\n"
        ), err


def test_a_hung_nsys_export_times_out(run, builder, tmp_path, monkeypatch):
    import os
    import time

    from test_trust import fake_nsys, kernel_report

    rep = kernel_report(builder, tmp_path / "rep" / "trace.nsys-rep", "kernel_x", 3)
    hung = fake_nsys(tmp_path / "hung", 'head -c 3000 "$rep" > "$out"; sleep 60 & wait')
    monkeypatch.setenv("PATH", f"{hung}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("NSYSPARSE_EXPORT_TIMEOUT", "1")
    t0 = time.monotonic()
    line = one_error_line(run("kernels", rep, expect=1))
    assert time.monotonic() - t0 < 20
    assert line.startswith(f"Error: {rep}: nsys export did not finish within 1 s and was stopped"), line
    assert "NSYSPARSE_EXPORT_TIMEOUT" in line
    assert sorted(p.name for p in rep.parent.iterdir()) == ["trace.nsys-rep"]  # no partial export left


# -- 10. interrupts: exit 130, one line, no partial output -----------------------------------------------------


def test_ctrl_c_while_duckdb_opens_is_an_interrupt_not_a_fallback(run, builder, tmp_path, monkeypatch):
    import duckdb

    monkeypatch.setenv("NSYSPARSE_ENGINE", "duckdb")
    t = decode_trace(builder, tmp_path / "trace.sqlite")

    def interrupted(*a, **kw):
        raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")

    monkeypatch.setattr(duckdb, "connect", interrupted)
    for cmd in (["kernels"], ["steps"], ["info"]):
        res = run(cmd[0], t, expect=130)  # used to fall back to sqlite3, run on and exit 0
        assert res.output == "Interrupted.\n", res.output


def test_ctrl_c_during_start_up_is_one_line(builder, tmp_path):
    t = decode_trace(builder, tmp_path / "trace.sqlite")
    fake = tmp_path / "fakes" / "pandas"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise KeyboardInterrupt\n")  # Ctrl-C while the heavy imports run
    res = cli_process("info", t, env_extra={"PYTHONPATH_FIRST": str(fake.parent)})
    assert res.returncode == 130 and res.stderr.decode() == "Interrupted.\n", res.stderr.decode()[-2000:]
    assert res.stdout == b""


def test_ctrl_c_during_a_parquet_export_leaves_nothing(run, builder, tmp_path, monkeypatch):
    import duckdb

    monkeypatch.setenv("NSYSPARSE_ENGINE", "sqlite")
    t = decode_trace(builder, tmp_path / "trace.sqlite")
    real_connect = duckdb.connect

    class Copying:
        def __init__(self):
            self.con = real_connect(":memory:")

        def register(self, *a):
            return self.con.register(*a)

        def execute(self, sql):
            target = sql.split("'")[1]
            Path(target).write_bytes(b"PAR1 half a file")
            raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")

        def close(self):
            self.con.close()

    monkeypatch.setattr(duckdb, "connect", lambda *a, **kw: Copying())
    out = tmp_path / "k.parquet"
    res = run("export", t, "-f", "parquet", "-o", out, expect=130)
    assert res.output == "Interrupted.\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.sqlite"]


# -- 11. nothing created beside the input ----------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
def test_a_wal_mode_trace_gets_no_files_beside_it(run, builder, tmp_path, monkeypatch, engine):
    monkeypatch.setenv("NSYSPARSE_ENGINE", engine)
    t = decode_trace(builder, tmp_path / "trace.sqlite")
    con = sqlite3.connect(t)
    assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    con.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.sqlite"]
    before = fingerprint(t)
    clean = json.loads(run("steps", decode_trace(builder, tmp_path.parent / f"{tmp_path.name}-clean.sqlite"), "-f", "json").stdout)["steps"]
    for cmd in (["info"], ["kernels"], ["steps", "-f", "json"], ["gaps"]):
        res = run(cmd[0], t, *cmd[1:])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.sqlite"], cmd  # no trace.sqlite-wal / -shm
        if cmd[0] == "steps":
            assert json.loads(res.stdout)["steps"] == clean
    assert fingerprint(t) == before


# -- 12. compare: the verdict follows the step time --------------------------------------------------------


def nvtx_period_us(path: Path) -> float:
    """Median start-to-start period of the forward_i NVTX ranges, in plain SQL."""
    import itertools
    import statistics

    con = sqlite3.connect(path)
    starts = sorted(r[0] for r in con.execute("SELECT start FROM NVTX_EVENTS WHERE text LIKE 'forward_%'"))
    con.close()
    return statistics.median(b - a for a, b in itertools.pairwise(starts)) / 1e3


def test_a_faster_run_with_a_longer_gap_passes_ci(run, builder, tmp_path):
    from test_compare import decode_trace as cmp_trace

    base = cmp_trace(builder, tmp_path / "base.sqlite", fmha_us=(400.0,), gap_us=200.0)
    new = cmp_trace(builder, tmp_path / "new.sqlite", fmha_us=(200.0,), gap_us=350.0)
    want_pct = (nvtx_period_us(new) - nvtx_period_us(base)) / nvtx_period_us(base) * 100
    assert want_pct < -20  # the run got faster by a fifth
    res = run("compare", base, new, "-f", "json", expect=0)  # was REGRESSION, exit 3
    data = json.loads(res.stdout)
    assert data["verdict"] == "improvement"
    assert data["step_time"]["key"] == "period" and data["step_time"]["delta_pct"] == pytest.approx(want_pct, abs=0.2)
    causes = {(c["section"], c["key"]): c for c in data["causes"]}
    assert causes[("gaps", "inter-step gap")]["verdict"] == "regression"
    assert causes[("gaps", "inter-step gap")]["delta_us"] == pytest.approx(150.0, abs=1.0)  # 200 -> 350 µs, by construction
    assert causes[("op", "dense/fmha")]["verdict"] == "improvement"
    assert any("got slower without costing step time" in n for n in data["notes"])
    # the other way round the step time regresses: exit 3, the causes named
    res = run("compare", new, base, expect=3)
    assert "Regression: step period +" in res.stderr and "causes: op dense/fmha +" in res.stderr, res.stderr


def test_compare_force_with_nothing_judged_exits_1(run, builder, tmp_path):
    paths = []
    for name, gpu in (("a", "NVIDIA H100 80GB HBM3"), ("b", "NVIDIA H200")):
        b = builder("2024.5")
        b.gpu(0, gpu)
        b.kernel(10_000, 11_000, "void k<int>()")  # one kernel: no step
        paths.append(b.write(tmp_path / f"{name}.sqlite"))
    res = run("compare", *paths, "--force", "-f", "json", expect=1)  # was NEUTRAL, exit 0
    data = json.loads(res.stdout)
    assert data["verdict"] == "not comparable" and data["step_time"] is None
    assert {r["verdict"] for r in data["rows"]} <= {"unjudged", "info"}
    line = res.stderr.strip().splitlines()[-1]
    assert not any("judged although" in n for n in data["notes"]), data["notes"]
    assert line.startswith(f"Error: {paths[0]} vs {paths[1]}: not comparable: different GPUs") and "nothing was judged" in line, line


# -- 13. the gap breakdown adds up, and a graph launch is graph time ----------------------------------------

COMPONENTS = ("sync_us", "api_us", "graph_us", "host_us", "launch_us", "queue_us")


def graph_trace(builder, path: Path, *, steps: int = 5, host_us: int = 500, launch_us: int = 1000, queue_us: int = 50) -> Path:
    """Each step one cudaGraphLaunch replaying 4 graph-node kernels (90 µs, 10 µs apart): between steps
    host_us of host work, the launch call, then queue_us until the first node runs (negative: the node
    starts before the call returns)."""
    b = builder("2024.5", graph_mode="graph")
    b.gpu()
    t = 1_000_000
    for i in range(steps):
        l0 = t + host_us * 1000
        l1 = l0 + launch_us * 1000
        k0 = l1 + queue_us * 1000
        corr = b.api(l0, l1, "cudaGraphLaunch_v10000")
        b.push(t, k0 + 400_000, f"forward_{i}")
        for j in range(4):
            b.kernel(k0 + j * 100_000, k0 + j * 100_000 + 90_000, f"void graph_kernel_{j}<T>()", corr=corr, graph_node=j + 1)
        t = k0 + 400_000
    return b.write(path)


@pytest.mark.parametrize("queue_us", [50, -200], ids=["queued", "node-starts-inside-the-launch-call"])
def test_a_graph_gap_shows_its_launch_as_graph_time_and_adds_up(run, builder, tmp_path, queue_us):
    p = graph_trace(builder, tmp_path / "g.sqlite", queue_us=queue_us)
    gaps = json.loads(run("gaps", p, "-f", "json").stdout)["gaps"]
    assert len(gaps) == 4
    # by construction: 10 µs after the last node, 500 µs host, 1000 µs cudaGraphLaunch, then the queue
    gap = 10 + 500 + 1000 + queue_us
    launch_in_gap = 1000 if queue_us >= 0 else 1000 + queue_us
    for g in gaps:
        assert g["gap_us"] == pytest.approx(gap)
        assert g["graph_us"] == pytest.approx(launch_in_gap)  # was 0.0
        assert g["host_us"] == pytest.approx(510) and g["queue_us"] == pytest.approx(max(queue_us, 0))  # was -200
        assert g["cause"] == "graph"  # was host work
        assert sum(g[c] for c in COMPONENTS) == pytest.approx(g["gap_us"], abs=1e-9)


def test_gap_components_add_up_with_overlapping_runtime_and_driver_calls(run, builder, tmp_path):
    b = builder("2024.5")
    b.gpu()
    t = 1_000_000
    for i in range(4):
        b.push(t, t + 300_000, f"forward_{i}")
        b.api(t + 10_000, t + 60_000, "cudaStreamSynchronize_v3020")
        b.api(t + 20_000, t + 40_000, "cuStreamSynchronize", event_class=1)  # inside the runtime call
        b.api(t + 70_000, t + 90_000, "cudaMemsetAsync_v3020")
        b.api(t + 80_000, t + 100_000, "cudaGraphLaunch_v10000")  # overlaps the call before
        b.kernel(t + 200_000, t + 250_000, "void k<T>()", api_start=t + 150_000, api_end=t + 180_000)
        t += 400_000
    p = b.write(tmp_path / "o.sqlite")
    gaps = json.loads(run("gaps", p, "-f", "json").stdout)["gaps"]
    assert len(gaps) == 3
    for g in gaps:  # last kernel ends at 250 µs, the next step's kernel starts at 400 + 200 µs: 350 µs
        assert g["gap_us"] == pytest.approx(350)
        # the thread from 250 µs (the GPU going idle) to the launch at 400 + 150 µs: the calls of the next step
        assert g["sync_us"] == pytest.approx(50) and g["api_us"] == pytest.approx(10) and g["graph_us"] == pytest.approx(20)
        assert g["launch_us"] == pytest.approx(30) and g["queue_us"] == pytest.approx(20)
        assert sum(g[c] for c in COMPONENTS) == pytest.approx(g["gap_us"], abs=1e-9)


@pytest.mark.parametrize("name", __import__("conftest").FIXTURE_NAMES)
def test_gap_components_add_up_on_every_fixture(run, name):
    from conftest import fixture_trace

    data = json.loads(run("gaps", fixture_trace(name), "-f", "json").stdout)
    assert data["gaps"], name
    for g in data["gaps"]:
        assert all(g[c] >= 0 for c in COMPONENTS), g
        assert sum(g[c] for c in COMPONENTS) == pytest.approx(g["gap_us"], abs=1e-6), g


# -- 14. info's span, an absent --device, no nan -------------------------------------------------------------


def test_info_reports_the_activity_span_and_names_an_outlier(run, builder, tmp_path):
    b = builder("2024.5")
    b.gpu()
    b.domain(7, "CCCL")  # a domain-create event, stamped below at -273 ms as in the captures
    for i in range(4):
        b.push(1_000_000 + i * 1_000_000, 1_400_000 + i * 1_000_000, f"forward_{i}")
        b.kernel(1_100_000 + i * 1_000_000, 1_300_000 + i * 1_000_000, "void k<int>()")
    p = b.write(tmp_path / "t.sqlite")
    con = sqlite3.connect(p)
    con.execute("UPDATE NVTX_EVENTS SET start = -273000000 WHERE eventType = 75")
    lo, hi = con.execute(
        'SELECT min(s), max(e) FROM (SELECT start s, "end" e FROM CUPTI_ACTIVITY_KIND_KERNEL UNION ALL SELECT start, "end" FROM CUPTI_ACTIVITY_KIND_RUNTIME '
        'UNION ALL SELECT start, "end" FROM NVTX_EVENTS WHERE eventType != 75)'
    ).fetchone()
    con.commit()
    con.close()
    data = json.loads(run("info", p, "-f", "json").stdout)
    assert (data["start_ns"], data["end_ns"]) == (lo, hi)  # was -273 ms .. 4.4 ms
    assert data["duration_ms"] == pytest.approx((hi - lo) / 1e6)
    assert data["nvtx_outliers"] == 1
    note = "1 NVTX event(s) lie far outside the CUDA activity and are left out of the time span (a domain-create event of NVTX domain 'CCCL' at -273.000 ms"
    assert any(n.startswith(note) for n in data["notes"]), data["notes"]
    assert note in run("info", p).stdout


def test_an_absent_device_is_a_usage_error_listing_the_gpus(run, builder, tmp_path):
    b = builder("2024.5")
    for d in (3, 1):  # the GPU table in file order 3, 1
        b.gpu(d, f"NVIDIA H100 #{d}")
        for i in range(4):
            b.push(1_000_000 + i * 1_000_000, 1_400_000 + i * 1_000_000, f"forward_{i}", tid=100 + d)
            b.kernel(1_100_000 + i * 1_000_000, 1_300_000 + i * 1_000_000, "void k<int>()", device=d, tid=100 + d)
    p = b.write(tmp_path / "two.sqlite")
    for cmd in (["kernels"], ["kernels", "-f", "json"], ["steps"], ["gaps"], ["ops"]):
        res = run(cmd[0], p, "--device", "5", *cmd[1:], expect=2)  # kernels gave an empty table, exit 0
        line = one_error_line(res)
        assert line == f"Error: {p}: --device 5 ran no kernels in this trace. GPUs present: 1, 3.", line
    assert [g["device_id"] for g in json.loads(run("info", p, "-f", "json").stdout)["gpus"]] == [1, 3]  # 16: sorted (was 3, 1)


# -- 16. smaller -----------------------------------------------------------------------------------------------


def test_an_error_hint_starts_a_sentence():
    from nsysparse.errors import TraceError

    assert str(TraceError("x.sqlite: has no kernels", "the capture recorded none")) == "x.sqlite: has no kernels. The capture recorded none."


@pytest.mark.parametrize(
    ("short", "kernel_class"),
    [
        (
            "sm80_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize256x64x32_stage3_warpsize4x1x1_g1_tensor16x8x16_execute_kernel__5x_cudnn",
            "conv",
        ),
        ("nvfuser_none_f0_c0_r0_g0", "fused"),
    ],
)
def test_tensorrt_convolutions_and_nvfuser_kernels_match_a_rule(run, builder, tmp_path, short, kernel_class):
    b = builder("2024.5")
    b.gpu()
    for i in range(3):
        b.kernel(10_000 + i * 2_000, 11_000 + i * 2_000, short, short=short)
    p = b.write(tmp_path / "k.sqlite")
    data = json.loads(run("rules", "check", p, "-f", "json").stdout)
    assert data["unclassified kernels"] == []  # was the 3 kernels, 100 % of kernel time
    assert [(r["kernel_class"], r["count"]) for r in data["kernel time per class"]] == [(kernel_class, 3)]
