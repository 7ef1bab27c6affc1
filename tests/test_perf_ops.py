"""The coded op instances, ops and layers give what straightforward pandas group-bys give (synthetic kernels with
repeated runs, several sources per instance and ties, kernels outside steps; and the fixtures)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import fixture_trace

from nsysparse import intervals
from nsysparse.analyses.context import AnalysisContext
from nsysparse.analyses.instances import CodeGroups, coded_instances
from nsysparse.analyses.layers import layer_report, union_per_step
from nsysparse.analyses.ops import op_summary
from nsysparse.structure.instances import coded_op_instances, op_instances

OPS = ["attn_norm", "q_proj", "rope", "fmha", "o_proj", "mlp", "embed", "lm_head", "sampling"]


def dominant(values: pd.Series, weights: pd.Series) -> str:
    """The value carrying the most weight (ties: the first in sort order), by pandas."""
    if len(values) == 0:
        return ""
    w = pd.Series(np.asarray(weights, dtype=float), index=np.asarray(values, dtype=object))
    return str(w.groupby(level=0).sum().idxmax())


def synthetic_kernels(seed: int, sorted_start: bool = True) -> pd.DataFrame:
    """Kernels in time order: steps of layers of ops; some ops run twice in a layer (non-consecutive runs), some
    instances mix naming sources (with equal times: ties), some kernels lie outside steps."""
    rng = np.random.default_rng(seed)
    rows = []
    t = 0
    layer_id = 0
    for step in range(int(rng.integers(1, 6))):
        for lay in range(-1, int(rng.integers(0, 5))):
            kind = "" if lay < 0 else str(rng.choice(["dense", "moe", "mtp"]))
            lid = -1 if lay < 0 else layer_id
            layer_id += lay >= 0
            for _ in range(int(rng.integers(1, 12))):
                op = str(rng.choice(OPS))
                src = str(rng.choice(["nvtx", "template", "class", "unmapped"], p=[0.7, 0.1, 0.1, 0.1]))
                dur = int(rng.choice([5, 10, 10, 20, int(rng.integers(1, 1000))]))
                st = step if rng.random() > 0.03 else -1
                rows.append((st, lid if st >= 0 else -1, kind, op, src, t, t + dur, dur))
                t += dur + int(rng.integers(-dur, 50))  # sometimes overlapping the previous kernel
    k = pd.DataFrame(rows, columns=["step", "layer_id", "layer_kind", "op", "source", "start_ns", "end_ns", "dur_ns"])
    for c in ("layer_kind", "op", "source"):
        k[c] = k[c].astype("category")
    if not sorted_start:
        k = k.sample(frac=1, random_state=seed).reset_index(drop=True)
    return k


def reference_instances(k: pd.DataFrame) -> pd.DataFrame:
    """op instances by pandas: groupby(sort=False); the source carrying the most time, ties to the source that
    appears last."""
    k = k[k["step"] >= 0].reset_index(drop=True)
    keys = ["step", "layer_id", "layer_kind", "op"]
    k = k.assign(**{c: k[c].astype(str) for c in ("layer_kind", "op", "source")})
    g = k.groupby(keys, sort=False)
    pair = k.groupby([*keys, "source"], sort=False)
    pairs = pair["dur_ns"].sum().reset_index()
    top = pairs.groupby(keys, sort=False)["dur_ns"].transform("max")
    source = pairs[pairs["dur_ns"] == top].groupby(keys, sort=False)["source"].last()
    out = pd.DataFrame(
        {
            "time_ns": g["dur_ns"].sum(),
            "kernels": g.size(),
            "start_ns": g["start_ns"].min(),
            "end_ns": g["end_ns"].max(),
        }
    )
    out["source"] = source.reindex(out.index)
    out = out.reset_index()
    return out[["step", "layer_id", "layer_kind", "op", "source", "time_ns", "kernels", "start_ns", "end_ns"]]


@pytest.mark.parametrize("seed", range(16))
def test_op_instances_match_pandas(seed: int) -> None:
    k = synthetic_kernels(seed, sorted_start=seed % 4 != 3)
    got = op_instances(k)
    want = reference_instances(k)
    assert got["kernels"].sum() == (k["step"] >= 0).sum()
    pd.testing.assert_frame_equal(
        got.astype({c: object for c in ("layer_kind", "op", "source")}), want.astype({c: object for c in ("layer_kind", "op", "source")})
    )


def test_op_instances_step_override_and_empty() -> None:
    k = synthetic_kernels(5)
    whole = coded_op_instances(k, step=np.zeros(len(k), dtype=np.int64))
    assert whole.kernels.sum() == len(k) and (whole.step == 0).all()
    none = op_instances(k.assign(step=-1))
    assert len(none) == 0 and list(none.columns) == list(op_instances(k).columns)


@pytest.mark.parametrize("seed", range(10))
def test_code_groups_match_pandas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    code = rng.integers(0, int(rng.integers(1, 60)), n)
    v = rng.integers(0, 10**9 if seed % 2 else 50, n)
    src = rng.integers(0, 4, n)
    strings = np.array(["template", "nvtx", "unmapped", "class"], dtype=object)
    g = CodeGroups(code, int(code.max()) + 1)
    gb = pd.DataFrame({"c": code, "v": v}).groupby("c", sort=False)["v"]
    assert g.first.tolist() == pd.Series(code).drop_duplicates().index.tolist()
    assert (g.size() == gb.size().to_numpy()).all() and (g.sum(v) == gb.sum().to_numpy()).all()
    med, p10, p90 = g.quantiles(v, (0.5, 0.1, 0.9))
    assert (med == gb.median().to_numpy()).all()
    assert (p10 == gb.quantile(0.1).to_numpy()).all() and (p90 == gb.quantile(0.9).to_numpy()).all()
    old = intervals.Groups(code)  # the same floats as the general group-by
    assert (g.quantiles(v, (0.5, 0.25)) == old.quantiles(v, (0.5, 0.25))).all()
    frame = pd.DataFrame({"c": code, "s": strings[src], "w": v})
    want = frame.groupby("c", sort=False).apply(lambda x: dominant(x["s"], x["w"]), include_groups=False).to_numpy()
    assert g.dominant(src, strings, v).tolist() == want.tolist()


def union_reference(step: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[list[int], list[int]]:
    steps = sorted(set(step.tolist()))
    return steps, [intervals.union_ns(start[step == s], end[step == s]) for s in steps]


@pytest.mark.parametrize("seed", range(12))
def test_union_per_step_matches_merge(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    step = np.sort(rng.integers(0, 6, n)) if seed % 3 else rng.integers(0, 6, n)
    start = np.sort(rng.integers(0, 10_000, n)) if seed % 2 else rng.integers(0, 10_000, n)
    start = start + step * (10_000 if seed % 4 == 1 else 0)  # disjoint steps, or steps overlapping in time
    end = start + rng.integers(-5, 300, n)  # some empty or negative intervals
    got_steps, got = union_per_step(step, start, end)
    want_steps, want = union_reference(step, start, end)
    assert got_steps.tolist() == want_steps and got.tolist() == want


def old_layer_counts(in_layer: pd.DataFrame, steps: pd.DataFrame) -> tuple[pd.Series, str | None]:
    """The pandas versions of the layers-per-step count and the note that steps disagree."""
    inst = in_layer.drop_duplicates("layer_id")
    counts = inst.groupby(["step", "layer_kind"]).size().unstack(fill_value=0)
    per_step = counts.apply(lambda col: int(col[col > 0].mode().min()) if (col > 0).any() else 0).astype(int)
    counts = counts.reindex(steps["step"].to_numpy(), fill_value=0)
    if len(counts.drop_duplicates()) <= 1:
        return per_step, None
    phase = steps.set_index("step")["phase"].reindex(counts.index).astype(str)
    label = counts.apply(lambda r: ", ".join(f"{k} {v}" for k, v in r.items() if v) or "no layers", axis=1)
    groups = pd.DataFrame({"phase": phase.to_numpy(), "layers": label.to_numpy()}).value_counts().sort_index()
    parts = [f"{n} {ph} steps: {lay}" for (ph, lay), n in groups.items()]
    return per_step, "layers per step differ between steps (" + "; ".join(parts) + "); the table counts the most common number"


def reference_layer_ops(inst: pd.DataFrame, nsteps: int) -> pd.DataFrame:
    il = inst[inst["layer_id"] >= 0]
    g = il.groupby(["layer_kind", "op"], sort=False)["time_ns"]
    out = pd.DataFrame(
        {
            "count_per_step": g.size() / nsteps,
            "mean_us": g.sum() / g.size() / 1e3,
            "median_us": g.median() / 1e3,
            "p10_us": g.quantile(0.1) / 1e3,
            "p90_us": g.quantile(0.9) / 1e3,
            "total_us_per_step": g.sum() / nsteps / 1e3,
        }
    )
    out["source"] = il.groupby(["layer_kind", "op"], sort=False).apply(lambda x: dominant(x["source"], x["time_ns"]), include_groups=False)
    return out


@pytest.mark.parametrize("name", ["moe_decode_op", "moe_prefill_layer", "dense_train_step", "moe_decode_nonvtx", "moe_decode_graph"])
def test_ops_and_layers_match_pandas_on_fixtures(name: str) -> None:
    with AnalysisContext.open(fixture_trace(name)) as ctx:
        m = ctx.mapping
        inst = m.op_instances
        pd.testing.assert_frame_equal(coded_instances(m).frame(), inst, check_exact=True)
        nsteps = len(m.steps)
        ops = op_summary(ctx, by_kind=True)
        g = inst.groupby(["layer_kind", "op"], sort=False)["time_ns"]
        want = pd.DataFrame({"n": g.size(), "median": g.median(), "total": g.sum()}).reset_index()
        got = ops.set_index(["layer_kind", "op"]).loc[list(zip(want["layer_kind"], want["op"]))]
        assert np.allclose(got["count_per_step"], want["n"] / nsteps, rtol=0, atol=0)
        assert (got["median_us"].to_numpy() == want["median"].to_numpy() / 1e3).all()
        assert (got["total_us_per_step"].to_numpy() == want["total"].to_numpy() / nsteps / 1e3).all()
        rep = layer_report(ctx)
        il = inst[inst["layer_id"] >= 0]
        if len(il) == 0:
            assert len(rep.ops) == 0
            return
        per_step, note = old_layer_counts(il, m.steps)
        assert {k: v for k, v in rep.layer_kinds.items() if v} == {str(k): float(v) for k, v in per_step.items() if v}
        assert (note in ctx.notes) if note else not any(n.startswith("layers per step differ") for n in ctx.notes)
        ref = reference_layer_ops(inst, nsteps)
        got = rep.ops.set_index(["layer_kind", "op"]).loc[ref.index]
        for c in ref.columns:
            assert got[c].tolist() == ref[c].tolist(), c


@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
@pytest.mark.parametrize("name", ["short", "demangled"])
def test_kernel_summary_from_loaded_frame_matches_sql(engine: str, name: str) -> None:
    """The report's kernel table comes from the loaded kernels; `kernels` (nothing loaded) from SQL or pandas."""
    from nsysparse.analyses.kernel_summary import kernel_summary
    from nsysparse.trace import open_trace

    path = fixture_trace("moe_decode_op")
    with open_trace(path, engine=engine) as t:
        assert not t.is_loaded("kernels")
        want = kernel_summary(AnalysisContext(t), name=name)  # by SQL (DuckDB), or pandas over a fresh load (sqlite3)
    with open_trace(path, engine=engine) as t:
        t.kernels()
        got = kernel_summary(AnalysisContext(t), name=name)
        on_one = kernel_summary(AnalysisContext(t, device_id=0), name=name)
    assert list(got.columns) == list(want.columns) and got.dtypes.tolist() == want.dtypes.tolist()
    for c in got.columns:
        if c in ("stddev_us", "share_pct"):  # float sums in another order: equal to rounding
            assert np.allclose(got[c], want[c], rtol=1e-12, atol=0), c
        else:
            assert got[c].tolist() == want[c].tolist(), c
    assert on_one["count"].sum() == got["count"].sum()  # one GPU in this fixture
