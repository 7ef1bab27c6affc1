"""Fuzz (issue 14): mutate a small trace and run every trace command on each mutation.

The base trace is a decode-like capture with kernels, CUDA API calls, NVTX ranges, memcpys, memsets and
synchronizations, whose every private field holds a canary secret (with an invalid UTF-8 byte), and whose
names carry terminal escapes. Mutations, generated from the file's own schema: every table the gateway
reads dropped and emptied; every one of its columns dropped, set to NULL, retyped (text, BLOB, real) or
given extreme values (int64 limits, -1, 1e19), and every text column given invalid UTF-8, a number or a
10 000-character value. Each mutation runs one command, chosen in rotation (deterministic), so every
command meets every kind of mutation and the whole test stays well under a minute on two cores.

Every run: exit 0 or 1 (3 for compare's regression), no traceback, no "internal error", no canary on any
output or in any written file, the input's bytes unchanged, and nothing created beside it.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from test_trust import CANARY, USER

GATEWAY_TABLES = (
    "CUPTI_ACTIVITY_KIND_KERNEL",
    "CUPTI_ACTIVITY_KIND_RUNTIME",
    "NVTX_EVENTS",
    "CUPTI_ACTIVITY_KIND_MEMCPY",
    "CUPTI_ACTIVITY_KIND_MEMSET",
    "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION",
    "StringIds",
    "TARGET_INFO_GPU",
    "PROCESSES",
    "ThreadNames",
    "META_DATA_EXPORT",
    "META_DATA_CAPTURE",
    "TARGET_INFO_SYSTEM_ENV",
)
INT_KINDS = ("null", "text", "blob", "real", "int64-max", "int64-min", "minus-one", "1e19", "drop")
TEXT_KINDS = ("null", "bad-utf8", "integer", "blob", "long", "drop")
# The bad-UTF-8 mutation of every text column runs on its own, so that no column misses it in the rotation.
COMMANDS = (
    ["info"],
    ["info", "-f", "json"],
    ["kernels", "-f", "csv"],
    ["export", "--what", "kernels", "-f", "json"],
    ["export", "--what", "nvtx", "-f", "csv"],
    ["export", "--what", "launches", "-o", "{out}/launches.csv"],
    ["export", "--what", "memcpy", "-f", "parquet", "-o", "{out}/memcpy.parquet"],
    ["ops"],
    ["layers", "-f", "json"],
    ["steps"],
    ["gaps", "-f", "json"],
    ["rules", "check"],
    ["mfu", "--model", "llama-mini", "--phase", "decode", "--batch", "1", "--kv-len", "64", "--hardware", "h100_sxm"],
    ["compare", "{trace}"],
    ["report", "-o", "{out}/r.html"],
)
SECRETS = (CANARY, USER)


def plant_canaries(p: Path) -> None:
    """The canary in every private field (environment, host, user, command line, a process path), each
    with an invalid UTF-8 byte."""
    bad = b"\xff"
    con = sqlite3.connect(p)
    t = "CAST(? AS TEXT)"
    con.execute(f"INSERT INTO TARGET_INFO_SYSTEM_ENV VALUES (1, '', 'Env', 3, {t})", (f'AWS_SECRET_ACCESS_KEY="{CANARY}"'.encode() + bad,))
    con.execute(f"INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_USER', {t})", (f"{USER}-{CANARY}".encode() + bad,))
    con.execute(f"INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_HOST', {t})", (f"host-{CANARY}".encode() + bad,))
    con.execute(f"INSERT INTO META_DATA_CAPTURE VALUES ('PROCESS_0:ENVIRONMENT_VARIABLE', {t})", (f'TOKEN="{CANARY}"'.encode() + bad,))
    con.execute("INSERT INTO META_DATA_CAPTURE VALUES ('PROCESS_0:COMMAND_LINE', ?)", (f"/home/{USER}/run.sh --key {CANARY}",))
    con.execute(f"INSERT INTO StringIds VALUES (9999, {t})", (f"/home/{USER}/{CANARY}".encode() + bad,))
    con.execute(f"INSERT INTO PROCESSES VALUES (0, 101, {t})", (f"/home/{USER}/{CANARY}/bin/py".encode() + bad,))
    con.commit()
    con.close()


@pytest.fixture(scope="module")
def base_trace(tmp_path_factory) -> Path:
    from nsysbuilder import TraceBuilder

    b = TraceBuilder("2024.5")
    b.gpu()
    t = 1_000_000
    for i in range(4):
        b.push(t, t + 400_000, f"forward_{i}")
        b.push(t + 10, t + 300_000, "layer_0_dense")
        b.push(t + 20, t + 100, "fmha\x1b[31m")
        b.memcpy(t + 5_000, t + 9_000)
        b.memset(t + 10_000, t + 12_000)
        b.kernel(t + 30_000, t + 130_000, "void flash::flash_fwd_kernel\x1b]0;x\x07<T>()", short="flash_fwd_kernel", api_start=t + 25, api_end=t + 35)
        b.kernel(t + 140_000, t + 200_000, "nvjet_sm90_tst_64x8_TNT", api_start=t + 150, api_end=t + 160)
        b.sync(t + 210_000, t + 220_000)
        t += 1_000_000
    b.process(100, "/usr/bin/python3")
    b.thread(100, 100, f"{CANARY}-thread")
    p = b.write(tmp_path_factory.mktemp("fuzz-base") / "base.sqlite")
    plant_canaries(p)
    return p


def _columns(p: Path) -> dict[str, list[tuple[str, str]]]:
    con = sqlite3.connect(p)
    present = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    out = {t: [(r[1], (r[2] or "").upper()) for r in con.execute(f'PRAGMA table_info("{t}")')] for t in GATEWAY_TABLES if t in present}
    con.close()
    return out


def _sql(table: str, col: str, kind: str) -> list[str]:
    q = f'"{table}"'
    c = f'"{col}"'
    return {
        "null": [f"UPDATE {q} SET {c} = NULL"],
        "text": [f"UPDATE {q} SET {c} = 'x' || rowid WHERE rowid % 2 = 0"],
        "blob": [f"UPDATE {q} SET {c} = X'00FF10' WHERE rowid % 3 = 1"],
        "real": [f"UPDATE {q} SET {c} = 1.5 WHERE rowid % 2 = 1"],
        "int64-max": [f"UPDATE {q} SET {c} = 9223372036854775807 WHERE rowid % 2 = 0"],
        "int64-min": [f"UPDATE {q} SET {c} = -9223372036854775808 WHERE rowid % 2 = 1"],
        "minus-one": [f"UPDATE {q} SET {c} = -1"],
        "1e19": [f"UPDATE {q} SET {c} = 1e19 WHERE rowid = (SELECT min(rowid) FROM {q})"],
        "drop": [f"ALTER TABLE {q} DROP COLUMN {c}"],
        "bad-utf8": [f"UPDATE {q} SET {c} = CAST(CAST(COALESCE({c}, '') AS BLOB) || X'FFFE80' AS TEXT)"],
        "integer": [f"UPDATE {q} SET {c} = 12345"],
        "long": [f"UPDATE {q} SET {c} = printf('%.10000c', 'a')"],
    }[kind]


def mutations(p: Path) -> list[tuple[str, list[str]]]:
    """(id, SQL) for every mutation, in a fixed order."""
    out: list[tuple[str, list[str]]] = []
    cols = _columns(p)
    for table in cols:
        out.append((f"{table}:drop-table", [f'DROP TABLE "{table}"']))
        out.append((f"{table}:empty", [f'DELETE FROM "{table}"']))
    i = 0
    for table, spec in cols.items():
        for col, decl in spec:
            text = decl == "TEXT"
            kinds = TEXT_KINDS if text else INT_KINDS
            out.append((f"{table}.{col}:{kinds[i % len(kinds)]}", _sql(table, col, kinds[i % len(kinds)])))
            if text and kinds[i % len(kinds)] != "bad-utf8":
                out.append((f"{table}.{col}:bad-utf8", _sql(table, col, "bad-utf8")))
            i += 1
    return out


def fingerprint(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_fuzz_every_command_on_every_mutation(run, base_trace, tmp_path, monkeypatch):
    monkeypatch.setenv("NSYSPARSE_ENGINE", "sqlite")  # the small file's engine; DuckDB's refusals are tested in test_trust2
    muts = mutations(base_trace)
    assert len(muts) >= 150, len(muts)
    failures: list[str] = []
    ran = {tuple(c): 0 for c in COMMANDS}
    for n, (mid, sql) in enumerate(muts):
        folder = tmp_path / f"m{n}"
        folder.mkdir()
        out = tmp_path / f"o{n}"
        out.mkdir()
        p = folder / "trace.sqlite"
        shutil.copyfile(base_trace, p)
        con = sqlite3.connect(p)
        try:
            for s in sql:
                con.execute(s)
            con.commit()
        finally:
            con.close()
        before = fingerprint(p)
        for cmd in (COMMANDS[n % len(COMMANDS)], COMMANDS[(n * 7 + 4) % len(COMMANDS)]):
            failures += check_run(run, mid, cmd, p, out, folder, before)
            ran[tuple(cmd)] += 1
            for f in out.iterdir():
                f.unlink()
        shutil.rmtree(folder)
        shutil.rmtree(out)
    assert all(ran.values()), ran
    runs = sum(ran.values())
    print(f"fuzz: {len(muts)} mutations x 2 commands ({len(COMMANDS)} in rotation) = {runs} runs: {len(failures)} failures")
    assert not failures, f"{len(failures)} of {runs} runs failed:\n" + "\n".join(failures)


def check_run(run, mid: str, cmd: list[str], p: Path, out: Path, folder: Path, before: str) -> list[str]:
    """One command on one mutated trace: the list of what went wrong (empty when nothing did)."""
    head = 2 if cmd[0] == "rules" else 1
    args = [*cmd[:head], str(p), *(a.format(out=out, trace=p) for a in cmd[head:])]
    try:
        res = run(*args, expect=None)  # the runner itself fails on a traceback or a builder secret
    except AssertionError as err:
        return [f"{mid} | {' '.join(cmd)} | {str(err)[:300]}"]
    text = res.output
    problems = []
    if res.exit_code not in ((0, 1, 3) if cmd[0] == "compare" else (0, 1)):
        problems.append(f"exit {res.exit_code}")
    if "internal error" in text or "please report" in text:
        problems.append("internal error")
    if res.exit_code == 1 and not [ln for ln in text.splitlines() if ln.startswith(("Error: ", "Regression: "))]:
        problems.append("exit 1 without an error line")
    for secret in SECRETS:
        if secret in text:
            problems.append(f"{secret} on the output")
        for f in out.iterdir():
            if secret.encode() in f.read_bytes():
                problems.append(f"{secret} in {f.name}")
    if fingerprint(p) != before:
        problems.append("input modified")
    if sorted(x.name for x in folder.iterdir()) != ["trace.sqlite"]:
        problems.append(f"created beside the input: {sorted(x.name for x in folder.iterdir())}")
    if problems:
        return [f"{mid} | {' '.join(cmd)} | {', '.join(problems)} | {text.strip().splitlines()[-1][:200] if text.strip() else ''}"]
    return []
