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
