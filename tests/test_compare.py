"""Trace-vs-trace diff: verdicts, noise, comparability, exit codes, and the real pairs."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from conftest import fixture_trace, public_trace

from nsysparse.analyses.compare import COLUMNS, Profile, compare_profiles
from nsysparse.columns import validate_frame


def decode_trace(builder, path, *, steps=6, fmha_us=(100.0,), gemm_name="nvjet_sm90_tst_64x8_TNT", gap_us=500.0, gpu="NVIDIA H100 80GB HBM3", layers=2, seed=0):
    """NVTX forward_i > layer_j_dense > {fmha, o_proj}, one kernel each; fmha_us cycles over steps (µs)."""
    rng = np.random.default_rng(seed)
    b = builder("2024.5")
    b.gpu(0, gpu)
    t = 1_000_000
    for i in range(steps):
        t0 = t
        for j in range(layers):
            b.push(t + 10, t + 70, f"layer_{j}_dense")
            b.push(t + 20, t + 40, "fmha")
            f = int(fmha_us[i % len(fmha_us)] * 1000 + rng.integers(-300, 300))
            b.kernel(t + 30_000, t + 30_000 + f, "void flash::flash_fwd_kernel<T>()", short="flash_fwd_kernel", api_start=t + 25, api_end=t + 35)
            b.push(t + 50, t + 70, "o_proj")
            g0 = t + 30_000 + f + 2_000
            b.kernel(g0, g0 + 20_000, gemm_name, api_start=t + 55, api_end=t + 65)
            t = g0 + 20_000
        b.push(t0, t0 + 71 + (t - t0), f"forward_{i}")
        t += int(gap_us * 1000)
    return b.write(path)


def profile_of(samples, **kw):
    rows = [("step", "wall", v) for v in samples]
    df = pd.DataFrame(rows, columns=["section", "key", "value"]).assign(judged=True, higher_is_better=False)
    return Profile(df, kw.get("gpu", "H100"), kw.get("steps", len(samples)), kw.get("layers", {"dense": 2}), "nvtx", "nvtx")


def test_fixture_against_itself_is_neutral(run):
    p = fixture_trace("moe_decode_op")
    data = json.loads(run("compare", p, p, "-f", "json").stdout)
    assert data["verdict"] == "neutral" and data["comparable"] and data["regressions"] == 0
    rows = pd.DataFrame(data["rows"])
    validate_frame(rows.assign(base_n=rows["base_n"].astype(int), new_n=rows["new_n"].astype(int)), COLUMNS)
    assert (rows["delta_us"] == 0).all()
    assert {"step", "gaps", "layer", "op", "kernel"} <= set(rows["section"])
    assert {"moe/fmha", "moe/dispatch", "dense/mlp_up", "mtp/moe_up"} <= set(rows.loc[rows["section"] == "op", "key"])


def test_a_faster_run_with_a_longer_gap_is_an_improvement(run):
    """gap3ms sleeps 3 ms between forwards instead of 1 ms, but its steps run 8 ms faster (the base capture
    of this launch-bound eager decode launched slower): the step period is 24 % shorter. The verdict follows
    the step period; the longer gap is a cause that did not cost step time (issue 14, item 12: this was
    REGRESSION, exit 3)."""
    base, new = fixture_trace("moe_decode_op"), fixture_trace("moe_decode_op_gap3ms")
    res = run("compare", base, new, "-f", "markdown", expect=0)
    assert "**verdict**: IMPROVEMENT" in res.stdout
    assert "**causes**:" in res.stdout and "gaps inter-step gap +1938.2 µs (regression)" in res.stdout
    data = json.loads(run("compare", base, new, "-f", "json", expect=0).stdout)
    assert data["verdict"] == "improvement" and data["step_time"]["key"] == "period"
    assert data["step_time"]["delta_pct"] == pytest.approx(-24.4, abs=0.1)
    rows = pd.DataFrame(data["rows"]).set_index(["section", "key"])
    gap = rows.loc[("gaps", "inter-step gap")]
    assert gap["verdict"] == "regression" and 1500 < gap["delta_us"] < 2500  # 1 ms -> 3 ms host sleep
    assert any("got slower without costing step time" in n and "gaps inter-step gap +1938.2 µs" in n for n in data["notes"]), data["notes"]
    # the GPU work per step is the same program: no op regresses
    ops = rows.loc["op"]
    assert not (ops["verdict"] == "regression").any(), ops[ops["verdict"] != "neutral"]
    # reversed, the step period is 32 % longer: a regression (exit 3), its causes named
    res = run("compare", new, base, "-f", "json", expect=3)
    rev = json.loads(res.stdout)
    assert rev["verdict"] == "regression" and rev["step_time"]["delta_pct"] == pytest.approx(32.2, abs=0.2)
    assert "Regression: step period +5898.8 µs (+32.2 %) beyond threshold and noise; causes: " in res.stderr, res.stderr
    assert "gaps idle inside step +7952.8 µs" in res.stderr
    assert pd.DataFrame(rev["rows"]).set_index(["section", "key"]).loc[("gaps", "inter-step gap"), "verdict"] == "improvement"


def test_public_before_after_pair(run):
    before = public_trace("GindaChen_nsys-ai/mfu_2gpu_before.sqlite")
    after = public_trace("GindaChen_nsys-ai/mfu_2gpu_after.sqlite")
    res = run("compare", before, after, "-f", "json", expect=None)
    assert res.exit_code in (0, 3)
    data = json.loads(res.stdout)
    assert data["comparable"]
    rows = pd.DataFrame(data["rows"]).set_index(["section", "key"])
    # 2 GPUs, inferred steps (one repeating unit of 119 kernels), aten-level NVTX op names; these are time-window
    # slices, so each GPU's sequence begins and ends inside an iteration: only whole iterations are steps
    # (which rotation of the repeating unit is the iteration is the analysis's call: the count can be one lower
    # per GPU than the best alignment's, never higher)
    for path, side in ((before, "base"), (after, "new")):
        assert whole_iterations(path) - 2 <= data[side]["steps"] <= whole_iterations(path)
    ops = [k for s, k in rows.index if s == "op"]
    assert any(k.split("/")[-1] == "flash_attn_flash_attn_forward" for k in ops) and any(k.split("/")[-1] == "aten_addmm" for k in ops)
    period = rows.loc[("step", "period")]
    expected = (iteration_period_us(after) / iteration_period_us(before) - 1) * 100
    assert period["delta_pct"] == pytest.approx(expected, abs=1.0)


def iteration_period_us(path) -> float:
    """The median iteration period, independently: per GPU, the start-to-start spacing of a kernel name that occurs
    exactly once per iteration (constant spacing in the kernel sequence), all GPUs pooled."""
    import sqlite3
    import statistics

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = con.execute("SELECT deviceId, shortName, start FROM CUPTI_ACTIVITY_KIND_KERNEL ORDER BY deviceId, start").fetchall()
    con.close()
    periods = []
    for dev in sorted({d for d, _, _ in rows}):
        seq = [(n, t) for d, n, t in rows if d == dev]
        names = [n for n, _ in seq]
        best = None
        for name in set(names):
            pos = [i for i, n in enumerate(names) if n == name]
            if len(pos) >= 3 and len({b - a for a, b in itertools.pairwise(pos)}) == 1 and (best is None or pos[1] - pos[0] > best[1] - best[0]):
                best = pos
        periods += [(seq[b][1] - seq[a][1]) / 1e3 for a, b in itertools.pairwise(best)]
    return statistics.median(periods)


def whole_iterations(path) -> int:
    """Whole iterations of each GPU's kernel sequence, counted independently with SQL and plain Python: the
    iteration length is the spacing of the kernel names that recur at one constant spacing; at the best alignment,
    the whole windows of that length that equal the most common window are the iterations."""
    import sqlite3
    from collections import Counter

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = con.execute("SELECT deviceId, shortName FROM CUPTI_ACTIVITY_KIND_KERNEL ORDER BY deviceId, start").fetchall()
    con.close()
    total = 0
    for dev in sorted({d for d, _ in rows}):
        names = [n for d, n in rows if d == dev]
        spacings = []
        for name in set(names):
            pos = [i for i, n in enumerate(names) if n == name]
            gaps = {b - a for a, b in itertools.pairwise(pos)}
            if len(pos) >= 3 and len(gaps) == 1:
                spacings.append(gaps.pop())
        period = max(spacings)
        best = 0
        for o in range(period):
            windows = [tuple(names[i : i + period]) for i in range(o, len(names) - period + 1, period)]
            best = max(best, Counter(windows).most_common(1)[0][1])
        total += best
    return total


def test_structure_or_gpu_mismatch_is_not_comparable(run, builder, tmp_path):
    dense, moe = fixture_trace("dense_decode_op"), fixture_trace("moe_decode_op")
    res = run("compare", dense, moe, expect=1)
    assert "not comparable: different structure" in res.output
    forced = run("compare", dense, moe, "--force", "-f", "json", expect=None)
    assert forced.exit_code in (0, 3) and json.loads(forced.stdout)["comparable"] is False
    a = decode_trace(builder, tmp_path / "a.sqlite")
    h = decode_trace(builder, tmp_path / "h.sqlite", gpu="NVIDIA H200")
    assert "different GPUs" in run("compare", a, h, expect=1).output
    two = decode_trace(builder, tmp_path / "two.sqlite", steps=2)
    assert "only 2 steps in new, fewer than --min-steps 3" in run("compare", a, two, expect=1).output
    # a trace where no steps are found: the comparison says the structure was not found
    b = builder()
    b.gpu()
    for i in range(3):
        b.kernel(1_000_000 + i * 10_000, 1_000_000 + i * 10_000 + 2_000, f"k{i}", api_start=999_000 + i * 10_000, api_end=999_100 + i * 10_000)
    flat = b.write(tmp_path / "flat.sqlite")
    assert "no step structure was found in new" in run("compare", a, flat, expect=1).output


def test_renamed_kernel_inside_an_op_is_not_a_change(run, builder, tmp_path):
    a = decode_trace(builder, tmp_path / "a.sqlite", seed=1)
    b = decode_trace(builder, tmp_path / "b.sqlite", gemm_name="nvjet_sm90_tst_128x16_NNT", seed=2)
    data = json.loads(run("compare", a, b, "-f", "json").stdout)
    rows = pd.DataFrame(data["rows"])
    assert data["verdict"] == "neutral"
    assert set(rows.loc[rows["section"] == "op", "key"]) == {"dense/fmha", "dense/o_proj"}
    k = rows[rows["section"] == "kernel"]
    assert set(k["verdict"]) == {"info"} and "nvjet_sm90_tst_128x16_NNT" in set(k["key"])


def test_slower_op_is_found_and_named(run, builder, tmp_path):
    a = decode_trace(builder, tmp_path / "a.sqlite", fmha_us=(100.0,))
    b = decode_trace(builder, tmp_path / "b.sqlite", fmha_us=(130.0,))  # +60 µs on an 800 µs step: +7.5 %
    res = run("compare", a, b, "-f", "json", expect=3)
    assert "causes: op dense/fmha +" in res.stderr, res.stderr
    rows = pd.DataFrame(json.loads(res.stdout)["rows"]).set_index(["section", "key"])
    assert rows.loc[("op", "dense/fmha"), "verdict"] == "regression"
    assert rows.loc[("op", "dense/fmha"), "delta_us"] == pytest.approx(2 * 30.0, abs=1.0)  # two layers per step
    assert rows.loc[("op", "dense/o_proj"), "verdict"] == "neutral"
    # a looser threshold and floor hide it
    assert run("compare", a, b, "--threshold", "50", "-f", "json").exit_code == 0


def test_noise_from_step_variance():
    noisy_base = profile_of([100, 140, 60, 120, 80, 100])
    noisy_new = profile_of([110, 150, 70, 130, 90, 110])  # +10 % but within the spread
    c = compare_profiles(noisy_base, noisy_new, threshold_pct=5, min_us=1)
    row = c.table.iloc[0]
    assert row["verdict"] == "neutral" and row["noise_us"] > row["delta_us"]
    steady_new = profile_of([110.0] * 6)
    steady_base = profile_of([100.0] * 6)
    assert compare_profiles(steady_base, steady_new, threshold_pct=5, min_us=1).verdict == "regression"
    assert compare_profiles(steady_base, steady_new, threshold_pct=5, min_us=20).verdict == "neutral"
    assert compare_profiles(steady_new, steady_base, threshold_pct=5, min_us=1).verdict == "improvement"
    # higher is better for TFLOP/s rows, which are informational anyway
    assert compare_profiles(profile_of([1.0] * 3), profile_of([1.0] * 3, gpu="B200")).verdict == "not comparable"
