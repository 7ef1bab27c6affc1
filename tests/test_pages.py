"""The page reader (`nsysparse.trace.pages`) against SQLite itself.

Truth is what stdlib sqlite3 returns for the same SELECT: on tables built here with every kind of
integer SQLite stores (each serial type, NULLs, the constants 0 and 1, negatives), on b-trees of
several levels and page sizes, on tables rebuilt by deletes and inserts; and on every bundled fixture
and public capture, where the loaded frames must equal those read through SQL. Where the reader cannot
vouch for its answer (reals, texts, overflow pages, short records after ALTER TABLE, WITHOUT ROWID)
it must say None, and the loaders then give SQLite's answer and errors.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, PUBLIC
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from nsysbuilder import gtid

from nsysparse.trace import open_trace, pages, tables
from nsysparse.trace import schema as S
from nsysparse.trace.engine import Column, Engine, Select

# Values at each boundary of SQLite's integer sizes (1, 2, 3, 4, 6, 8 bytes), both signs, and 0/1 (no content).
EDGES = [0, 1, -1, 127, 128, -128, -129, 32767, 32768, -32769, 2**23 - 1, 2**23, 2**31 - 1, 2**31, -(2**31) - 1]
EDGES += [2**47 - 1, 2**47, -(2**47) - 1, 2**63 - 1, -(2**63), 1_700_000_000_123_456_789]
ints = st.one_of(st.sampled_from(EDGES), st.integers(-(2**63), 2**63 - 1), st.integers(-300, 300), st.none())


def _build(path: Path, ncols: int, rows: list[list[int | None]], page_size: int = 4096, extra: str = "") -> None:
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA page_size = {page_size}")
    cols = ", ".join(f"c{i} INTEGER" for i in range(ncols))
    con.execute(f"CREATE TABLE t ({cols}{extra})")
    con.executemany(f"INSERT INTO t VALUES ({', '.join('?' for _ in range(ncols))})", rows)
    con.commit()
    con.close()


def _sqlite_rows(path: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _read(path: Path, table: str, wanted: list[str], texts: list[str] | None = None) -> dict[str, np.ndarray] | None:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        lay = pages.layout(lambda q, a=(): con.execute(q, a).fetchall(), table)
    finally:
        con.close()
    assert lay is not None
    reader = pages.PageFile(path)
    try:
        return reader.read(lay, wanted, texts=texts or [])
    finally:
        reader.close()


def _as_rows(got: dict[str, np.ndarray], wanted: list[str]) -> list[tuple]:
    cols = []
    for w in wanted:
        v = got[w]
        mask = np.ma.getmaskarray(v) if isinstance(v, np.ma.MaskedArray) else np.zeros(len(v), bool)
        cols.append([None if m else int(x) for x, m in zip(np.ma.getdata(v), mask)])
    return list(zip(*cols))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    ncols=st.integers(1, 30),
    nrows=st.integers(0, 400),
    seed=st.integers(0, 2**32 - 1),
    page_size=st.sampled_from([512, 1024, 4096, 65536]),
    data=st.data(),
)
def test_integer_tables_read_as_sqlite_reads_them(tmp_path_factory, ncols, nrows, seed, page_size, data):
    rng = np.random.default_rng(seed)
    pool = [data.draw(ints) for _ in range(24)]
    rows = [[pool[k] for k in rng.integers(0, len(pool), ncols)] for _ in range(nrows)]
    path = tmp_path_factory.mktemp("pages") / "t.sqlite"
    _build(path, ncols, rows, page_size)
    wanted = sorted({f"c{int(i)}" for i in rng.integers(0, ncols, rng.integers(1, ncols + 1))})
    got = _read(path, "t", wanted)
    assert got is not None
    assert _as_rows(got, wanted) == _sqlite_rows(path, f"SELECT {', '.join(wanted)} FROM t")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    ncols=st.integers(8, 30),
    nrows=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_far_columns_read_as_sqlite_reads_them(tmp_path_factory, ncols, nrows, seed, data):
    """Integer columns after more than FAR_GAP unread ones (gathered per row, not by layout), between
    columns of varying sizes: as sqlite3 reads them."""
    rng = np.random.default_rng(seed)
    pool = [data.draw(ints) for _ in range(24)]
    rows = [[pool[k] for k in rng.integers(0, len(pool), ncols)] for _ in range(nrows)]
    path = tmp_path_factory.mktemp("pages") / "t.sqlite"
    _build(path, ncols, rows)
    near = sorted({f"c{int(i)}" for i in rng.integers(0, 2, rng.integers(1, 3))})
    far = sorted({f"c{int(i)}" for i in rng.integers(pages.FAR_GAP + 2, ncols, rng.integers(1, 3))}, key=lambda c: int(c[1:]))
    wanted = near + far
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    lay = pages.layout(lambda q, a=(): con.execute(q, a).fetchall(), "t")
    con.close()
    assert lay is not None
    req = pages.Request(lay, tuple(wanted), ())
    assert set(pages._far_columns({w: lay.columns.index(w) for w in wanted}, req)) == set(far)  # the per-row path is the one taken
    reader = pages.PageFile(path)
    try:
        got = reader.read(lay, wanted)
    finally:
        reader.close()
    assert got is not None
    assert _as_rows(got, wanted) == _sqlite_rows(path, f"SELECT {', '.join(wanted)} FROM t")


def test_deep_btree_after_deletes_and_inserts(tmp_path):
    """Four levels of 512-byte pages, then rows deleted (free space, merged pages) and inserted again
    (new pages out of file order): rowid order is kept."""
    path = tmp_path / "t.sqlite"
    rng = np.random.default_rng(7)
    rows = rng.integers(-(2**40), 2**40, size=(60_000, 3)).tolist()
    _build(path, 3, rows, page_size=512)
    con = sqlite3.connect(path)
    con.execute("DELETE FROM t WHERE rowid % 3 = 0")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", rng.integers(0, 2**20, size=(5000, 3)).tolist())
    con.commit()
    con.close()
    got = _read(path, "t", ["c0", "c2"])
    assert got is not None
    assert _as_rows(got, ["c0", "c2"]) == _sqlite_rows(path, "SELECT c0, c2 FROM t")


@pytest.mark.parametrize(
    "case",
    ["real", "text", "long_text_elsewhere", "overflow", "added_column", "without_rowid", "blob"],
)
def test_refuses_what_it_cannot_vouch_for(tmp_path, case):
    """Reals, texts and blobs in a wanted column, records on overflow pages, short records (a column
    added later), WITHOUT ROWID tables: None, never a guess."""
    path = tmp_path / "t.sqlite"
    con = sqlite3.connect(path)
    if case == "without_rowid":
        con.execute("CREATE TABLE t (c0 INTEGER PRIMARY KEY, c1 INTEGER) WITHOUT ROWID")
        con.executemany("INSERT INTO t VALUES (?, ?)", [(i, i) for i in range(10)])
    elif case == "added_column":
        con.execute("CREATE TABLE t (c0 INTEGER)")
        con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])
        con.execute("ALTER TABLE t ADD COLUMN c1 INTEGER")
    else:
        con.execute("CREATE TABLE t (c0 INTEGER, c1 INTEGER, c2 TEXT)")
        value = {"real": (1, 2.5, None), "text": (1, "x", None), "blob": (1, b"\x00\x01", None)}.get(case)
        value = value or {"long_text_elsewhere": (1, 2, "y" * 5000), "overflow": (1, 2, "y" * 5000)}[case]
        con.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, i, None) for i in range(10)] + [value])
    con.commit()
    con.close()
    con = sqlite3.connect(path)
    lay = pages.layout(lambda q, a=(): con.execute(q, a).fetchall(), "t")
    con.close()
    if case == "without_rowid":
        assert lay is None
        return
    reader = pages.PageFile(path)
    try:
        assert reader.read(lay, ["c0", "c1"]) is None
    finally:
        reader.close()


def test_text_columns_as_sqlite3_decodes_them(tmp_path):
    """Short texts (UTF-8, empty, invalid bytes, NULL) between integer columns, as the sqlite3 reader
    (replacement characters) gives them; a text longer than 57 bytes, or a number in a text column
    (which CAST AS TEXT would render), is SQLite's to answer."""
    path = tmp_path / "t.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (c0 INTEGER, label TEXT, c1 INTEGER)")
    labels = [None, "", "aten::mm", "ü-λ", "x" * 57, "forward"]
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, labels[i % len(labels)], -i * 977) for i in range(3000)])
    con.execute("INSERT INTO t VALUES (1, CAST(X'66FF6F' AS TEXT), 2)")  # invalid UTF-8 stored as text
    con.commit()
    con.close()
    got = _read(path, "t", ["c0", "c1"], texts=["label"])
    assert got is not None
    con = sqlite3.connect(path)
    con.text_factory = lambda b: b.decode("utf-8", "replace")
    want = con.execute("SELECT c0, label, c1 FROM t").fetchall()
    con.close()
    assert [(a, t, b) for (a, b), t in zip(_as_rows(got, ["c0", "c1"]), got["label"])] == want
    for change in ("UPDATE t SET label = 'y' || label WHERE c0 = 4", "UPDATE t SET label = 12 WHERE c0 = 5"):
        con = sqlite3.connect(path)
        con.execute(change)
        con.commit()
        con.close()
        assert _read(path, "t", ["c0", "c1"], texts=["label"]) is None


def test_rowid_alias_reads_the_rowid(tmp_path):
    path = tmp_path / "t.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i * 1000 + 3, i) for i in range(3000)])
    con.commit()
    con.close()
    got = _read(path, "t", ["id", "v"])
    assert got is not None and _as_rows(got, ["id", "v"]) == _sqlite_rows(path, "SELECT id, v FROM t")


def test_select_from_pages_equals_sql(tmp_path):
    """The engine's answer from pages (filter, COALESCE, constants, a text column) equals the SQL one."""
    path = tmp_path / "t.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (a INTEGER, b INTEGER, kind INTEGER, note TEXT)")
    rng = np.random.default_rng(3)
    rows = [(int(x), None if y < 0 else int(y), int(k), None) for x, y, k in rng.integers(-5, 99, size=(5000, 3))]
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    sel = Select("t", (Column("x", ("b", "a")), Column("y", ("b",)), Column("z", constant=-1), Column("n", ("note",), text=True)), keep=("kind", (3, 7, 11)))
    engine = Engine(path, prefer="auto")
    try:
        got = engine.from_pages(sel)
        assert got is not None
        want = _sqlite_rows(path, sel.sql())
        assert len(got["x"]) == len(want) > 0
        assert _as_rows(got, ["x", "y", "z"]) == [r[:3] for r in want]
        assert list(got["n"]) == [r[3] for r in want] == [None] * len(want)
    finally:
        engine.close()
    forced = Engine(path, prefer="sqlite")
    try:
        assert forced.from_pages(sel) is None  # NSYSPARSE_ENGINE=sqlite|duckdb: SQL only
    finally:
        forced.close()


def _traces() -> list[Path]:
    found = sorted(FIXTURES.glob("*/trace.sqlite")) + sorted(PUBLIC.glob("*/*.sqlite")) if PUBLIC.exists() else sorted(FIXTURES.glob("*/trace.sqlite"))
    return found


KINDS = ("kernels", "api", "nvtx", "memcpy", "memset", "sync")


def _has_nvtx(path: Path) -> bool:
    con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return bool(con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'NVTX_EVENTS'").fetchone()[0])
    finally:
        con.close()


@pytest.mark.parametrize("path", _traces(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_loaded_frames_equal_sql_on_real_captures(path, monkeypatch):
    """Every table the loaders read, from pages and through SQL (sqlite3), gives equal frames on the
    bundled fixtures and on third-party exports (nsys-written files this project did not make)."""

    answered: list[str] = []
    original = Engine.from_pages

    def counting(self: Engine, sel: Select) -> dict[str, np.ndarray] | None:
        got = original(self, sel)
        if got is not None:
            answered.append(sel.table)
        return got

    monkeypatch.setattr(Engine, "from_pages", counting)

    def load(engine: str) -> dict[str, pd.DataFrame | str]:
        monkeypatch.setenv("NSYSPARSE_ENGINE", engine)
        monkeypatch.setenv("NSYSPARSE_NO_CACHE", "1")
        out: dict[str, pd.DataFrame | str] = {}
        with open_trace(path) as t:
            for kind in KINDS:
                if not t.schema.has_kind(kind):
                    continue
                try:
                    out[kind] = getattr(t, kind)()
                except Exception as err:  # the same error either way
                    out[kind] = f"{type(err).__name__}: {err}"
        return out

    via_pages = load("auto")
    read_from_pages = list(answered)
    via_sql = load("sqlite")
    assert answered == read_from_pages  # SQL only when forced
    # every table of the bundled and v2 fixtures; on third-party files kernels and calls at least (NVTX
    # with long texts goes to SQL)
    expected = {S.TABLES[k] for k, f in via_pages.items() if isinstance(f, pd.DataFrame)}
    if path.is_relative_to(PUBLIC):
        expected &= {S.TABLES["kernels"], S.TABLES["api"]}
    assert expected <= set(read_from_pages)
    assert via_pages.keys() == via_sql.keys()
    for kind, frame in via_pages.items():
        if isinstance(frame, str):
            assert frame == via_sql[kind]
        else:
            pd.testing.assert_frame_equal(frame, via_sql[kind], check_exact=True)


def _domain_by_sql(t, frame: pd.DataFrame) -> list[str]:
    """Each NVTX row's domain name as the SQL join of its (process, domain id) with the NvtxDomainCreate
    events names it (the first event of a pair wins), else "default" (id 0) or "domain N"."""
    cols = t.schema.columns["NVTX_EVENTS"]
    named: dict[tuple[int, int], str] = {}
    if "domainId" in cols:
        text = "COALESCE(CAST(n.text AS TEXT), CAST(s.value AS TEXT))" if "textId" in cols else "CAST(n.text AS TEXT)"
        join = "LEFT JOIN StringIds s ON s.id = n.textId" if "textId" in cols else ""
        con = sqlite3.connect(f"file:{t.path}?mode=ro&immutable=1", uri=True)
        try:
            rows = con.execute(
                f"SELECT COALESCE(n.globalTid, 0), COALESCE(n.domainId, 0), {text} FROM NVTX_EVENTS n {join} WHERE n.eventType = 75 ORDER BY n.rowid"
            ).fetchall()
        finally:
            con.close()
        for g, d, v in rows:
            named.setdefault(((int(g) >> 24) & 0xFFFFFF, int(d)), v or "")
    return [named.get((int(p), int(d)), "default" if d == 0 else f"domain {d}") for p, d in zip(frame["pid"], frame["domain_id"])]


@pytest.mark.parametrize("path", [p for p in _traces() if _has_nvtx(p)], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_nvtx_domain_names_equal_the_sql_join(path, monkeypatch):
    """The loader names domains from the domain-create rows of its own read; SQL joins them apart."""
    monkeypatch.setenv("NSYSPARSE_NO_CACHE", "1")
    with open_trace(path) as t:
        frame = t.nvtx()
        assert frame["domain"].astype(str).tolist() == _domain_by_sql(t, frame)
        assert not (frame["event_type"] == S.NVTX_DOMAIN_CREATE).any()


def test_nvtx_domain_create_rows_name_and_leave(builder, tmp_path, monkeypatch):
    """Domain-create events (start set, end NULL; by inline text or by StringIds id; per process; the
    first of a repeated pair wins) name the ranges and are neither rows nor invalid rows."""
    monkeypatch.setenv("NSYSPARSE_NO_CACHE", "1")
    b = builder("2024.5")
    b.gpu()
    b.domain(1, "CCCL")
    b.domain(1, "later name", pid=100)
    b.domain(1, "other process", pid=200, tid=200)
    b.add(
        "NVTX_EVENTS",
        start=5,
        end=None,
        eventType=75,
        rangeId=0,
        category=0,
        color=None,
        text=None,
        globalTid=gtid(100, 100),
        endGlobalTid=None,
        textId=b.sid("by id"),
        domainId=2,
    )
    b.push(0, 100, "a", domain=1)
    b.push(10, 90, "b", domain=2)
    b.push(20, 80, "c", domain=3)
    b.push(30, 70, "d", domain=0)
    path = b.write(tmp_path / "d.sqlite")
    for engine in ("auto", "sqlite"):
        monkeypatch.setenv("NSYSPARSE_ENGINE", engine)
        with open_trace(path) as t:
            frame = t.nvtx()
            assert t.notes == []
            assert frame["text"].astype(str).tolist() == ["a", "b", "c", "d"]
            assert frame["domain"].astype(str).tolist() == ["CCCL", "by id", "domain 3", "default"] == _domain_by_sql(t, frame)


def _work_rows(work: dict, keys: tuple[str, ...]) -> list[tuple]:
    """An aggregate's rows, sorted by their keys (SQL's GROUP BY has no order)."""
    cols = [k for k in work if isinstance(work[k], np.ndarray) and k != "bounds"]
    rows = sorted(zip(*[work[c].tolist() for c in cols]))
    return [tuple(cols)] + rows + [tuple((k, work[k]) for k in sorted(work) if not isinstance(work[k], np.ndarray))]


def _all_work(path: Path, engine: str, monkeypatch) -> dict[str, object]:
    from nsysparse.trace import info

    monkeypatch.setenv("NSYSPARSE_ENGINE", engine)
    monkeypatch.setenv("NSYSPARSE_NO_CACHE", "1")
    with open_trace(path) as t:
        out: dict[str, object] = {"gw": _work_rows(info._gpu_work(t), ("kind", "g", "d", "s"))}
        if t.has("api"):
            out["aw"] = _work_rows(info._api_work(t), ("g",))
        if t.has("nvtx"):
            out["nw"] = _work_rows(info._nvtx_work(t, (10**9, 2 * 10**9)), ("d", "g"))
            out["nw_all"] = _work_rows(info._nvtx_work(t), ("d", "g"))
        if t.has("kernels") and t.has("api") and t.schema.has("CUPTI_ACTIVITY_KIND_KERNEL", "correlationId"):
            out["missing"] = info._missing_launches(t)
        out["counts"] = {k: t.count(k) for k in KINDS if t.has(k)}
    return out


def _damaged_copy(tmp_path: Path) -> Path:
    """A fixture with rows of every kind the aggregates treat apart: NULL and inverted times, unknown
    timestamps, NULL devices, streams, processes, threads, correlation ids, domains, graph nodes."""
    import shutil

    path = tmp_path / "damaged.sqlite"
    shutil.copy(FIXTURES / "moe_decode_op" / "trace.sqlite", path)
    con = sqlite3.connect(path)
    k, r, n = "CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_RUNTIME", "NVTX_EVENTS"
    for table in (k, r, n):  # the same columns without NOT NULL (nsys declares some), to damage them
        con.execute(f"CREATE TABLE loose AS SELECT * FROM {table}")
        con.execute(f"DROP TABLE {table}")
        con.execute(f"ALTER TABLE loose RENAME TO {table}")
    for sql in (
        f"UPDATE {k} SET end = NULL WHERE rowid % 97 = 1",
        f"UPDATE {k} SET end = start - 5 WHERE rowid % 89 = 2",
        f"UPDATE {k} SET start = 0, end = 0 WHERE rowid % 83 = 3",
        f"UPDATE {k} SET globalPid = NULL WHERE rowid % 79 = 4",
        f"UPDATE {k} SET correlationId = NULL WHERE rowid % 73 = 5",
        f"UPDATE {k} SET graphNodeId = rowid WHERE rowid % 7 = 6",
        f"UPDATE {k} SET correlationId = correlationId + 1000000 WHERE rowid % 61 = 7",
        f"UPDATE {r} SET end = NULL WHERE rowid % 97 = 1",
        f"UPDATE {r} SET globalTid = NULL WHERE rowid % 71 = 2",
        f"UPDATE {r} SET start = 0, end = 0 WHERE rowid % 67 = 3",
        f"UPDATE {r} SET correlationId = NULL WHERE rowid % 59 = 4",
        f"UPDATE {n} SET end = NULL WHERE rowid % 13 = 1",
        f"UPDATE {n} SET domainId = NULL WHERE rowid % 11 = 2",
        f"UPDATE {n} SET end = start - 1 WHERE rowid % 17 = 3",
        f"UPDATE {n} SET globalTid = NULL WHERE rowid % 19 = 4",
    ):
        con.execute(sql)
    con.commit()
    con.close()
    return path


@pytest.mark.parametrize("path", [*_traces(), "damaged", "empty tables"], ids=lambda p: p if isinstance(p, str) else f"{p.parent.name}/{p.name}")
def test_info_aggregates_from_pages_equal_the_sql_ones(path, monkeypatch, tmp_path):
    """`info`'s aggregates (GPU work with busy time, API work, NVTX work in and out of a window, the
    launch check, table counts) from the pages equal the SQL queries', row for row (also on a copy whose
    API, memset and NVTX tables are empty)."""
    from nsysparse.trace import activity

    if path == "damaged":
        path = _damaged_copy(tmp_path)
    elif path == "empty tables":
        import shutil

        path = tmp_path / "empty.sqlite"
        shutil.copy(FIXTURES / "moe_decode_op" / "trace.sqlite", path)
        con = sqlite3.connect(path)
        for table in ("CUPTI_ACTIVITY_KIND_RUNTIME", "CUPTI_ACTIVITY_KIND_MEMSET", "NVTX_EVENTS"):
            con.execute(f"DELETE FROM {table}")
        con.commit()
        con.execute("VACUUM")
        con.close()
    answered: list[str] = []
    original = activity._columns

    def counting(trace, kind):
        got = original(trace, kind)
        if got is not None:
            answered.append(kind)
        return got

    monkeypatch.setattr(activity, "_columns", counting)
    via_pages = _all_work(path, "auto", monkeypatch)
    with open_trace(path) as t:
        has_work = any(t.has(k) for k in ("kernels", "api", "nvtx"))
    assert answered or not has_work, "the page reader answered no aggregate"
    assert via_pages == _all_work(path, "sqlite", monkeypatch)


def _root_page(path: Path, rows: int) -> tuple[bytearray, int, int]:
    """A two-column table of `rows` rows in 512-byte pages: the file's bytes, its root page number and offset."""
    _build(path, 2, [[i, i] for i in range(rows)], page_size=512)
    con = sqlite3.connect(path)
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 't'").fetchone()[0]
    con.close()
    return bytearray(path.read_bytes()), root, (root - 1) * 512


def test_refuses_a_damaged_payload_length(tmp_path):
    """A cell's payload length overwritten (it now runs past its page, and disagrees with its header): None."""
    path = tmp_path / "t.sqlite"
    data, _, page = _root_page(path, 50)
    first_cell = int.from_bytes(data[page + 8 : page + 10], "big")
    cell = page + first_cell
    data[cell] = 0x7F  # payload length 127: beyond the page for a cell near its end
    path.write_bytes(bytes(data))
    assert _read(path, "t", ["c0"]) is None


def test_a_descending_integer_key_is_not_the_rowid(tmp_path):
    """INTEGER PRIMARY KEY DESC stores its values (it is no alias of the rowid): never the rowids."""
    path = tmp_path / "t.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY DESC, v INTEGER)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(100 + 7 * i, i) for i in range(50)])
    con.commit()
    con.close()
    got = _read(path, "t", ["id", "v"])
    assert got is None or _as_rows(got, ["id", "v"]) == _sqlite_rows(path, "SELECT id, v FROM t")


def test_a_cycle_in_the_btree_is_refused(tmp_path):
    """An interior page pointing back at itself: None at once (not a level array doubling without end)."""
    path = tmp_path / "t.sqlite"
    data, root, page = _root_page(path, 5000)
    assert data[page] == 5  # an interior table page
    data[page + 8 : page + 12] = root.to_bytes(4, "big")  # its right-most child: itself
    path.write_bytes(bytes(data))
    assert _read(path, "t", ["c0"]) is None


def test_real_columns_and_long_texts_elsewhere_are_sqls(tmp_path):
    """Integers stored in a REAL column are reals to SQLite; a 1000-byte text in a column not read still
    takes a two-byte serial type: both None."""
    path = tmp_path / "t.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (c0 INTEGER, r REAL, note TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?, NULL)", [(i, i) for i in range(20)])
    con.commit()
    con.close()
    assert _read(path, "t", ["c0"]) is not None
    assert _read(path, "t", ["r"]) is None
    con = sqlite3.connect(path)
    con.execute("UPDATE t SET note = ? WHERE c0 = 3", ("z" * 1000,))
    con.commit()
    con.close()
    assert _read(path, "t", ["c0"]) is None


def test_text_coalesce_and_mixed_requests_go_to_sql(tmp_path):
    path = tmp_path / "t.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (a TEXT, b TEXT, n INTEGER)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", [("x", "y", 1), (None, "y", 2)])
    con.commit()
    con.close()
    engine = Engine(path, prefer="auto")
    try:
        assert engine.from_pages(Select("t", (Column("c", ("a", "b"), text=True),))) is None
        assert engine.from_pages(Select("t", (Column("n1", ("n",)), Column("n2", ("n",), text=True)))) is None
        assert engine.from_pages(Select("t", (Column("n", ("n",)),))) is not None
    finally:
        engine.close()


def test_activity_validity_columns_are_the_loaders():
    from nsysparse.trace import activity

    assert activity.REQUIRED == tables.REQUIRED_SOURCES


@pytest.mark.parametrize("processes", [(100,), (100, 200), (200,)])
def test_missing_launches_per_process(builder, tmp_path, monkeypatch, processes):
    """A kernel's launch is a call of its correlation id in its own process: kernels of processes 100 and
    200 share ids 1..6, and only process 100 has calls (of ids 1..4)."""
    from nsysparse.trace import info

    b = builder("2024.5")
    b.gpu()
    for pid in (100, 200):
        b.process(pid, f"p{pid}")
    for i in range(4):
        b.api(1_000 * i, 1_000 * i + 10, "cudaLaunchKernel_v7000", pid=100, tid=100)
    rows = [(pid, corr) for pid in processes for corr in range(1, 7)]
    for j, (pid, corr) in enumerate(rows):
        b.kernel(10_000 + 100 * j, 10_050 + 100 * j, "k", pid=pid, corr=corr)
    path = b.write(tmp_path / "p.sqlite")
    expected = sum(1 for pid, corr in rows if pid != 100 or corr > 4)
    for engine in ("auto", "sqlite"):
        monkeypatch.setenv("NSYSPARSE_ENGINE", engine)
        with open_trace(path) as t:
            assert info._missing_launches(t) == expected


@pytest.mark.parametrize("path", [*_traces(), "damaged"], ids=lambda p: p if isinstance(p, str) else f"{p.parent.name}/{p.name}")
def test_summary_after_loading_reads_no_page_again(path, monkeypatch, tmp_path):
    """Within `sharing_reads` (what `report` does), `summary` after the loaders takes every column from
    what they read: the same answer and notes as without sharing, and no table's pages read twice."""
    import json

    if path == "damaged":
        path = _damaged_copy(tmp_path)
    monkeypatch.setenv("NSYSPARSE_NO_CACHE", "1")
    kinds = ("kernels", "api", "memcpy", "memset", "nvtx")
    with open_trace(path) as t:  # the same steps, each read on its own (the notes come in the same order)
        for kind in kinds:
            if t.has(kind):
                getattr(t, kind)()
        alone = t.summary()
    reads: list[tuple[int, tuple[str, ...]]] = []
    original = pages.PageFile.read

    def counting(self, table, wanted, texts=(), workers=2):
        got = original(self, table, wanted, texts=texts, workers=workers)
        if got is not None:  # (a refused read, e.g. NVTX with long texts, goes to SQL)
            reads.append((table.root, tuple(wanted)))
        return got

    monkeypatch.setattr(pages.PageFile, "read", counting)
    with open_trace(path) as t:
        with t.sharing_reads():
            for kind in kinds:
                if t.has(kind):
                    getattr(t, kind)()
            loaded = len(reads)
            shared = t.summary()
        tables_read = [root for root, _ in reads]
    assert json.dumps(shared, default=str) == json.dumps(alone, default=str)
    if loaded:  # (the page reader answered the loaders)
        assert len(set(tables_read)) == len(tables_read), "a table's pages were read twice"


def test_shared_reads_answer_subsets(tmp_path):
    """Within `Engine.sharing`, a read of columns already read is answered from them, equal to what the
    pages give; a read of a column not read yet goes to the pages."""
    path = tmp_path / "t.sqlite"
    rows = [[i, None if i % 3 == 0 else i * 7, None if i % 5 == 0 else -i] for i in range(2000)]
    _build(path, 3, rows)
    fresh = Engine(path)
    try:
        direct = fresh.from_pages(Select("t", (Column("c0", ("c0",)), Column("c2", ("c2",)))))
    finally:
        fresh.close()
    engine = Engine(path)
    try:
        with engine.sharing():
            first = engine.from_pages(Select("t", (Column("c0", ("c0",)), Column("c2", ("c2",)))))
            assert engine._from_shared("t", ["c2"], []) is not None  # answered from the kept columns
            assert engine._from_shared("t", ["c1"], []) is None  # not read yet: the pages'
            again = engine.from_pages(Select("t", (Column("c2", ("c2",)),)))
            other = engine.from_pages(Select("t", (Column("c1", ("c1",)),)))
        assert engine._shared is None
    finally:
        engine.close()
    assert first is not None and direct is not None and again is not None and other is not None
    assert again["c2"].tolist() == direct["c2"].tolist() == [r[2] for r in rows]
    assert other["c1"].tolist() == [r[1] for r in rows]


@given(st.lists(st.tuples(st.sampled_from([0, 3]), st.integers(0, 2), st.sampled_from([7, 7, 9]), st.just(5)), max_size=50), st.integers(1, 4))
def test_groups_number_rows_as_a_sorted_group_by(rows, width):
    """`activity._groups`: each row's group number in ascending key order and the groups' keys, as pandas'
    sorted group-by gives them (constant keys, one varying key and several; one to four keys; no rows)."""
    from nsysparse.trace import activity

    keys = [np.array([r[i] for r in rows], dtype=np.int64) for i in range(width)]
    codes, values = activity._groups(keys)
    frame = pd.DataFrame({f"k{i}": k for i, k in enumerate(keys)})
    expected = frame.groupby(list(frame.columns), sort=True).ngroup().to_numpy() if len(rows) else np.zeros(0, np.int64)
    assert codes.tolist() == expected.tolist()
    groups = frame.drop_duplicates().sort_values(list(frame.columns))
    assert [v.tolist() for v in values] == [groups[f"k{i}"].tolist() for i in range(width)]


@given(st.lists(st.tuples(st.integers(0, 3), st.one_of(st.integers(-50, 50), st.integers(-(2**62), 2**62))), max_size=60))
def test_running_max_is_the_group_cummax(rows):
    """`activity._running_max` over rows sorted by group, small and overflowing value spans: as pandas'
    groupby().cummax()."""
    from nsysparse.trace import activity

    rows = sorted(rows, key=lambda r: r[0])
    group = np.unique(np.array([r[0] for r in rows], dtype=np.int64), return_inverse=True)[1].reshape(-1) if rows else np.zeros(0, np.int64)
    values = np.array([r[1] for r in rows], dtype=np.int64)
    expected = pd.Series(values).groupby(group).cummax().to_numpy(np.int64) if rows else values
    assert activity._running_max(values, group).tolist() == expected.tolist()


@pytest.mark.parametrize("engine", ["auto", "sqlite", "duckdb"])
def test_damaged_profiler_overhead_is_named(tmp_path, monkeypatch, engine):
    """A text in PROFILER_OVERHEAD's start (a small table, read with sqlite3 unless DuckDB is forced): one
    line naming the file and the table, exit code 1, no traceback."""
    import shutil

    from click.testing import CliRunner

    from nsysparse.cli import cli

    path = tmp_path / "t.sqlite"
    shutil.copy(FIXTURES / "moe_decode_op" / "trace.sqlite", path)
    con = sqlite3.connect(path)
    con.execute("UPDATE PROFILER_OVERHEAD SET start = '12x' WHERE rowid = (SELECT min(rowid) FROM PROFILER_OVERHEAD)")
    con.commit()
    con.close()
    monkeypatch.setenv("NSYSPARSE_ENGINE", engine)
    monkeypatch.setenv("NSYSPARSE_NO_CACHE", "1")
    res = CliRunner().invoke(cli, ["-q", "gaps", str(path)])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and str(path) in res.output and "PROFILER_OVERHEAD" in res.output


_OP = st.tuples(
    st.sampled_from(["kernel", "memcpy", "memset"]),
    st.integers(0, 3).map(lambda k: 10_000 + 1_000 * k),  # few starts: ties of start (and of end) across kinds
    st.integers(0, 2).map(lambda k: 1_000 * k),  # durations, zero included
    st.sampled_from([(0, 7, 100), (0, 13, 100), (1, 7, 100), (0, 7, 200)]),  # (device, stream, process)
    st.booleans(),  # a graph node
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(_OP, min_size=1, max_size=14), unknown=st.booleans())
@example(ops=[("memcpy", 10_000, 1_000, (0, 7, 100), False), ("kernel", 10_000, 1_000, (0, 7, 100), False)], unknown=False)
@example(
    ops=[("memset", 10_000, 2_000, (0, 7, 100), False), ("memcpy", 10_000, 2_000, (0, 13, 100), False), ("kernel", 11_000, 0, (0, 13, 100), True)], unknown=True
)
def test_gpu_work_from_pages_equals_the_sql_query(builder, tmp_path_factory, monkeypatch, ops, unknown):
    """`activity.gpu_work` (per kind and stream: rows, span, busy time, graph nodes) and the launch check
    from pages equal the SQL queries on operations of three kinds on several devices, streams and processes
    whose starts and ends tie (the busy time then goes to the kernel, then the memcpy, then the memset),
    with an unknown-timestamp row and a kernel without its launching call."""
    from nsysparse.trace import activity, info

    b = builder("2024.5")
    b.gpu(0)
    b.gpu(1)
    for kind, start, length, (device, stream, pid), node in ops:
        if kind == "kernel":
            b.kernel(start, start + length, "k", device=device, stream=stream, pid=pid, **({"graph_node": 5} if node else {}))
        elif kind == "memcpy":
            b.memcpy(start, start + length, device=device, stream=stream, pid=pid)
        else:
            b.memset(start, start + length, device=device, stream=stream, pid=pid)
    if unknown:
        b.kernel(0, 0, "unknown_ts", stream=13)
        b.kernel(20_000, 21_000, "orphan", with_api=False, pid=200)
    path = b.write(tmp_path_factory.mktemp("gw") / "t.sqlite")
    got = {}
    for engine in ("auto", "sqlite"):
        monkeypatch.setenv("NSYSPARSE_ENGINE", engine)
        with open_trace(path) as t:
            missing = info._missing_launches(t) if t.has("kernels") else None
            got[engine] = (_work_rows(info._gpu_work(t), ("kind", "g", "d", "s")), missing)
            if engine == "auto":  # the page reader's answers, not the queries' fallback
                assert activity.gpu_work(t) is not None
                assert not t.has("kernels") or activity.missing_launches(t) is not None
    assert got["auto"] == got["sqlite"]


@settings(max_examples=40, deadline=None)
@given(
    prefix=st.text("ab", min_size=0, max_size=12),
    tails=st.lists(st.text("ab\x00é", min_size=1, max_size=3), min_size=1, max_size=40),
)
def test_texts_of_one_length_told_apart_by_every_byte(tmp_path_factory, prefix, tails):
    """Texts of equal length that share their first 8 (or 16) bytes and differ after them, or only in a
    trailing NUL, each come back as themselves (the reader tells texts apart by 8-byte words)."""
    path = tmp_path_factory.mktemp("texts") / "t.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (c0 INTEGER, label TEXT)")
    width = max(len((prefix + t).encode()) for t in tails)
    labels = [(prefix + t).encode().ljust(width, b"\x00").decode("utf-8", "replace") for t in tails]  # one byte length
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, labels[i % len(labels)]) for i in range(200)])
    con.commit()
    con.close()
    got = _read(path, "t", ["c0"], texts=["label"])
    assert got is not None
    con = sqlite3.connect(path)
    con.text_factory = lambda b: b.decode("utf-8", "replace")
    want = [r[0] for r in con.execute("SELECT label FROM t")]
    con.close()
    assert list(got["label"]) == want
