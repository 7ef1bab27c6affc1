"""Gaps, bubbles, causes and serving numbers: synthetic traces with exact answers, and the fixtures."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from conftest import fixture_trace
from nsysbuilder import gtid

from nsysparse.analyses.context import AnalysisContext, StructureOptions
from nsysparse.analyses.gaps import gap_report
from nsysparse.analyses.serving import serving_metrics
from nsysparse.trace import open_trace

GEMM = "nvjet_sm90_tst_64x8_TNT"


def two_steps(b, gap_ns, *, between=None, step1_launch=None, graph=False, tid=100):
    """Step 0: kernels on [1_000_000, 1_010_000); step 1 starts gap_ns later. `between(b, a, z)` adds
    what the thread does in the gap; `step1_launch` sets when step 1's first kernel is launched."""
    b.gpu()
    t = 1_000_000
    b.push(t - 10_000, t + 9_000, "forward_0", tid=tid)
    for i in range(5):
        b.kernel(t + i * 2_000, t + i * 2_000 + 2_000, GEMM, api_start=t - 9_000 + i * 100, api_end=t - 9_000 + i * 100 + 50, tid=tid)
    a = t + 10_000
    z = a + gap_ns
    if between:
        between(b, a, z)
    l0 = z - 3_000 if step1_launch is None else step1_launch
    b.push(l0 - 100, z + 20_000, "forward_1", tid=tid)
    corr = b.api(l0, l0 + 50, "cudaGraphLaunch_v10000", tid=tid) if graph else None
    for i in range(5):
        if graph:
            b.kernel(z + i * 2_000, z + i * 2_000 + 2_000, GEMM, corr=corr, graph_node=10 + i)
        else:
            b.kernel(z + i * 2_000, z + i * 2_000 + 2_000, GEMM, api_start=l0 + i * 100, api_end=l0 + i * 100 + 50, tid=tid)
    return a, z


def report(path, **kw):
    with AnalysisContext.open(path) as ctx:
        return gap_report(ctx, **kw)


@pytest.mark.parametrize("nvtx", ["auto", "off"])
def test_host_work_gap_is_exact(builder, tmp_path, nvtx):
    b = builder()
    two_steps(b, 1_300_000)  # the seed case: 1.3 ms between two decode forwards
    path = b.write(tmp_path / "h.sqlite")
    with open_trace(path) as t:
        r = gap_report(AnalysisContext(t, options=StructureOptions(nvtx=nvtx)))
    g = r.gaps.iloc[0]
    assert g["gap_us"] == pytest.approx(1300.0)
    assert g["cause"] == "host work"
    assert g["host_us"] == pytest.approx(1297.0)  # until the launch 3 µs before the work started


def test_sync_gap(builder, tmp_path):
    def sync(b, a, z):
        b.sync(a - 1_000, z - 5_000, api_name="cudaStreamSynchronize_v3020")

    b = builder()
    two_steps(b, 800_000, between=sync)
    r = report(b.write(tmp_path / "s.sqlite"))
    assert r.gaps.iloc[0]["cause"] == "sync"
    assert r.gaps.iloc[0]["sync_us"] == pytest.approx(795.0)


def test_gpu_dependency_and_collective_wait(builder, tmp_path):
    early = 1_009_500  # step 1 launched after step 0's range closed but before its GPU work ended
    b = builder()
    two_steps(b, 500_000, step1_launch=early)
    r = report(b.write(tmp_path / "d.sqlite"))
    assert r.gaps.iloc[0]["cause"] == "gpu dependency"
    assert r.gaps.iloc[0]["gap_us"] == pytest.approx(500.0)

    def nccl_on_another_stream(b, a, z):
        # a collective of step 1 (launched early on a comm stream) spins waiting for its peers
        b.kernel(
            a + 10_000,
            z - 1_000,
            "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(x)",
            short="ncclDevKernel_AllReduce_Sum_bf16_RING_LL",
            stream=20,
            api_start=early - 80,
            api_end=early - 60,
        )

    b = builder()
    two_steps(b, 500_000, step1_launch=early, between=nccl_on_another_stream)
    r = report(b.write(tmp_path / "c.sqlite"))
    assert r.gaps.iloc[0]["cause"] == "collective wait"
    assert r.gaps.iloc[0]["gap_us"] == pytest.approx(10.0)  # GPU idle until the all-reduce kernel started


def test_graph_gaps(builder, tmp_path):
    """Idle after the graph was launched is the graph's; a CPU that slept before cudaGraphLaunch is host work."""
    b = builder("2024.5", graph_mode="Node")
    two_steps(b, 400_000, graph=True, step1_launch=1_009_500)
    assert report(b.write(tmp_path / "g.sqlite")).gaps.iloc[0]["cause"] == "graph"
    b = builder("2024.5", graph_mode="Node")
    two_steps(b, 400_000, graph=True)
    assert report(b.write(tmp_path / "h.sqlite")).gaps.iloc[0]["cause"] == "host work"


def test_launch_bound_bubbles(builder, tmp_path):
    """Inside a step, each kernel is launched 30 µs apart but runs 5 µs: 25 µs bubbles, launch-bound."""
    b = builder()
    b.gpu()
    b.push(0, 1_000_000, "forward_0")
    for i in range(20):
        s = 100_000 + i * 30_000
        b.kernel(s + 8_000, s + 13_000, GEMM, api_start=s, api_end=s + 6_000)
    r = report(b.write(tmp_path / "b.sqlite"), min_bubble_us=5)
    assert len(r.bubble_steps) == 1 and r.bubble_steps.iloc[0]["bubbles"] == 19
    assert r.bubbles["bubble_us"].round(3).eq(25.0).all()
    assert set(r.bubbles["cause"]) == {"launch-bound"}
    assert r.devices.iloc[0]["bubble_cause"] == "launch-bound"


def test_profiler_overhead_gap(builder, tmp_path):
    b = builder()
    a, z = two_steps(b, 600_000)
    b.add("PROFILER_OVERHEAD", start=a + 10_000, end=z - 10_000, globalTid=gtid(100, 100), nameId=b.sid("CUPTI buffer flush"), overheadType=0)
    orig = b._schema
    b._schema = lambda: {**orig(), "PROFILER_OVERHEAD": ["start", "end", "globalTid", "nameId", "overheadType"]}
    r = report(b.write(tmp_path / "p.sqlite"))
    assert r.gaps.iloc[0]["cause"] == "profiler"


def test_serving_worked_example():
    s = serving_metrics(forward_ms=28.5, gap_ms=0.0, accept_rate=2.3, batch=24, dp=8, target_tpot_ms=16.6)
    assert s["tpot_ms"] == pytest.approx(12.3913, abs=1e-4)
    assert s["user_tok_s"] == pytest.approx(80.70, abs=0.01)
    assert s["machine_tok_s"] == pytest.approx(24 * 8 * 2.3 / 0.0285)
    assert s["headroom_ms"] == pytest.approx(16.6 - 12.3913, abs=1e-4)
    with_gap = serving_metrics(28.5, 1.3, 2.3)
    assert with_gap["tpot_ms"] == pytest.approx(29.8 / 2.3)


def test_fixture_gaps_match_nvtx_truth_and_the_twin():
    with open_trace(fixture_trace("moe_decode_op")) as t:
        truth = gap_report(AnalysisContext(t))
        blind = gap_report(AnalysisContext(t, options=StructureOptions(nvtx="off")))
    assert len(truth.gaps) == 11 and set(truth.gaps["cause"]) == {"host work"}
    assert set(truth.gaps["host_nvtx"]) == {"host_gap"}
    diff = truth.gaps["gap_us"].to_numpy() - blind.gaps["gap_us"].to_numpy()
    assert abs(diff).max() <= 20.0
    assert set(blind.gaps["cause"]) == {"host work"}
    with open_trace(fixture_trace("moe_decode_nonvtx")) as t:
        twin = gap_report(AnalysisContext(t))
    assert len(twin.gaps) == 11 and set(twin.gaps["cause"]) == {"host work"}
    # same gaps, minus the ~140 µs the op-level NVTX ranges add before each step's first launch
    assert abs(twin.gaps["gap_us"].median() - truth.gaps["gap_us"].median()) < 0.15 * truth.gaps["gap_us"].median()
    assert twin.gaps["gap_us"].min() > 1000
    # the injected host gap is 1 ms; the measured GPU gap adds the token copy, sync and first launch
    assert 1000 < truth.gaps["gap_us"].median() < 1600


def test_gap3ms_fixture_has_larger_gaps():
    with open_trace(fixture_trace("moe_decode_op_gap3ms")) as t:
        r = gap_report(AnalysisContext(t))
    assert 3000 < r.gaps["gap_us"].median() < 3600 and set(r.gaps["cause"]) == {"host work"}


def test_cli_gaps_json_and_csv(run):
    res = run("gaps", fixture_trace("moe_decode_graph"), "-f", "json", "--accept-rate", "2.3", "--batch", "32")
    data = json.loads(res.stdout)
    assert {"devices", "gaps", "causes", "largest_bubbles", "serving", "bubbles_per_step"} <= set(data)
    assert data["serving"][0]["accept_rate"] == 2.3
    df = pd.read_csv(io.StringIO(run("gaps", fixture_trace("moe_decode_graph"), "-f", "csv").stdout))
    assert len(df) == 11 and set(df["cause"]) == {"host work"}  # the CPU slept before cudaGraphLaunch


def test_multi_device_public_pair(run):
    from conftest import public_trace

    path = public_trace("GindaChen_nsys-ai/mfu_2gpu_before.sqlite")
    data = json.loads(run("gaps", path, "-f", "json", "--batch", "1").stdout)
    assert len(data["devices"]) in (0, 2)
    if data["devices"]:
        assert data["serving"][-1]["device_id"] == -1  # the worst device
