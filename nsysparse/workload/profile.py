"""Run a workload under Nsight Systems and export SQLite (the recipe of ../shared/tools/nsys-kit).

nsys is taken from --nsys, else PATH, else the collector bundled inside Nsight Compute
(/opt/nvidia/nsight-compute/<ver>/host/target-linux-x64/nsys). When nsys leaves only a .qdstrm, the
QdstrmImporter shipped beside it makes the .nsys-rep; it needs libdw/libelf, taken from
$NSYSPARSE_NSYS_LIBS or ./.nsys-kit/lib when present.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from nsysparse.errors import ConfigError

NSYS_OPTIONS = ["--sample=none", "--cpuctxsw=none", "--capture-range=cudaProfilerApi", "--capture-range-end=stop"]


def find_nsys(explicit: str | None = None) -> Path | None:
    if explicit:
        p = Path(explicit)
        return p if p.exists() else None
    on_path = shutil.which("nsys")
    if on_path:
        return Path(on_path)
    bundled = sorted(glob.glob("/opt/nvidia/nsight-compute/*/host/target-linux-x64/nsys"))
    return Path(bundled[-1]) if bundled else None


def _importer(nsys: Path) -> Path | None:
    host = nsys.parent.parent
    found = sorted(glob.glob(str(host / "linux-desktop-*" / "QdstrmImporter"))) + sorted(glob.glob(str(host / "host-linux-*" / "QdstrmImporter")))
    return Path(found[0]) if found else None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    libs = os.environ.get("NSYSPARSE_NSYS_LIBS") or (".nsys-kit/lib" if Path(".nsys-kit/lib").is_dir() else "")
    if libs:
        env["LD_LIBRARY_PATH"] = str(Path(libs).resolve()) + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


def profile_command(nsys: str, prefix: str, config: str, cuda_graph: bool, nvtx: bool = True) -> list[str]:
    """With `nvtx` False NVTX is not traced at all (not even libraries' ranges): a trace with no NVTX."""
    graph = ["--cuda-graph-trace=node"] if cuda_graph else []
    trace = "--trace=cuda,nvtx" if nvtx else "--trace=cuda"
    return [nsys, "profile", trace, *NSYS_OPTIONS, *graph, "--force-overwrite=true", "-o", prefix, "python3", "-m", "nsysparse.workload.run", config]


def run_profiled(out_dir: Path, cuda_graph: bool, nsys_path: str | None, nvtx: bool = True) -> dict[str, Any]:
    """Profile `python -m nsysparse.workload.run out_dir/config.json`; returns the manifest's nsys block."""
    nsys = find_nsys(nsys_path)
    if nsys is None:
        raise ConfigError(
            "--profile needs Nsight Systems and none was found (PATH, --nsys, or Nsight Compute's bundled collector)",
            "Install nsys, or run without --profile and profile by hand with the printed command",
        )
    env = _env()
    prefix = out_dir / "trace"
    for suffix in (".qdstrm", ".nsys-rep", ".sqlite"):
        prefix.with_suffix(suffix).unlink(missing_ok=True)
    cmd = profile_command(str(nsys), str(prefix), str(out_dir / "config.json"), cuda_graph, nvtx)
    cmd[cmd.index("python3")] = sys.executable
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    rep = prefix.with_suffix(".nsys-rep")
    if not rep.exists() and prefix.with_suffix(".qdstrm").exists():
        importer = _importer(nsys)
        if importer is not None:
            subprocess.run([str(importer), "-i", str(prefix.with_suffix(".qdstrm"))], env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not rep.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ConfigError(f"profiling failed (exit {proc.returncode}): {' | '.join(tail) or 'no output'}")
    sqlite = prefix.with_suffix(".sqlite")
    exp = subprocess.run(
        [str(nsys), "export", "--type", "sqlite", "--force-overwrite", "true", "-o", str(sqlite), str(rep)], env=env, capture_output=True, text=True
    )
    if exp.returncode != 0 or not sqlite.exists():
        raise ConfigError(f"nsys export failed: {(exp.stderr or exp.stdout).strip()[-300:]}")
    version = subprocess.run([str(nsys), "--version"], env=env, capture_output=True, text=True).stdout.strip()
    return {
        "version": version,
        "command": " ".join(profile_command("nsys", "trace", "config.json", cuda_graph, nvtx)),
        "export_command": "nsys export --type sqlite -o trace.sqlite trace.nsys-rep",
    }
