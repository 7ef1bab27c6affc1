"""The frame cache (nsysparse/trace/cache.py): where it writes, when it is used, and that it changes no answer.

Every test points XDG_CACHE_HOME at its own folder and sets NSYSPARSE_CACHE_MIN_MB=0 (the fixtures are far
below the size from which traces are cached by default). Expected values come from the uncached run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from nsysparse.cli import cli
from nsysparse.trace import open_trace
from nsysparse.trace.cache import entry_key

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "moe_decode_op" / "trace.sqlite"
NONVTX = ROOT / "fixtures" / "moe_decode_nonvtx" / "trace.sqlite"


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cachehome"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.setenv("NSYSPARSE_CACHE_MIN_MB", "0")
    # "0" rather than unset: the variable is then restored after the test, even when `--no-cache` set it
    monkeypatch.setenv("NSYSPARSE_NO_CACHE", "0")
    monkeypatch.delenv("NSYSPARSE_CACHE_MAX_MB", raising=False)
    return home


def _copy(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / "trace.sqlite"
    shutil.copyfile(src, dst)
    return dst


def _entries(home: Path) -> list[Path]:
    base = home / "nsysparse" / "frames"
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _run(*args: str) -> str:
    res = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


COMMANDS = (
    ("info", "-f", "json"),
    ("info",),
    ("ops", "-f", "csv"),
    ("layers", "-f", "csv"),
    ("steps", "-f", "csv"),
    ("gaps", "-f", "json"),
    ("kernels", "-f", "csv"),
)


def test_key_follows_path_size_and_mtime(tmp_path: Path) -> None:
    t = _copy(FIXTURE, tmp_path / "a")
    k0 = entry_key(t)
    assert entry_key(t) == k0
    st = t.stat()
    os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    k1 = entry_key(t)
    assert k1 != k0
    with open(t, "ab") as fh:  # a different size (a page of zeros: still a readable database)
        fh.write(b"\0" * 4096)
    os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same mtime as before, other size
    assert entry_key(t) not in (k0, k1)
    other = _copy(FIXTURE, tmp_path / "b")
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert entry_key(other) != k0  # same bytes and times, another path


@pytest.mark.parametrize("trace", [FIXTURE, NONVTX], ids=["nvtx", "no-nvtx"])
def test_results_identical_with_and_without_cache(cache_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trace: Path) -> None:
    t = _copy(trace, tmp_path / "in")
    monkeypatch.setenv("NSYSPARSE_NO_CACHE", "1")
    expected = {c: _run(c[0], str(t), *c[1:]) for c in COMMANDS}
    assert _entries(cache_home) == []
    monkeypatch.setenv("NSYSPARSE_NO_CACHE", "0")
    cold = {c: _run(c[0], str(t), *c[1:]) for c in COMMANDS}  # writes the entry
    (entry,) = _entries(cache_home)
    assert any(n.endswith(".cols") for n in _files(entry))
    warm = {c: _run(c[0], str(t), *c[1:]) for c in COMMANDS}  # reads it
    assert cold == expected
    assert warm == expected


def test_cached_frames_equal_loaded_frames_and_notes(cache_home: Path, tmp_path: Path) -> None:
    t = _copy(FIXTURE, tmp_path / "in")
    with open_trace(t) as tr:
        tr.prefetch("kernels", "api", "memcpy", "memset", "nvtx")
        direct = {k: tr._frames[k] for k in ("kernels", "api", "nvtx")}
        launches = tr.launches()
        notes = list(tr.notes)
    with open_trace(t) as tr:
        tr.prefetch("kernels", "api", "memcpy", "memset", "nvtx")
        assert tr.cache.get("kernels", tuple(direct["kernels"].columns)) is not None  # served from the cache
        for k, df in direct.items():
            pd.testing.assert_frame_equal(tr._frames[k], df, check_categorical=True)
        pd.testing.assert_frame_equal(tr.launches(), launches)
        assert tr.notes == notes


def test_cached_frames_are_private_copies_of_the_entry(cache_home: Path, tmp_path: Path) -> None:
    """Cached columns are mapped copy-on-write: writing to one changes neither the entry's file nor the
    next read; integer columns come back in their own dtype."""
    t = _copy(FIXTURE, tmp_path / "in")
    with open_trace(t) as tr:
        expected = tr.kernels().copy(deep=True)
    files = sorted((cache_home / "nsysparse" / "frames").rglob("*.cols"))
    before = {f: f.read_bytes() for f in files}
    with open_trace(t) as tr:
        got = tr.cache.get("kernels", tuple(expected.columns))
        assert got is not None
        frame = got[0]
        pd.testing.assert_frame_equal(frame, expected)
        ints = [c for c in frame.columns if frame[c].dtype.kind == "i"]
        assert ints and all(frame[c].dtype == expected[c].dtype for c in ints)
        values = frame["start_ns"].to_numpy()
        values.flags.writeable = True  # (pandas hands out read-only views; the mapping below them is writable)
        values[:] = -7
    assert {f: f.read_bytes() for f in files} == before
    with open_trace(t) as tr:
        again = tr.cache.get("kernels", tuple(expected.columns))
        assert again is not None
        pd.testing.assert_frame_equal(again[0], expected)


def test_info_summary_is_kept_and_read_back(cache_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second `info` reads the record (the aggregate queries do not run again) and says the same, even
    through another spelling of the path; a damaged record is rebuilt."""
    from nsysparse.trace import info

    t = _copy(FIXTURE, tmp_path / "in")
    first = json.loads(_run("info", str(t), "-f", "json"))
    (entry,) = _entries(cache_home)
    record = entry / "info.record.json"
    assert record.exists()
    calls = []
    real = info.summary
    monkeypatch.setattr(info, "summary", lambda trace: calls.append(1) or real(trace))
    monkeypatch.chdir(t.parent)
    again = json.loads(_run("info", "trace.sqlite", "-f", "json"))
    assert calls == []
    assert again | {"file": first["file"], "sqlite_file": first["sqlite_file"]} == first
    assert again["file"] == "trace.sqlite"
    record.write_text("{truncated")
    assert json.loads(_run("info", str(t), "-f", "json")) == first
    assert calls == [1] and json.loads(record.read_text())["data"]["gpus"] == first["gpus"]


def test_no_cache_option_writes_nothing(cache_home: Path, tmp_path: Path) -> None:
    t = _copy(FIXTURE, tmp_path / "in")
    _run("--no-cache", "layers", str(t))
    _run("--no-cache", "gaps", str(t))
    assert not cache_home.exists()
    assert _files(t.parent) == {"trace.sqlite"}


def test_nothing_beside_the_input(cache_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = _copy(FIXTURE, tmp_path / "in")
    _run("layers", str(t))
    assert _files(t.parent) == {"trace.sqlite"}
    assert len(_entries(cache_home)) == 1
    # a cache directory that is the trace's own folder: the cache is off rather than write there
    monkeypatch.setenv("XDG_CACHE_HOME", str(t.parent))
    _run("layers", str(t))
    assert _files(t.parent) == {"trace.sqlite"}


def test_read_only_input_folder(cache_home: Path, tmp_path: Path) -> None:
    t = _copy(FIXTURE, tmp_path / "ro")
    os.chmod(t.parent, 0o555)
    try:
        first = _run("ops", str(t), "-f", "csv")
        second = _run("ops", str(t), "-f", "csv")
    finally:
        os.chmod(t.parent, 0o755)
    assert first == second
    assert len(_entries(cache_home)) == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage-json", "missing-data", "wrong-rows", "flipped-byte", "bad-codes"])
def test_corrupt_entry_is_ignored_and_rebuilt(cache_home: Path, tmp_path: Path, damage: str) -> None:
    t = _copy(FIXTURE, tmp_path / "in")
    expected = _run("layers", str(t), "-f", "csv")
    (entry,) = _entries(cache_home)
    for kept in entry.glob("mapping-*.record.json"):
        kept.unlink()  # the kept mapping would answer without reading the kernels
    pq = sorted(entry.glob("kernels-*.cols"))[0]
    meta = pq.with_suffix(".json")
    if damage == "truncate":
        data = pq.read_bytes()
        pq.write_bytes(data[: len(data) // 2])
    elif damage == "garbage-json":
        meta.write_text("{not json")
    elif damage == "missing-data":
        pq.unlink()
    elif damage == "flipped-byte":  # same size, one bit changed: the checksum tells
        data = bytearray(pq.read_bytes())
        data[len(data) // 3] ^= 0x10
        pq.write_bytes(bytes(data))
    elif damage == "bad-codes":  # a record whose categories are fewer than its codes need
        info = json.loads(meta.read_text())
        cat = next(c for c, t in info["types"].items() if isinstance(t, dict))
        info["types"][cat]["categories"] = info["types"][cat]["categories"][:1]
        meta.write_text(json.dumps(info))
    else:
        meta.write_text(meta.read_text().replace('"rows": ', '"rows": 1'))
    assert _run("layers", str(t), "-f", "csv") == expected  # damaged entry left aside, frame read from the trace
    # and rebuilt: the next run reads a complete entry again
    assert pq.exists() and meta.exists()
    with open_trace(t) as tr:
        hit = tr.cache.get("kernels", ("start_ns", "end_ns"))
        assert hit is not None and len(hit[0]) > 0
    assert _run("layers", str(t), "-f", "csv") == expected


def test_size_cap_evicts_least_recently_used(cache_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _copy(FIXTURE, tmp_path / "a")
    b = _copy(FIXTURE, tmp_path / "b")
    _run("layers", str(a))
    (ea,) = _entries(cache_home)
    size_a = sum(f.stat().st_size for f in ea.iterdir())
    # room for one trace's entry, not two: writing b's evicts a's (the least recently used)
    monkeypatch.setenv("NSYSPARSE_CACHE_MAX_MB", str(size_a * 1.5 / 1e6))
    os.utime(ea, (1, 1))
    _run("layers", str(b))
    entries = _entries(cache_home)
    assert len(entries) == 1 and entries[0] != ea
    assert entries[0].name == entry_key(b)
    # a cap below one entry keeps nothing at all
    monkeypatch.setenv("NSYSPARSE_CACHE_MAX_MB", "0")
    _run("layers", str(a))
    assert sum(f.stat().st_size for e in _entries(cache_home) for f in e.iterdir()) == 0


def test_touched_file_is_read_again(cache_home: Path, tmp_path: Path) -> None:
    t = _copy(FIXTURE, tmp_path / "in")
    _run("layers", str(t))
    st = t.stat()
    os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    _run("layers", str(t))
    keys = {e.name for e in _entries(cache_home)}
    assert entry_key(t) in keys and len(keys) == 2


def test_small_traces_are_not_cached_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "cachehome"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.delenv("NSYSPARSE_CACHE_MIN_MB", raising=False)
    monkeypatch.setenv("NSYSPARSE_NO_CACHE", "0")
    t = _copy(FIXTURE, tmp_path / "in")
    assert t.stat().st_size < 8e6
    _run("layers", str(t))
    assert not home.exists()


def test_launch_columns_from_cache_match(cache_home: Path, tmp_path: Path) -> None:
    t = _copy(FIXTURE, tmp_path / "in")
    with open_trace(t) as tr:
        want = tr.launches()
    with open_trace(t) as tr:
        got = tr.launches()
        assert "api" not in tr._frames  # the join came from the cache: the API frame was never needed
    for c in ("has_launch", "api_start_ns", "api_end_ns", "global_tid", "tid"):
        np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy())
    assert got["api_name"].astype(str).tolist() == want["api_name"].astype(str).tolist()


def test_mapping_is_kept_and_read_back(cache_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second command on the same file, rules and options reads the mapping back (map_trace does not
    run) and answers the same; other rules or options map again; a damaged kept frame maps again."""
    from nsysparse.analyses import context

    t = _copy(FIXTURE, tmp_path / "in")
    monkeypatch.setenv("NSYSPARSE_NO_CACHE", "1")
    expected = {c: _run(c[0], str(t), *c[1:]) for c in COMMANDS[2:]}
    monkeypatch.setenv("NSYSPARSE_NO_CACHE", "0")
    calls: list[int] = []
    real = context.map_trace
    monkeypatch.setattr(context, "map_trace", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert _run("layers", str(t), "-f", "csv") == expected[("layers", "-f", "csv")]
    assert calls == [1]
    for c in COMMANDS[2:]:
        assert _run(c[0], str(t), *c[1:]) == expected[c]
    assert calls == [1]  # every later command read the kept mapping
    _run("layers", str(t), "-f", "csv", "--nvtx", "off")
    assert calls == [1, 1]  # other options: mapped again
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    with open(rules / "common.toml", "a", encoding="utf-8") as fh:
        fh.write("# edited\n")  # the same rules, other bytes: another digest
    _run("layers", str(t), "-f", "csv", "--rules", str(rules))
    assert calls == [1, 1, 1]  # other rules: mapped again
    (entry,) = _entries(cache_home)
    for frame in entry.glob("mapping-*-kernels-*.cols"):
        data = bytearray(frame.read_bytes())
        data[len(data) // 2] ^= 0x01
        frame.write_bytes(bytes(data))
    assert _run("layers", str(t), "-f", "csv") == expected[("layers", "-f", "csv")]
    assert len(calls) == 4  # the damaged frame was refused and the trace mapped again


def test_column_types_round_trip_exactly_or_are_refused(cache_home: Path, tmp_path: Path) -> None:
    """Every column type the cache keeps comes back equal (values, dtype, missing values, order); a column it
    cannot restore exactly makes `put` refuse the whole frame."""
    t = _copy(FIXTURE, tmp_path / "in")
    kept = pd.DataFrame(
        {
            "i64": np.array([-5, 2**40, 0, 7], dtype=np.int64),
            "small": np.array([1, 2, -1, 3], dtype=np.int64),
            "i32": np.array([1, 2, 3, 4], dtype=np.int32),
            "flag": np.array([True, False, True, True]),
            "f": np.array([0.5, np.nan, -1e300, 3.0]),
            "cat": pd.Categorical(["b", None, "a", "b"]),
            "ordered": pd.Categorical(["hi", "lo", "hi", "lo"], categories=["lo", "hi"], ordered=True),
            "text": pd.array(["x", None, "y", "x"], dtype="str"),
            "obj_none": pd.Series(["p", None, "q", "p"], dtype=object),
            "obj_nan": pd.Series(["p", np.nan, "q", np.nan], dtype=object),
        }
    )
    refused = {
        "mixed": pd.Series(["p", 1, "q", None], dtype=object),
        "holes": pd.Series(["p", None, np.nan, "q"], dtype=object),
        "na": pd.Series(["p", pd.NA, "q", "r"], dtype=object),
        "int_cats": pd.Categorical([1, 2, 1, 2]),
    }
    with open_trace(t) as tr:
        assert tr.cache.put("test", tuple(kept.columns), kept, ["a note"])
        for name, col in refused.items():
            assert not tr.cache.put(f"test-{name}", ("c",), pd.DataFrame({"c": col}), []), name
    with open_trace(t) as tr:
        hit = tr.cache.get("test", tuple(kept.columns))
        assert hit is not None
        pd.testing.assert_frame_equal(hit[0], kept, check_exact=True)
        assert hit[1] == ["a note"]
        assert hit[0]["obj_none"].iloc[1] is None and isinstance(hit[0]["obj_nan"].iloc[1], float)


def test_results_are_kept_per_selection_and_arguments(cache_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`gaps`, `layers` and `ops` results are kept: a second command with the same selection and arguments
    reads them back (the analysis does not run) and answers as without the cache; another argument,
    window or device computes again."""
    from nsysparse.analyses import gaps, layers, ops

    t = _copy(FIXTURE, tmp_path / "in")
    variants = [
        ("gaps", "-f", "json"),
        ("gaps", "-f", "json", "--min-bubble-us", "50"),
        ("gaps", "-f", "json", "--top", "3"),
        ("gaps", "-f", "json", "--window", "steps=1:2"),
        ("layers", "-f", "csv"),
        ("layers", "-f", "csv", "--device", "0"),
        ("ops", "-f", "csv"),
        ("ops", "-f", "csv", "--include-warmup"),
    ]
    monkeypatch.setenv("NSYSPARSE_NO_CACHE", "1")
    expected = {v: _run(v[0], str(t), *v[1:]) for v in variants}
    assert len({expected[v] for v in variants[:4]}) == 4  # the arguments change the answer
    monkeypatch.setenv("NSYSPARSE_NO_CACHE", "0")
    calls: list[str] = []
    for module, name in ((gaps, "_gap_report"), (layers, "_layer_report"), (ops, "_op_summary")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    for v in variants:
        assert _run(v[0], str(t), *v[1:]) == expected[v]
    computed = list(calls)
    assert computed.count("_gap_report") == 4 and computed.count("_layer_report") == 2 and computed.count("_op_summary") == 2
    for v in variants:
        assert _run(v[0], str(t), *v[1:]) == expected[v]
    assert calls == computed  # every second command read its result back


def _no_steps_trace(builder, tmp_path: Path) -> Path:
    """Three kernels and nothing else: no steps are found (`ops` then notes it)."""
    b = builder("2024.5")
    b.gpu()
    for i in range(3):
        b.kernel(1_000_000 * i, 1_000_000 * i + 500, "void gemm_kernel<float>()", short="gemm_kernel")
    return b.write(tmp_path / "few.sqlite")


def test_kept_results_raise_their_notes_again(cache_home: Path, tmp_path: Path, builder) -> None:
    """The notes an analysis raised (on the context: no steps found) come back with its kept result."""
    from nsysparse.analyses.context import AnalysisContext
    from nsysparse.analyses.ops import op_summary

    path = _no_steps_trace(builder, tmp_path)
    with AnalysisContext.open(path) as ctx:
        first = op_summary(ctx)
        notes = ctx.notes
    assert any("no steps were found" in n for n in notes)
    assert any(p.name.startswith("result-") for p in (cache_home / "nsysparse" / "frames").rglob("*.record.json"))
    with AnalysisContext.open(path) as ctx:
        again = op_summary(ctx)
        assert ctx.notes == notes
    pd.testing.assert_frame_equal(again, first)


def test_kept_results_keep_the_notes_of_what_they_loaded(cache_home: Path, tmp_path: Path) -> None:
    """A note raised while an analysis loads a table (NVTX rows ending before they start, loaded by `gaps`
    when the mapping does not read NVTX) comes back with the kept result, as without the cache."""
    import sqlite3

    from nsysparse.analyses.context import AnalysisContext, StructureOptions
    from nsysparse.analyses.gaps import gap_report

    t = _copy(FIXTURE, tmp_path / "in")
    con = sqlite3.connect(t)
    con.execute('UPDATE NVTX_EVENTS SET "end" = "start" - 1 WHERE rowid IN (SELECT rowid FROM NVTX_EVENTS WHERE "end" IS NOT NULL LIMIT 2)')
    con.commit()
    con.close()
    runs = []
    for _ in range(2):
        with AnalysisContext.open(t, options=StructureOptions(nvtx="off")) as ctx:
            gap_report(ctx)
            runs.append(ctx.notes)
    assert any("NVTX rows with a missing start or end < start were left out" in n for n in runs[0])
    assert runs[1] == runs[0]


def test_kept_results_keep_notes_raised_before_by_another_call(cache_home: Path, tmp_path: Path, builder) -> None:
    """A context note an analysis raises again (shown once, by an earlier call in the same process) is kept
    with its result all the same: a later process asking only for that result shows it."""
    from nsysparse.analyses.context import AnalysisContext
    from nsysparse.analyses.ops import op_summary

    path = _no_steps_trace(builder, tmp_path)
    with AnalysisContext.open(path) as ctx:
        op_summary(ctx)
        op_summary(ctx, by_kind=True)  # raises the "no steps" note again
    with AnalysisContext.open(path) as ctx:
        op_summary(ctx, by_kind=True)  # read back
        assert any("no steps were found" in n for n in ctx.notes)
