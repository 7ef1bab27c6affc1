"""`ops`, `layers`, `steps` through the CLI on fixtures: formats, documented JSON fields, options."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from conftest import fixture_trace


def test_layers_json_has_the_documented_fields(run):
    res = run("layers", fixture_trace("moe_decode_nonvtx"), "-f", "json")
    data = json.loads(res.stdout)
    for key in ("steps", "step_time_us", "layer_kinds", "ops", "unmapped_share", "reconciliation", "layer_totals", "step_source", "layer_source"):
        assert key in data
    assert data["steps"] == 12 and data["layer_kinds"] == {"moe": 5.0, "mtp": 1.0, "dense": 3.0}
    op = data["ops"][0]
    assert set(op) == {"layer_kind", "op", "count_per_step", "mean_us", "median_us", "total_us_per_step", "source"}
    assert data["unmapped_share"] == 0.0


def test_layers_table_shows_the_reconciliation(run):
    res = run("layers", fixture_trace("moe_decode_op"))
    for text in ("layer kind × op", "one layer of each kind", "reconciliation", "= step time (mean wall)", "q_proj_b", "dispatch"):
        assert text in res.output


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_ops_formats(run, fmt):
    res = run("ops", fixture_trace("dense_decode_op"), "-f", fmt)
    if fmt == "csv":
        df = pd.read_csv(io.StringIO(res.stdout))
        assert set(df["op"]) >= {"fmha", "mlp_up", "lm_head"}
        assert abs(df["share_pct"].sum() - 100) < 1e-6
    elif fmt == "json":
        assert json.loads(res.stdout)["ops"][0]["op"]


def test_ops_by_kind_and_nvtx_modes(run):
    a = pd.read_csv(io.StringIO(run("ops", fixture_trace("moe_decode_op"), "--by-kind", "-f", "csv").stdout))
    b = pd.read_csv(io.StringIO(run("ops", fixture_trace("moe_decode_op"), "--by-kind", "--nvtx", "steps", "-f", "csv").stdout))
    assert set(a["source"]) == {"nvtx"} and set(b["source"]) == {"template"}
    key = ["layer_kind", "op"]
    j = a.set_index(key)["total_us_per_step"].to_frame("a").join(b.set_index(key)["total_us_per_step"].rename("b"))
    assert (j["a"] - j["b"]).abs().max() < 1e-6


def test_steps_table(run):
    df = pd.read_csv(io.StringIO(run("steps", fixture_trace("moe_decode_nonvtx"), "-f", "csv").stdout))
    assert len(df) == 12 and set(df["source"]) == {"inferred-repeat"}
    assert df["gap_before_us"].iloc[1:].between(1000, 1500).all()
    assert (df["wall_us"] >= df["busy_us"]).all()


def test_custom_step_pattern_and_parquet(run, tmp_path):
    out = tmp_path / "s.parquet"
    run("steps", fixture_trace("dense_train_step"), "--step-pattern", "^train_step_", "-f", "parquet", "-o", out)
    import duckdb

    assert len(duckdb.sql(f"SELECT * FROM '{out}'").df()) == 6


def test_bad_pattern_is_a_clean_error(run):
    res = run("ops", fixture_trace("dense_decode_op"), "--step-pattern", "(", expect=2)
    assert res.output.startswith("Error: --step-pattern '(' is not a valid regular expression")


def test_ops_without_steps_reports_totals_over_the_trace(run, builder, tmp_path):
    """When no steps are found, ops still accounts for every kernel: totals over the trace, said in a note."""
    import sqlite3

    b = builder()
    b.gpu()
    for i in range(3):
        b.kernel(1_000_000 + i * 10_000, 1_000_000 + i * 10_000 + 2_000 + i * 100, f"k{i}", api_start=999_000 + i * 10_000, api_end=999_100 + i * 10_000)
    path = b.write(tmp_path / "flat.sqlite")
    res = run("ops", path, "-f", "csv")
    df = pd.read_csv(io.StringIO(res.stdout))
    con = sqlite3.connect(path)
    total_us = con.execute('SELECT sum("end" - "start") FROM CUPTI_ACTIVITY_KIND_KERNEL').fetchone()[0] / 1e3
    con.close()
    assert df["total_us_per_step"].sum() == pytest.approx(total_us)
    assert "no steps were found" in res.output
