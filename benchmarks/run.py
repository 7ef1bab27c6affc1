"""Large-trace benchmarks: wall time and peak RSS of nsysparse commands on tiled traces, with ratios
against references measured in the same run.

    python benchmarks/run.py                      # 1x, 10x, 100x, 400x of fixtures/moe_decode_op
    python benchmarks/run.py --sizes 1,10 --nvtxgpuproj 1,10

Each measurement is a fresh process (`python -m nsysparse ...`), timed from spawn to exit, with its peak
RSS from wait4(). References: `floor` is DuckDB's bare group-by over the kernel table (benchmarks/floor.py);
`nsys stats` is NVIDIA's kernel summary (gpukernsum / cuda_gpu_kern_sum) when an nsys is on PATH;
`--nvtxgpuproj 1,10` adds NVIDIA's NVTX projection report at those sizes (it is quadratic).
Results go to stdout as a markdown table and to benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from tile import tile  # noqa: E402

SOURCE = ROOT / "fixtures" / "moe_decode_op" / "trace.sqlite"
DATA = HERE / "data"
PY = sys.executable


CACHE_HOME = Path(tempfile.gettempdir()) / "nsysparse-bench-cache"
"""The frame cache of the benchmark runs (its own XDG_CACHE_HOME, emptied before each size)."""


def measure(cmd: list[str], timeout: float, cached: bool = False) -> dict[str, float | int | str]:
    """Run cmd; wall seconds, peak RSS (MB) of the process tree's largest member, exit code. Without `cached` the
    frame cache is off (NSYSPARSE_NO_CACHE=1): the run reads the trace itself."""
    t0 = time.perf_counter()
    env = {**os.environ, "NSYSPARSE_PROGRESS": "0", "XDG_CACHE_HOME": str(CACHE_HOME)}
    # as a user's install runs: Python's bytecode written once and reused (a sandbox that sets
    # PYTHONDONTWRITEBYTECODE recompiled every nsysparse module in every run, about 0.25 s here)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not cached:
        env["NSYSPARSE_NO_CACHE"] = "1"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            return {"wall_s": float("nan"), "rss_mb": float("nan"), "rc": "timeout"}
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        print(f"  ! {' '.join(cmd[:4])}... exited {rc}: {err.strip().splitlines()[-1:]}", file=sys.stderr)
    return {"wall_s": wall, "rss_mb": usage.ru_maxrss / 1024, "rc": rc}


def nsys_report() -> tuple[str, str] | None:
    exe = shutil.which("nsys")
    if exe is None:
        return None
    reports = subprocess.run([exe, "stats", "--help-reports"], capture_output=True, text=True).stdout
    name = "cuda_gpu_kern_sum" if "cuda_gpu_kern_sum" in reports else "gpukernsum"
    return exe, name


def cases(trace: Path, out: Path, nsys: tuple[str, str] | None, with_proj: bool) -> list[tuple[str, list[str]]]:
    """(name, command); a name ending in "(cached)" runs with the frame cache on, after "(writes cache)" filled it
    (the frames and the kept mapping); "(cached frames; mapped again)" with the kept mapping removed first."""
    t = str(trace)
    nsp = [PY, "-m", "nsysparse", "-q"]
    c = [
        ("floor (DuckDB group-by)", [PY, str(HERE / "floor.py"), t]),
        ("read floor (the columns read)", [PY, str(HERE / "floor_read.py"), t]),
        ("--help", [PY, "-m", "nsysparse", "--help"]),
        ("info", [*nsp, "info", t, "-f", "json", "-o", str(out / "info.json")]),
        ("kernels", [*nsp, "kernels", t, "-f", "csv", "-o", str(out / "kernels.csv")]),
        ("ops", [*nsp, "ops", t, "-f", "csv", "-o", str(out / "ops.csv")]),
        ("layers", [*nsp, "layers", t, "-f", "csv", "-o", str(out / "layers.csv")]),
        ("gaps", [*nsp, "gaps", t, "-f", "csv", "-o", str(out / "gaps.csv")]),
        ("full analysis", [PY, str(HERE / "full_analysis.py"), t]),
        ("report", [*nsp, "report", t, "-o", str(out / "report.html")]),
        ("full analysis (writes cache)", [PY, str(HERE / "full_analysis.py"), t]),
        ("full analysis (cached)", [PY, str(HERE / "full_analysis.py"), t]),
        ("full analysis (cached frames; mapped again)", [PY, str(HERE / "full_analysis.py"), t]),
        ("report (cached)", [*nsp, "report", t, "-o", str(out / "report.html")]),
        ("info (cached)", [*nsp, "info", t, "-f", "json", "-o", str(out / "info.json")]),
    ]
    if nsys:
        c.append((f"nsys stats {nsys[1]}", [nsys[0], "stats", "--report", nsys[1], "--format", "csv", "--output", "-", "--force-export", "false", t]))
        if with_proj:
            c.append(
                ("nsys stats nvtxgpuproj", [nsys[0], "stats", "--report", "nvtxgpuproj", "--format", "csv", "--output", "-", "--force-export", "false", t])
            )
    return c


def kernel_count(path: Path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0])
    finally:
        con.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,10,100,400", help="tiling factors")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case (the median is reported)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    ap.add_argument("--nvtxgpuproj", default="", help="sizes at which to also time nsys stats -r nvtxgpuproj, e.g. 1,10 (quadratic: 10x takes minutes)")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "latest.json")
    ap.add_argument("--source", type=Path, default=SOURCE, help="the trace to tile (default: fixtures/moe_decode_op)")
    ap.add_argument("--cases", default="", help="comma-separated case names to run (default: all)")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    proj = {int(x) for x in a.nvtxgpuproj.split(",") if x}
    nsys = nsys_report()
    warm = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([PY, "-m", "nsysparse", "--help"], env=warm, stdout=subprocess.DEVNULL, check=True)  # writes the bytecode
    subprocess.run([PY, "-c", "import nsysparse.analyses.gaps, nsysparse.report.html, nsysparse.cli"], env=warm, check=True)
    results = []
    for n in sizes:
        stem = a.source.parent.name if a.source.name.startswith("trace.") else a.source.stem
        trace = DATA / f"{stem}_x{n}.sqlite"
        if not trace.exists():
            print(f"tiling {n}x ...", file=sys.stderr)
            tile(a.source, n, trace)
        shutil.rmtree(CACHE_HOME, ignore_errors=True)
        wanted = {x.strip() for x in a.cases.split(",") if x.strip()}
        kernels = kernel_count(trace)
        with tempfile.TemporaryDirectory() as tmp:
            for name, cmd in cases(trace, Path(tmp), nsys, n in proj):
                if wanted and name not in wanted:
                    continue
                cached = "cache" in name
                if name.endswith("(writes cache)"):
                    shutil.rmtree(CACHE_HOME, ignore_errors=True)  # every run of it starts from an empty cache
                    runs = []
                    for _ in range(a.repeat):
                        shutil.rmtree(CACHE_HOME, ignore_errors=True)
                        runs.append(measure(cmd, a.timeout, cached=True))
                elif name.endswith("mapped again)"):  # the frames from the cache, the kept mapping removed first
                    runs = []
                    for _ in range(a.repeat):
                        for kept in CACHE_HOME.glob("nsysparse/frames/*/mapping-*"):
                            kept.unlink()
                        runs.append(measure(cmd, a.timeout, cached=True))
                else:
                    runs = [measure(cmd, a.timeout, cached=cached) for _ in range(a.repeat)]
                runs.sort(key=lambda r: r["wall_s"])
                r = runs[len(runs) // 2]
                extra = {}
                if name == "report" and (Path(tmp) / "report.html").exists():
                    extra["output_mb"] = (Path(tmp) / "report.html").stat().st_size / 1e6
                results.append({"size": n, "source": stem, "kernels": kernels, "file_mb": trace.stat().st_size / 1e6, "case": name, **r, **extra})
                print(f"{n:>4}x {name:28s} {r['wall_s']:8.2f} s {r['rss_mb']:8.0f} MB", file=sys.stderr)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "nsys": nsys[1] if nsys else None,
        "date": time.strftime("%Y-%m-%d"),
    }
    a.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(render(results))
    return 0


def render(results: list[dict]) -> str:
    """Markdown: one row per (size, case) with ratios to the floor and per-kernel cost."""
    floor = {r["size"]: r["wall_s"] for r in results if r["case"].startswith("floor")}
    read = {r["size"]: r["wall_s"] for r in results if r["case"].startswith("read floor")}
    lines = [
        "| size | kernels | file MB | case | wall s | peak RSS MB | × floor | × read floor | µs per kernel | output MB |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = r["wall_s"] / floor[r["size"]] if floor.get(r["size"]) else float("nan")
        rratio = r["wall_s"] / read[r["size"]] if read.get(r["size"]) else float("nan")
        per = r["wall_s"] / r["kernels"] * 1e6
        out = f"{r['output_mb']:.2f}" if "output_mb" in r else ""
        lines.append(
            f"| {r['size']}× | {r['kernels']:,} | {r['file_mb']:.0f} | {r['case']} | {r['wall_s']:.2f} | {r['rss_mb']:.0f} | {ratio:.2f} | {rratio:.2f} "
            f"| {per:.2f} | {out} |"
        )
    full = sorted((r["kernels"], r["wall_s"], r["rss_mb"]) for r in results if r["case"] == "full analysis")
    if len(full) >= 3:
        lines.append("")
        lines.append("Marginal cost of the full analysis between consecutive sizes (µs per added kernel; MB of peak RSS per added M kernels):")
        for (k0, w0, m0), (k1, w1, m1) in itertools.pairwise(full):
            lines.append(f"- {k0:,} → {k1:,} kernels: {(w1 - w0) / (k1 - k0) * 1e6:.2f} µs/kernel, {(m1 - m0) / (k1 - k0) * 1e6:.0f} MB per M kernels")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
