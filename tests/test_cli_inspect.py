"""`info`, `kernels` and `export` through the CLI, on synthetic and public traces."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import duckdb
import pandas as pd
import pytest
from conftest import PUBLIC, public_trace

PUBLIC_FILES = sorted(p.relative_to(PUBLIC).as_posix() for p in PUBLIC.glob("*/*.sqlite")) if PUBLIC.exists() else []


def small(builder, tmp_path, era="2024.5"):
    b = builder(era)
    b.gpu(0, "NVIDIA H200")
    for i, d in enumerate([1_000, 3_000, 2_000, 6_000]):
        b.kernel(10_000 * (i + 1), 10_000 * (i + 1) + d, "void gemm<128>(float*)", short="gemm", grid=(2, 1, 1))
    b.kernel(100_000, 100_500, "void norm_kernel(float*)", short="norm_kernel")
    b.push(5_000, 90_000, "forward_0")
    return b.write(tmp_path / "small.sqlite")


def test_kernels_statistics_match_definitions(run, builder, tmp_path):
    res = run("kernels", small(builder, tmp_path), "-f", "json")
    rows = {r["name"]: r for r in json.loads(res.stdout)["kernels"]}
    g = rows["void gemm<128>(float*)"]
    assert g["count"] == 4
    assert g["total_us"] == pytest.approx(12.0)
    assert g["median_us"] == pytest.approx(2.5)  # mean of the two middle values
    assert g["min_us"] == 1.0 and g["max_us"] == 6.0
    assert g["stddev_us"] == pytest.approx(pd.Series([1, 3, 2, 6]).std(ddof=1))
    n = rows["void norm_kernel(float*)"]
    assert n["stddev_us"] == 0.0 and n["share_pct"] == pytest.approx(0.5 / 12.5 * 100)


@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
def test_kernels_engines_agree(run, builder, tmp_path, monkeypatch, engine):
    monkeypatch.setenv("NSYSPARSE_ENGINE", engine)
    res = run("kernels", small(builder, tmp_path), "-f", "csv", "--name", "short")
    df = pd.read_csv(io.StringIO(res.stdout))
    assert df["name"].tolist() == ["gemm", "norm_kernel"]
    assert df["median_us"].tolist() == [2.5, 0.5]


def test_kernels_table_and_limit(run, builder, tmp_path):
    res = run("kernels", small(builder, tmp_path), "--limit", "1")
    assert "gemm" in res.output and "norm_kernel" not in res.output


def test_kernels_by_launch_config(run, builder, tmp_path):
    res = run("kernels", small(builder, tmp_path), "--by-launch-config", "-f", "csv")
    df = pd.read_csv(io.StringIO(res.stdout))
    assert df.loc[0, "grid"] == "2,1,1" and df.loc[0, "block"] == "128,1,1"


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_info_formats(run, builder, tmp_path, fmt):
    res = run("info", small(builder, tmp_path), "-f", fmt)
    if fmt == "json":
        data = json.loads(res.stdout)
        assert data["gpus"][0]["name"] == "NVIDIA H200"
        assert data["tables"]["kernels"] == 5
        assert data["nsys_version"] == "2024.5.1.113"
    elif fmt == "csv":
        df = pd.read_csv(io.StringIO(res.stdout))
        assert set(df["section"]) >= {"trace", "tables", "gpus"}
    else:
        assert "NVIDIA H200" in res.output and "2024.5.1.113" in res.output


@pytest.mark.parametrize("what", ["kernels", "api", "nvtx", "launches"])
@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_round_trips(run, builder, tmp_path, what, fmt):
    out = tmp_path / f"out.{fmt}"
    run("export", small(builder, tmp_path), "--what", what, "-f", fmt, "-o", out)
    if fmt == "csv":
        df = pd.read_csv(out)
    elif fmt == "json":
        df = pd.read_json(out)
    else:
        df = duckdb.sql(f"SELECT * FROM '{out}'").df()
    assert len(df) == {"kernels": 5, "api": 5, "nvtx": 1, "launches": 5}[what]
    assert "start_ns" in df.columns
    if what in ("api", "nvtx", "launches"):  # the derived ids are exported too (the API frame has them only when asked)
        assert {"pid", "tid"} <= set(df.columns)


def test_export_parquet_needs_output(run, builder, tmp_path):
    res = run("export", small(builder, tmp_path), "-f", "parquet", expect=2)
    assert "needs -o" in res.output


def test_usage_errors_exit_2(run, builder, tmp_path):
    run("kernels", small(builder, tmp_path), "--name", "bogus", expect=2)
    run("nosuchcommand", expect=2)


def test_python_dash_m_entry_point(builder, tmp_path):
    import sys

    p = small(builder, tmp_path)
    out = subprocess.run([sys.executable, "-m", "nsysparse", "kernels", str(p), "-f", "csv", "--name", "short"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "gemm" in out.stdout


@pytest.mark.public
@pytest.mark.parametrize("rel", PUBLIC_FILES or ["(none)"])
def test_public_traces_info_and_kernels(run, rel):
    path = public_trace(rel)
    res = run("info", path, "-f", "json")
    data = json.loads(res.stdout)
    for forbidden in ("eos0225", "xgao", "ocankur", "rich-wsl", "WANDB", "SLURM", "modal.sock", "login03"):
        assert forbidden not in res.output, forbidden
    if data["tables"].get("kernels"):
        res = run("kernels", path, "-f", "json")
        rows = json.loads(res.stdout)["kernels"]
        assert sum(r["count"] for r in rows) == data["tables"]["kernels"]
    else:
        res = run("kernels", path, expect=1)
        assert "CUPTI_ACTIVITY_KIND_KERNEL" in res.output


@pytest.mark.public
@pytest.mark.skipif(shutil.which("nsys") is None, reason="nsys not installed (../shared/tools/nsys-kit/install-debian-nsys.sh)")
@pytest.mark.parametrize(
    "rel",
    [
        "GindaChen_nsys-ai/mfu_2gpu_before.sqlite",
        "NVIDIA_Fuser/report1_8fa9ec2_h100_test_matmul.sqlite",
        "hpcgroup_pipit/saxpy-mpi-cuda_nsys_perlmutter0.sqlite",
    ],
)
def test_same_numbers_as_nsys_stats(run, tmp_path, rel):
    """nsys 2022.4's gpukernsum groups by name + grid + block, like --by-launch-config."""
    src = public_trace(rel)
    copy = tmp_path / "copy.sqlite"
    shutil.copy(src, copy)  # nsys stats may add views; never point it at the shared file
    subprocess.run(["nsys", "stats", "-r", "gpukernsum", "--format", "csv", "-o", str(tmp_path / "ref"), str(copy)], check=True, capture_output=True)
    ref = pd.read_csv(tmp_path / "ref_gpukernsum.csv")
    ours = pd.read_csv(io.StringIO(run("kernels", src, "--by-launch-config", "-f", "csv").stdout))
    assert len(ours) == len(ref)
    ref_key = ref["Name"] + "|" + ref["GridXYZ"].str.split().str.join(",") + "|" + ref["BlockXYZ"].str.split().str.join(",")
    ours_key = ours["name"] + "|" + ours["grid"] + "|" + ours["block"]
    r = ref.set_index(ref_key)
    o = ours.set_index(ours_key)
    assert set(r.index) == set(o.index)
    o = o.loc[r.index]
    assert (o["count"].to_numpy() == r["Instances"].to_numpy()).all()
    assert (o["total_us"] * 1000).round().astype("int64").tolist() == r["Total Time (ns)"].tolist()
    assert ((o["median_us"] * 1000).round(1) - r["Med (ns)"]).abs().max() < 0.06
    assert ((o["stddev_us"] * 1000).round(1) - r["StdDev (ns)"]).abs().max() < 0.06
    assert ((o["share_pct"]).round(1) - r["Time (%)"]).abs().max() < 0.051
