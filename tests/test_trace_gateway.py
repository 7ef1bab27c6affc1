"""The trace gateway on synthetic exports of every schema era: versions, names, joins, degradation."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from conftest import public_trace
from nsysbuilder import ERAS, gtid

from nsysparse.trace import info, open_trace


def basic(builder, era):
    b = builder(era)
    b.gpu(0, "NVIDIA H100 80GB HBM3")
    b.kernel(10_000, 12_000, "void at::native::vectorized_elementwise_kernel<4, float>(int)", short="vectorized_elementwise_kernel")
    b.kernel(13_000, 20_000, "sm90_xmma_gemm_bf16bf16_bf16f32", short="sm90_xmma_gemm_bf16bf16_bf16f32")
    b.push(1_000, 9_000, "layer_0")
    return b


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
def test_every_era_loads_the_same_kernels(builder, tmp_path, era, engine):
    path = basic(builder, era).write(tmp_path / "t.sqlite")
    with open_trace(path, engine=engine) as t:
        k = t.kernels()
        assert list(k["start_ns"]) == [10_000, 13_000]
        assert list(k["short_name"].astype(str)) == ["vectorized_elementwise_kernel", "sm90_xmma_gemm_bf16bf16_bf16f32"]
        assert k["pid"].tolist() == [100, 100]
        assert info.gpu_name(t) == "NVIDIA H100 80GB HBM3"
        launches = t.launches()
        assert (launches["tid"] == 100).all()
        assert launches["api_name"].astype(str).tolist() == ["cudaLaunchKernel", "cudaLaunchKernel"]
        assert (launches["api_start_ns"] == launches["start_ns"] - 5_000).all()


@pytest.mark.parametrize(
    "era,product,source",
    [
        ("2021", None, "columns"),
        ("2022.2", "2022.2.1.31", "EXPORT_META_DATA"),
        ("2023.1", "2023.1.2.43", "EXPORT_META_DATA"),
        ("2024.5", "2024.5.1.113", "META_DATA_EXPORT"),
        ("2026.2", "2026.2.1.210", "META_DATA_EXPORT"),
    ],
)
def test_version_detection(builder, tmp_path, era, product, source):
    path = basic(builder, era).write(tmp_path / "t.sqlite")
    with open_trace(path) as t:
        assert t.version.product == product
        assert t.version.source == source
        if product is None:
            assert "2021" in t.version.era


def test_nvtx_text_and_textid_are_both_resolved(builder, tmp_path):
    b = builder("2024.5")
    b.gpu()
    b.kernel(10_000, 11_000, "k")
    b.push(100, 900, "inline_text")
    b.push(200, 800, "ncclAllReduce", registered=True, domain=1)
    b.domain(1, "NCCL")
    path = b.write(tmp_path / "t.sqlite")
    with open_trace(path) as t:
        n = t.nvtx()
        assert sorted(n["text"].astype(str)) == ["inline_text", "ncclAllReduce"]
        dom = dict(zip(n["text"].astype(str), n["domain"].astype(str)))
        assert dom == {"inline_text": "default", "ncclAllReduce": "NCCL"}
        assert set(n["kind"].astype(str)) == {"push_pop"}


def test_correlation_join_requires_same_process(builder, tmp_path):
    """Two processes reuse correlationId 1: each kernel must join its own process's launch."""
    b = builder("2024.5")
    b.gpu()
    b.api(1_000, 2_000, "cudaLaunchKernel_v7000", pid=100, tid=101, corr=1)
    b.api(5_000, 6_000, "cudaLaunchKernel_v7000", pid=200, tid=201, corr=1)
    b.kernel(10_000, 11_000, "a", pid=100, corr=1)
    b.kernel(12_000, 13_000, "b", pid=200, corr=1, device=1)
    path = b.write(tmp_path / "t.sqlite")
    with open_trace(path) as t:
        la = t.launches().set_index(t.launches()["short_name"].astype(str))
        assert la.loc["a", "tid"] == 101 and la.loc["a", "api_start_ns"] == 1_000
        assert la.loc["b", "tid"] == 201 and la.loc["b", "api_start_ns"] == 5_000


@pytest.mark.parametrize("order", ["correlation", "reversed"])
def test_calls_of_one_process_match_no_kernel_of_another(builder, tmp_path, order):
    """Every call in one process (its keys are then the bare correlation ids): a kernel of another process
    with a call's correlationId has no launch, a kernel of the calls' process has its own, and ids past
    32 bits compare by their low 32 bits, as (pid << 32) | id does."""
    b = builder("2024.5")
    b.gpu()
    corrs = [1, 2, 3] if order == "correlation" else [3, 2, 1]
    for i, c in enumerate(corrs):
        b.api(1_000 * (i + 1), 1_000 * (i + 1) + 100, "cudaLaunchKernel_v7000", pid=100, tid=101, corr=c)
    b.kernel(10_000, 11_000, "own", pid=100, corr=2, with_api=False)
    b.kernel(12_000, 13_000, "other", pid=200, corr=1, with_api=False)
    b.kernel(14_000, 15_000, "wide", pid=100, corr=3 + (1 << 32), with_api=False)
    path = b.write(tmp_path / "t.sqlite")
    with open_trace(path) as t:
        la = t.launches()
        got = {str(n): (bool(h), int(a)) for n, h, a in zip(la["short_name"], la["has_launch"], la["api_start_ns"])}
    assert got["own"] == (True, 1_000 * (corrs.index(2) + 1))
    assert got["wide"] == (True, 1_000 * (corrs.index(3) + 1))
    assert got["other"][0] is False


@pytest.mark.parametrize("order", ["correlation", "reversed"])
def test_launch_join_whatever_the_order_of_calls(builder, tmp_path, order):
    """Calls in correlation order (joined without a sort) or not (sorted first): each kernel gets its own call."""
    b = builder("2024.5")
    b.gpu()
    corrs = list(range(1, 9)) if order == "correlation" else list(range(8, 0, -1))
    for i, c in enumerate(corrs):
        b.api(1_000 * (i + 1), 1_000 * (i + 1) + 100, "cudaLaunchKernel_v7000", tid=101 + c % 2, corr=c)
    for c in range(1, 9):
        b.kernel(100_000 + 1_000 * c, 100_500 + 1_000 * c, f"k{c}", corr=c)
    path = b.write(tmp_path / "t.sqlite")
    with open_trace(path) as t:
        la = t.launches()
        got = {str(n): (int(a), int(tid)) for n, a, tid in zip(la["short_name"], la["api_start_ns"], la["tid"])}
    assert got == {f"k{c}": (1_000 * (corrs.index(c) + 1), 101 + c % 2) for c in range(1, 9)}


def test_backtrace_duplicates_of_the_public_capture_are_dropped():
    """The 2022.2 pipit capture (--cudabacktrace) holds 38 class-67 rows duplicating real calls."""
    path = public_trace("hpcgroup_pipit/saxpy-mpi-cuda_nsys_perlmutter0.sqlite")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    want = con.execute('SELECT count(*) FROM CUPTI_ACTIVITY_KIND_RUNTIME WHERE eventClass IN (0, 1) AND "end" >= start').fetchone()[0]
    dup = con.execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_RUNTIME WHERE eventClass = 67").fetchone()[0]
    con.close()
    assert dup > 0
    with open_trace(path) as t:
        assert len(t.api()) == want


def test_backtrace_duplicates_are_dropped(builder, tmp_path):
    b = builder("2022.2")
    b.gpu()
    corr = b.kernel(10_000, 11_000, "k")
    b.api(4_000, 4_500, "cudaLaunchKernel", corr=corr, event_class=67)  # --cudabacktrace duplicate
    path = b.write(tmp_path / "t.sqlite")
    with open_trace(path) as t:
        assert len(t.api()) == 1
        assert t.launches()["api_start_ns"].tolist() == [5_000]


def test_negative_timestamps_are_valid_and_zero_rows_dropped(builder, tmp_path):
    b = builder("2024.5")
    b.gpu()
    b.kernel(-5_000, -4_000, "early", api_start=-9_000)
    b.kernel(0, 0, "unknown_ts")
    b.kernel(1_000, 2_000, "late")
    path = b.write(tmp_path / "t.sqlite")
    with open_trace(path) as t:
        k = t.kernels()
        assert k["start_ns"].tolist() == [-5_000, 1_000]
        assert any("unknown timestamps" in n for n in t.notes)


def test_graph_node_kernels_share_one_launch(builder, tmp_path):
    b = builder("2024.5", graph_mode="Node")
    b.gpu()
    corr = b.api(1_000, 1_500, "cudaGraphLaunch_v10000", tid=100)
    for i in range(3):
        b.kernel(10_000 + i * 1_000, 10_500 + i * 1_000, f"k{i}", corr=corr, graph_node=i + 1)
    path = b.write(tmp_path / "t.sqlite")
    with open_trace(path) as t:
        assert t.capture_mode() == "node"
        la = t.launches()
        assert la["api_name"].astype(str).unique().tolist() == ["cudaGraphLaunch"]
        assert (la["graph_node_id"] > 0).all()
        assert info.graph_launches(t) == 1


def test_missing_tables_degrade_with_explanations(builder, tmp_path):
    b = builder("2024.5")
    b.gpu()
    b.kernel(1_000, 2_000, "k", with_api=False)
    path = b.write(tmp_path / "t.sqlite")
    with open_trace(path) as t:
        assert not t.has("api") and not t.has("nvtx")
        la = t.launches()
        assert la["has_launch"].tolist() == [False]
        assert any("no CUDA API table" in n for n in t.notes)
        s = info.summary(t)
        assert "nvtx" in s["missing_tables"] and "api" in s["missing_tables"]


def test_time_slice_is_detected_from_missing_launches(builder, tmp_path):
    b = builder("2024.5")
    b.gpu()
    b.kernel(1_000, 2_000, "k")
    b.kernel(3_000, 4_000, "orphan", with_api=False)
    path = b.write(tmp_path / "t.sqlite")
    with open_trace(path) as t:
        sliced, why = info.slice_status(t)
        assert sliced and "1 of 2" in why


def test_global_ids_decode():
    from nsysparse.trace.ids import pid_of, tid_of

    g = np.array([gtid(1230493, 1230493), gtid(7, 42)], dtype=np.int64)
    assert pid_of(g).tolist() == [1230493, 7]
    assert tid_of(g).tolist() == [1230493, 42]
    assert int(pid_of(g[0])) == int(pid_of(np.int64(g[0]))) == 1230493  # a scalar too
    assert pid_of(g) is not g and g.tolist() == [gtid(1230493, 1230493), gtid(7, 42)]  # the ids are left as they were


def test_info_summary_of_streams_and_processes(builder, tmp_path):
    b = builder("2024.5")
    b.gpu(0)
    b.process(100, "/home/alice-secret/venv/bin/python3")
    b.kernel(1_000, 3_000, "a", stream=7)
    b.kernel(2_000, 4_000, "b", stream=7)
    b.kernel(1_000, 2_000, "c", stream=13)
    b.memcpy(5_000, 6_000, stream=13)
    path = b.write(tmp_path / "t.sqlite")
    with open_trace(path) as t:
        s = info.summary(t)
    streams = {(r["stream_id"]): r for r in s["streams"]}
    assert streams[7]["busy_ms"] == pytest.approx(0.003)
    assert streams[13]["kernels"] == 1 and streams[13]["memcpy"] == 1
    assert s["processes"][0]["name"] == "python3"  # base name only: paths can hold user names
    assert s["tables"]["kernels"] == 3


@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
def test_nvtx_text_and_domain_match_sql(builder, tmp_path, monkeypatch, engine):
    """Inline texts, registered (textId) texts, a value that is both, an unknown id, NULLs, named and unnamed
    domains: per row, the loaded text is COALESCE(text, StringIds.value) and the domain the NvtxDomainCreate
    name (else "default" / "domain N"), computed here in SQL; categories in order of first appearance."""
    monkeypatch.setenv("NSYSPARSE_ENGINE", engine)
    b = builder("2024.5")
    b.gpu()
    b.domain(5, "NCCL", pid=100)
    t = 1_000
    for i in range(30):
        text = ("fwd", "layer_3", "nccl:AllReduce", "fwd")[i % 4]
        b.push(t, t + 500, text, registered=i % 3 == 0, domain=(0, 5, 7)[i % 3], tid=100 + i % 2)
        t += 1_000
    b.mark(t, "ckpt")
    path = b.write(tmp_path / "t.sqlite")
    con = sqlite3.connect(path)
    con.execute("UPDATE NVTX_EVENTS SET textId = 987654 WHERE rowid = (SELECT min(rowid) FROM NVTX_EVENTS WHERE textId IS NOT NULL)")
    con.execute("UPDATE NVTX_EVENTS SET text = NULL, textId = NULL WHERE rowid = (SELECT max(rowid) FROM NVTX_EVENTS WHERE eventType = 59)")
    con.commit()
    rows = con.execute(
        "SELECT n.start, COALESCE(n.text, s.value), CASE WHEN n.domainId = 5 THEN 'NCCL' WHEN n.domainId = 0 THEN 'default' "
        "ELSE 'domain ' || n.domainId END FROM NVTX_EVENTS n LEFT JOIN StringIds s ON s.id = n.textId WHERE n.eventType IN (59, 34) ORDER BY n.start"
    ).fetchall()
    con.close()
    with open_trace(path) as tr:
        loaded = tr.nvtx()
    n = loaded.sort_values("start_ns", kind="stable")
    got = [(int(a), None if pd.isna(x) else str(x), str(d)) for a, x, d in zip(n["start_ns"], n["text"], n["domain"])]
    assert got == [(int(a), x, d) for a, x, d in rows]
    cats = list(loaded["text"].cat.categories)
    assert cats == list(dict.fromkeys(x for x in loaded["text"] if not pd.isna(x)))
    assert set(cats) == {x for _, x, _ in rows if x is not None}


def test_with_columns_keeps_places_and_shares_memory():
    """`tables.with_columns`: a column of the same name keeps its place, new ones come last, and neither the
    added arrays nor the frame's own columns are copied (assigning columns one by one would copy each)."""
    from nsysparse.trace import tables

    a, b = np.arange(5, dtype=np.int64), np.arange(5, 10, dtype=np.int64)
    frame = pd.DataFrame({"a": a, "b": b}, copy=False)
    new_b, c = np.full(5, 7, dtype=np.int64), np.ones(5, dtype=bool)
    out = tables.with_columns(frame, {"c": c, "b": new_b})
    assert list(out.columns) == ["a", "b", "c"]
    assert out["b"].tolist() == [7] * 5 and frame["b"].tolist() == list(range(5, 10))
    assert np.shares_memory(out["b"].to_numpy(), new_b) and np.shares_memory(out["c"].to_numpy(), c)
    assert np.shares_memory(out["a"].to_numpy(), frame["a"].to_numpy())


def test_api_frame_derives_pid_and_tid_only_when_asked(builder, tmp_path):
    """The CUDA API frame leaves out pid and tid unless they are asked for (the analyses derive them from
    global_tid); asked, they are the global id's fields, as SQL decodes them; the launches still carry tid."""
    b = builder("2024.5")
    b.gpu()
    for i, (pid, tid) in enumerate([(100, 101), (100, 102), (300, 7)]):
        b.api(1_000 * (i + 1), 1_000 * (i + 1) + 100, "cudaLaunchKernel_v7000", pid=pid, tid=tid, corr=i + 1)
        b.kernel(10_000 + 1_000 * i, 10_500 + 1_000 * i, f"k{i}", pid=pid, corr=i + 1, with_api=False)
    path = b.write(tmp_path / "t.sqlite")
    con = sqlite3.connect(path)
    want = con.execute('SELECT ("globalTid" >> 24) & 16777215, "globalTid" & 16777215 FROM CUPTI_ACTIVITY_KIND_RUNTIME ORDER BY "start"').fetchall()
    con.close()
    with open_trace(path) as t:
        assert "pid" not in t.api().columns and "tid" not in t.api().columns
        la = t.launches()
        assert [int(x) for x in la["tid"]] == [tid for _, tid in want]
        api = t.api(("start_ns", "global_tid", "pid", "tid"))
        assert list(zip(api["pid"].astype(int), api["tid"].astype(int))) == want
        assert t.api(("pid",)) is api  # already loaded: no second read
        k = t.kernels()
        assert t.kernels(("pid", "tid")) is k  # other tables: the derived names are no request to read again


def test_calls_of_one_process_told_from_their_ids_whatever_the_bits_above(builder, tmp_path):
    """Thread ids that differ above the pid's bits (another VM id): the least and the largest id are of one
    process (100) while an id between them is of another (300), so the calls are joined through
    (pid, correlationId) keys; each kernel gets its own process's call, one of a process without that
    call none, and a kernel with no call has tid -1."""
    b = builder("2024.5")
    b.gpu()
    b.api(1_000, 1_100, "cudaLaunchKernel_v7000", pid=100, tid=101, corr=1)
    b.api(2_000, 2_100, "cudaLaunchKernel_v7000", pid=100, tid=102, corr=2)
    b.api(3_000, 3_100, "cudaLaunchKernel_v7000", pid=300, tid=301, corr=3)  # between them: another process
    b.kernel(10_000, 10_500, "own", pid=100, corr=2, with_api=False)
    b.kernel(13_000, 13_500, "third", pid=300, corr=3, with_api=False)
    b.kernel(11_000, 11_500, "other", pid=200, corr=1, with_api=False)
    b.kernel(12_000, 12_500, "none", pid=100, corr=9, with_api=False)
    path = b.write(tmp_path / "t.sqlite")
    con = sqlite3.connect(path)
    con.execute('UPDATE CUPTI_ACTIVITY_KIND_RUNTIME SET "globalTid" = "globalTid" + (1 << 49) WHERE "correlationId" = 2')
    con.commit()
    con.close()
    with open_trace(path) as t:
        la = t.launches()
        got = {str(n): (bool(h), int(a), int(tid)) for n, h, a, tid in zip(la["short_name"], la["has_launch"], la["api_start_ns"], la["tid"])}
    assert got["own"] == (True, 2_000, 102)
    assert got["third"] == (True, 3_000, 301)
    assert got["other"][0] is False and got["other"][2] == -1
    assert got["none"][0] is False and got["none"][2] == -1
