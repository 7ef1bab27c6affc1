"""Hardware peaks (hardware.toml beside this file): dense BF16/FP8 TFLOP/s, HBM and NVLink bandwidth."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from nsysparse.errors import ConfigError

_FILE = Path(__file__).with_name("hardware.toml")


@dataclass(frozen=True)
class Hardware:
    key: str
    name: str
    bf16_tflops: float
    fp8_tflops: float
    hbm_tbps: float
    nvlink_gbps: float
    memory_gb: float
    sources: str

    def peak(self, dtype: str) -> float:
        value = self.fp8_tflops if dtype == "fp8" else self.bf16_tflops
        if value <= 0:
            raise ConfigError(f"{self.name} has no {dtype} tensor-core peak", "Use --dtype bf16 or give --peak")
        return value


def catalog() -> dict[str, tuple[Hardware, re.Pattern[str]]]:
    data = tomllib.loads(_FILE.read_text())
    out = {}
    for key, d in data["gpus"].items():
        hw = Hardware(key, d["name"], float(d["bf16"]), float(d["fp8"]), float(d["hbm"]), float(d["nvlink"]), float(d["memory_gb"]), d["sources"])
        out[key] = (hw, re.compile(d["match"]))
    return out


def find(name_or_key: str) -> Hardware:
    """By catalog key (h100_sxm), display name or a GPU name as nsys records it (NVIDIA H100 80GB HBM3)."""
    cat = catalog()
    norm = name_or_key.strip().lower().replace(" ", "_").replace("-", "_")
    if norm in cat:
        return cat[norm][0]
    for hw, rx in cat.values():
        if rx.search(name_or_key) or hw.name.lower() == name_or_key.strip().lower():
            return hw
    raise ConfigError(f"unknown GPU {name_or_key!r}", f"Use one of {', '.join(h.name for h, _ in cat.values())}, or give --peak TFLOPS")


def custom(peak_tflops: float, hbm_tbps: float | None = None, base: Hardware | None = None) -> Hardware:
    return Hardware(
        "custom",
        f"custom ({peak_tflops:g} TFLOP/s)",
        peak_tflops,
        peak_tflops,
        hbm_tbps or (base.hbm_tbps if base else 0.0),
        base.nvlink_gbps if base else 0.0,
        base.memory_gb if base else 0.0,
        "--peak",
    )
