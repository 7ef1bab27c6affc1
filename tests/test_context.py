"""The analysis context: rules loaded once per command, one device selection, frozen mappings."""

from __future__ import annotations

import pytest
from conftest import FIXTURES, fixture_trace

from nsysparse.analyses.context import AnalysisContext
from nsysparse.analyses.ops import op_summary
from nsysparse.rules import load as rules_load

GEMM = "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas"
NORM = "void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float>(int, float, const float *, float *)"


@pytest.fixture
def rule_loads(monkeypatch):
    """Counts load_rules() calls: each reads the vocabulary exactly once."""
    calls = []
    real = rules_load.load_vocabulary

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(rules_load, "load_vocabulary", counting)
    return calls


MANIFEST = str(FIXTURES / "dense_decode_op" / "manifest.json")
TRACE = fixture_trace("dense_decode_op")
OTHER = fixture_trace("moe_decode_op")


@pytest.mark.parametrize(
    ("args", "loads"),
    [
        (("ops", TRACE), 1),
        (("layers", TRACE), 1),
        (("steps", TRACE), 1),
        (("gaps", TRACE), 1),
        (("mfu", TRACE, "--model", MANIFEST), 1),
        (("compare", TRACE, OTHER, "--force"), 1),
        (("rules", "check", TRACE), 1),
        (("kernels", TRACE), 0),
        (("info", TRACE), 0),
    ],
    ids=lambda v: v[0] if isinstance(v, tuple) else str(v),
)
def test_each_command_loads_its_rules_once(run, rule_loads, args, loads):
    run(*args, expect=None)
    assert len(rule_loads) == loads


def test_report_with_a_baseline_loads_its_rules_once(run, rule_loads, tmp_path):
    run("report", TRACE, "-o", tmp_path / "r.html", "--baseline", TRACE)
    assert len(rule_loads) == 1


def two_gpus(builder, tmp_path):
    """Process 100 runs two NVTX steps on GPU 0 (gemm + norm), process 200 two on GPU 1 (gemm only)."""
    b = builder()
    b.gpu(0)
    b.gpu(1)
    for pid, dev, names in ((100, 0, (GEMM, NORM)), (200, 1, (GEMM,))):
        for s in range(2):
            t = 1_000_000 + s * 100_000
            b.push(t, t + 50_000, f"forward_{s}", pid=pid, tid=pid)
            for i, name in enumerate(names):
                a = t + 10_000 + i * 5_000
                b.kernel(a, a + 4_000, name, device=dev, pid=pid, tid=pid, api_start=t + 100 + i * 10, api_end=t + 105 + i * 10)
    return b.write(tmp_path / "two.sqlite")


def test_device_selection_is_applied_once_and_never_stale(builder, tmp_path):
    path = two_gpus(builder, tmp_path)
    with AnalysisContext.open(path) as both, AnalysisContext.open(path, device_id=1) as one:
        all_ops = op_summary(both)
        gpu1 = op_summary(one)
        full = both.mapping
        _ = full.op_instances  # computed (and cached) on the full mapping first
        narrowed = full.on_device(1)
    k = full.kernels
    assert set(narrowed.kernels["device_id"]) == {1}
    # the narrowed copy computes its own op instances: only GPU 1's kernels, not the cached full table
    assert narrowed.op_instances["kernels"].sum() == (k["device_id"] == 1).sum() == 2
    assert full.op_instances["kernels"].sum() == len(k) == 6
    assert len(one.mapping.steps) == 2 and set(one.mapping.steps["device_id"]) == {1}
    assert set(gpu1["op"]) < set(all_ops["op"])


def test_an_absent_device_is_an_error_listing_the_present_ones(run, builder, tmp_path):
    path = two_gpus(builder, tmp_path)
    res = run("ops", path, "--device", "5", expect=2)
    assert "--device 5" in res.output and "GPUs present: 0, 1" in res.output
    assert res.output.strip().count("\n") == 0


def test_mapping_is_frozen(builder, tmp_path):
    with AnalysisContext.open(two_gpus(builder, tmp_path)) as ctx:
        m = ctx.mapping
    with pytest.raises(AttributeError):
        m.steps = m.steps  # type: ignore[misc]


def test_one_step_period_for_steps_mfu_and_serving(run):
    """steps, mfu and the serving numbers report the same step period: the median start-to-next-start
    of the steps table, recomputed here from the steps CSV."""
    import io
    import json

    import numpy as np
    import pandas as pd

    trace = fixture_trace("dense_train_step")
    steps = pd.read_csv(io.StringIO(run("steps", trace, "-f", "csv").stdout))
    expected_ms = float(np.median(np.diff(steps.sort_values("start_ms")["start_ms"].to_numpy())))
    mfu = json.loads(run("mfu", trace, "--model", str(FIXTURES / "dense_train_step" / "manifest.json"), "-f", "json").stdout)
    assert mfu["step_time_ms"] == pytest.approx(expected_ms, rel=1e-9)
    serving = json.loads(run("gaps", trace, "--accept-rate", "1", "-f", "json").stdout)["serving"][0]
    assert serving["step_period_ms"] == pytest.approx(expected_ms, rel=1e-9)
    assert serving["tpot_ms"] == pytest.approx(expected_ms, rel=1e-9)
    assert f"median {expected_ms * 1e3:.1f} µs" in run("steps", trace).output
