"""Measured vs predicted per op: the seed case, alias loading, unmatched rows and the reconciliation."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import fixture_trace
from hypothesis import given, settings
from hypothesis import strategies as st

from nsysparse.analyses.simdiff import COLUMNS, Measured, measured_from_table, parse_layer_counts, simdiff
from nsysparse.columns import validate_frame
from nsysparse.errors import ConfigError
from nsysparse.models.predictions import load_predictions, normalise
from nsysparse.rules import load_rules

DATA = Path(__file__).parent / "data"
SEED_M = DATA / "seed_measured.csv"
SEED_P = DATA / "seed_predictions.csv"


@pytest.fixture(scope="module")
def rules():
    return load_rules(None)


def seed(rules):
    p = load_predictions(SEED_P, rules)
    m = measured_from_table(SEED_M, rules, parse_layer_counts("dense=3,moe=58"))
    return simdiff(m, p.table)


def test_seed_case(rules):
    d = seed(rules)
    t = d.table.set_index("op")
    assert t.loc["fmha", "total_diff_ms"] == pytest.approx(3 * (153 - 63.82) / 1e3 + 58 * (150 - 63.82) / 1e3)
    assert round(t.loc["fmha", "total_diff_ms"], 2) == 5.27
    assert round(t.loc["combine", "total_diff_ms"], 2) == -1.11
    assert round(t.loc["dispatch", "total_diff_ms"], 2) == 0.74
    assert round(d.matched_total_ms, 2) == 4.70
    assert set(t["status"]) == {"matched"} and len(t) == 13
    # the simulator's own names are kept beside the canonical op
    assert t.loc["fmha", "name"] == "mla" and t.loc["gate_topk", "name"] == "gate+TopK" and t.loc["moe_up", "name"] == "moe_up_gate_proj"
    # sorted by |total diff|
    assert list(d.table["op"][:3]) == ["fmha", "combine", "dispatch"]
    validate_frame(d.table, COLUMNS)
    validate_frame(d.by_kind, COLUMNS)
    # by kind: dense and MoE attention separately
    bk = d.by_kind.set_index(["layer_kind", "op"])
    assert bk.loc[("dense", "fmha"), "count"] == 3 and bk.loc[("moe", "fmha"), "diff_us"] == pytest.approx(150 - 63.82)


def test_seed_reconciliation_adds_up(rules):
    d = seed(rules)
    r = d.reconciliation.set_index("component")["ms"]
    assert r["measured total"] == pytest.approx((3 * (153 + 33 + 11 + 16 + 24 + 18) + 58 * (150 + 32 + 11 + 16 + 19 + 15 + 6 + 43 + 40 + 30 + 12)) / 1e3)
    parts = r["= matched ops"] + r["+ measured-only ops"] + r["− predicted-only ops"] + r["+ overlap/idle/copies"]
    assert parts == pytest.approx(r["difference"], abs=1e-9)
    assert r["difference"] == pytest.approx(4.70434, abs=1e-6)


def test_seed_cli(run):
    res = run("simdiff", SEED_M, SEED_P, "--layers", "dense=3,moe=58", "-f", "json")
    data = json.loads(res.stdout)
    ops = {o["op"]: o for o in data["ops"]}
    assert round(ops["fmha"]["total_diff_ms"], 2) == 5.27 and round(data["matched_total_diff_ms"], 2) == 4.70
    md = run("simdiff", SEED_M, SEED_P, "--layers", "dense=3,moe=58", "-f", "markdown").stdout
    assert "| fmha | all | matched | mla |" in md
    res = run("simdiff", "-", SEED_P, expect=None)  # '-' is not a trace
    assert res.exit_code == 1 and res.output.startswith("Error:")


def test_measured_table_with_counts_and_aliases(rules, tmp_path):
    m = pd.read_csv(SEED_M, comment="#")
    m["count"] = m["layer_kind"].map({"dense": 3, "moe": 58})
    p = tmp_path / "m.csv"
    m.to_csv(p, index=False)
    d = simdiff(measured_from_table(p, rules, {}), load_predictions(SEED_P, rules).table)
    assert round(d.matched_total_ms, 2) == 4.70


def test_unmatched_rows_and_kind_specific_predictions(rules, tmp_path):
    meas = Measured(
        pd.DataFrame(
            {
                "layer_kind": ["dense", "moe", "moe", "other"],
                "op": ["fmha", "fmha", "moe_up", "lm_head"],
                "count": [2.0, 4.0, 4.0, 1.0],
                "measured_us": [10.0, 12.0, 30.0, 50.0],
            }
        ),
        400.0 / 1e3,
        "trace",
    )
    pred = normalise(
        pd.DataFrame(
            {
                "op": ["attention", "fmha", "combine", "moe_up"],
                "layer_kind": ["any", "moe", "moe", "dense"],
                "predicted_us": [8.0, 11.0, 5.0, 20.0],
                "count_per_forward": [None, 4, 4, 2],
            }
        ),
        rules,
    )
    d = simdiff(meas, pred)
    bk = d.by_kind.set_index(["layer_kind", "op"])
    assert bk.loc[("dense", "fmha"), "predicted_us"] == 8.0  # `any` row
    assert bk.loc[("moe", "fmha"), "predicted_us"] == 11.0  # the kind-specific row wins
    assert bk.loc[("moe", "moe_up"), "status"] == "measured-only"  # prediction only for dense
    assert bk.loc[("dense", "moe_up"), "status"] == "predicted-only" and bk.loc[("dense", "moe_up"), "total_diff_ms"] == pytest.approx(-0.04)
    assert bk.loc[("moe", "combine"), "status"] == "predicted-only" and bk.loc[("moe", "combine"), "total_diff_ms"] == pytest.approx(-0.02)
    assert bk.loc[("other", "lm_head"), "status"] == "measured-only"
    r = d.reconciliation.set_index("component")["ms"]
    assert r["+ overlap/idle/copies"] == pytest.approx(0.4 - (20 + 48 + 120 + 50) / 1e3)
    assert r["= matched ops"] + r["+ measured-only ops"] + r["− predicted-only ops"] + r["+ overlap/idle/copies"] == pytest.approx(r["difference"])


row = st.tuples(st.sampled_from(["dense", "moe", "mtp"]), st.sampled_from(["fmha", "o_proj", "moe_up", "combine", "dispatch", "lm_head"]))


@settings(max_examples=60, deadline=None)
@given(
    meas=st.dictionaries(row, st.tuples(st.integers(1, 60), st.floats(0.1, 500)), min_size=1, max_size=12),
    pred=st.dictionaries(
        st.tuples(st.sampled_from(["dense", "moe", "mtp", "any"]), st.sampled_from(["fmha", "o_proj", "moe_up", "combine", "dispatch", "embed"])),
        st.tuples(st.integers(1, 60), st.floats(0.1, 500)),
        min_size=1,
        max_size=12,
    ),
    extra=st.floats(-5, 50),
)
def test_reconciliation_identity(meas, pred, extra):
    rules = load_rules(None)
    m = pd.DataFrame([(k, o, float(c), us) for (k, o), (c, us) in meas.items()], columns=["layer_kind", "op", "count", "measured_us"])
    total = float((m["count"] * m["measured_us"]).sum() / 1e3) + extra
    p = normalise(pd.DataFrame([(o, k, c, us) for (k, o), (c, us) in pred.items()], columns=["op", "layer_kind", "count_per_forward", "predicted_us"]), rules)
    d = simdiff(Measured(m, total, "trace"), p)
    r = d.reconciliation.set_index("component")["ms"]
    assert r["= matched ops"] + r["+ measured-only ops"] + r["− predicted-only ops"] + r["+ overlap/idle/copies"] == pytest.approx(r["difference"], abs=1e-6)
    # every measured row appears once; every prediction is matched or listed
    assert d.by_kind[d.by_kind["status"] != "predicted-only"]["count"].sum() == pytest.approx(m["count"].sum())
    assert d.table["total_diff_ms"].sum() == pytest.approx(d.by_kind["total_diff_ms"].sum(), abs=1e-9)


def test_prediction_formats_roundtrip(rules, tmp_path, run):
    base = ["predict", "--model", "ds-mini", "--hardware", "h100_sxm", "--phase", "decode", "--batch", "8", "--kv-len", "512"]
    tables = {}
    for ext in ("csv", "json", "yaml"):
        out = tmp_path / f"p.{ext}"
        run(*base, "-o", out)
        p = load_predictions(out, rules)
        assert p.meta["model"] == "ds-mini" and p.meta["hardware"] == "H100 SXM" and p.meta["kv_len"] == 512
        tables[ext] = p.table
    pd.testing.assert_frame_equal(tables["csv"], tables["json"], check_dtype=False)
    pd.testing.assert_frame_equal(tables["csv"], tables["yaml"], check_dtype=False)
    # a simulator that reports totals
    js = {"meta": {"source": "sim"}, "ops": [{"op": "low_latency_dispatch", "predicted_total_us": 58 * 30.0, "count_per_forward": 58}]}
    (tmp_path / "t.json").write_text(json.dumps(js))
    t = load_predictions(tmp_path / "t.json", rules).table
    assert t.loc[0, "op"] == "dispatch" and t.loc[0, "predicted_us"] == pytest.approx(30.0)


@pytest.mark.parametrize(
    "content, suffix, needle",
    [
        ("op,predicted_us\nmla,abc\n", ".csv", "no numeric predicted_us"),
        ("name,us\nx,1\n", ".csv", "needs an 'op' column"),
        ("op,predicted_us\nmla,1\nattention,2\n", ".csv", "appears twice"),
        ("{not json", ".json", "cannot parse"),
        ("op\n", ".txt", "unknown prediction format"),
        ("op,layer_kind\nfmha,dense\n", ".csv", "needs predicted_us"),
    ],
)
def test_bad_prediction_files(rules, tmp_path, content, suffix, needle):
    p = tmp_path / f"bad{suffix}"
    p.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_predictions(p, rules)


def test_bad_measured_inputs(rules, tmp_path, run):
    with pytest.raises(ConfigError, match="no instance count"):
        measured_from_table(SEED_M, rules, {})
    with pytest.raises(ConfigError, match="no count for layer kind"):
        measured_from_table(SEED_M, rules, {"dense": 3})
    with pytest.raises(ConfigError, match="KIND=COUNT"):
        parse_layer_counts("dense3")
    res = run("simdiff", SEED_M, SEED_P, expect=1)
    assert "no instance count" in res.output and len(res.output.strip().splitlines()) == 1
    res = run("simdiff", fixture_trace("moe_decode_op"), SEED_P, "--layers", "moe=5", expect=2)
    assert "--layers is for a measured table" in res.output


def test_trace_against_its_own_roofline(run, tmp_path):
    """A generator fixture against a roofline for its manifest: every predicted op is found in the trace."""
    trace = fixture_trace("moe_decode_op")
    pred = tmp_path / "pred.csv"
    run("predict", "--model", trace.parent / "manifest.json", "--hardware", "h100_sxm", "-o", pred)
    data = json.loads(run("simdiff", trace, pred, "-f", "json").stdout)
    status = {o["status"] for o in data["ops"]}
    assert status == {"matched"}, [o for o in data["ops"] if o["status"] != "matched"]
    r = {x["component"]: x["ms"] for x in data["reconciliation"]}
    assert r["= matched ops"] + r["+ measured-only ops"] + r["− predicted-only ops"] + r["+ overlap/idle/copies"] == pytest.approx(r["difference"], abs=1e-9)
    ops = {o["op"]: o for o in data["ops"]}
    # roofline numbers are filled from the prediction's FLOPs/bytes and the trace's GPU (H100)
    assert 0 < ops["moe_up"]["roofline_pct"] <= 100 and ops["moe_up"]["achieved_tbps"] > 0.5
    assert data["measured_total_ms"] == pytest.approx(22.97, rel=0.05)
    csv = pd.read_csv(io.StringIO(run("simdiff", trace, pred, "--by-kind", "-f", "csv").stdout))
    assert {"dense", "moe", "mtp", "other"} <= set(csv["layer_kind"])
