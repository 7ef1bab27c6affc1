"""`info` from SQL aggregates: both engines give the same summary (DuckDB runs the same queries as sqlite3 on
large files), and neither loads an event frame (except the launch join that sqlite3's slice check reads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nsysparse.trace import info, open_trace

FIXTURES = sorted(Path(__file__).parent.parent.joinpath("fixtures").glob("*/trace.sqlite"))


def _edge_cases(builder, tmp_path: Path) -> Path:
    b = builder("2024.5")
    b.gpu(0)
    b.process(100, "/usr/bin/python3")
    b.kernel(1_000, 3_000, "a", stream=7)
    b.kernel(2_000, 4_000, "b", stream=7)  # overlaps a: stream 7 busy 3 µs
    b.kernel(2_500, 2_600, "inside", stream=7)  # inside a/b: adds nothing
    b.kernel(1_000, 2_000, "c", stream=13, device=1)  # a device without a GPU row
    b.kernel(0, 0, "unknown_ts")  # start = end = 0: counted as valid, not usable
    b.kernel(9_000, 8_000, "backwards")  # end < start: invalid
    b.kernel(5_000, 6_000, "orphan", with_api=False)  # no launching call: a time slice
    b.memcpy(5_000, 7_000, stream=13, device=1)
    b.range(500, 10_000, "forward")
    b.mark(1_500, "tick", tid=101)
    b.range(900_000_000_000, 900_000_001_000, "stray")  # far outside the activity
    return b.write(tmp_path / "t.sqlite")


def _summary(path: Path, engine: str) -> tuple[dict, dict]:
    with open_trace(path, engine=engine) as t:
        s = info.summary(t)
        loaded = dict(t._frames)
    s.pop("notes")
    return s, loaded


@pytest.mark.parametrize("path", FIXTURES, ids=[p.parent.name for p in FIXTURES])
def test_engines_agree_and_duckdb_loads_no_frame(path: Path) -> None:
    lite, _ = _summary(path, "sqlite")
    duck, loaded = _summary(path, "duckdb")
    assert duck == lite
    assert loaded == {}  # one aggregate query per table, no frame


def test_edge_cases_are_counted_as_before(builder, tmp_path) -> None:
    path = _edge_cases(builder, tmp_path)
    duck, loaded = _summary(path, "duckdb")
    lite, _ = _summary(path, "sqlite")
    assert loaded == {}
    for key in ("streams", "processes", "nvtx_domains", "start_ns", "end_ns", "nvtx_outliers", "time_slice", "tables", "cuda_graph_launches"):
        assert duck[key] == lite[key], key
    streams = {(r["device_id"], r["stream_id"]): r for r in duck["streams"]}
    assert streams[(0, 7)]["busy_ms"] == pytest.approx(0.004) and streams[(0, 7)]["kernels"] == 4  # a, b, inside (3 µs), orphan (1 µs)
    assert streams[(1, 13)]["busy_ms"] == pytest.approx(0.002 + 0.001) and streams[(1, 13)]["memcpy"] == 1
    assert duck["start_ns"] < 500 and duck["end_ns"] == 10_000 and duck["nvtx_outliers"] == 1
    assert duck["time_slice"] and "1 of" in duck["time_slice_reason"]
    assert {g["device_id"] for g in duck["gpus"]} == {0, 1}
    assert duck["processes"][0]["name"] == "python3" and duck["processes"][0]["threads"] == 2


def test_edge_case_notes_match_between_engines(builder, tmp_path) -> None:
    path = _edge_cases(builder, tmp_path)
    notes = {}
    for engine in ("sqlite", "duckdb"):
        with open_trace(path, engine=engine) as t:
            notes[engine] = info.summary(t)["notes"]
    for needle in ("NVTX event(s) lie far outside", "rows with a missing", "unknown timestamps"):
        assert any(needle in n for n in notes["duckdb"]), needle
        assert any(needle in n for n in notes["sqlite"]), needle


def test_info_from_pages_does_not_connect_duckdb(builder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file large enough for DuckDB whose tables the page reader reads: `info` needs no DuckDB connection
    (importing DuckDB and attaching the file cost about a tenth of a second), and answers as sqlite3 does."""
    from nsysparse.trace import engine

    if engine.sqlite_scanner_path() is None:
        pytest.skip("no DuckDB sqlite scanner: DuckDB could not be connected anyway")
    b = builder("2024.5")
    b.gpu(0)
    b.process(100, "/usr/bin/python3")
    b.kernel(1_000, 3_000, "a", stream=7)
    b.kernel(2_000, 4_000, "b", stream=13)
    b.memcpy(5_000, 7_000, stream=13)
    b.range(500, 10_000, "forward")  # (no NVTX event outside the activity: listing one is a query)
    path = b.write(tmp_path / "t.sqlite")
    want, _ = _summary(path, "sqlite")
    monkeypatch.setattr(engine, "DUCKDB_MIN_BYTES", 0)  # every file counts as large
    with open_trace(path) as t:
        assert t.engine.reads_pages() and t.engine.prefers_duckdb()
        got = info.summary(t)
        assert t.engine._duck is None
    got.pop("notes")
    assert got == want
