"""The analysis context: one opened trace, the rule set (loaded once), the selection, and the notes.

Built once at the edge (a CLI command, or a user of the Python API) and handed to every analysis, which
then neither loads rules nor filters by device again:

    with AnalysisContext.open("trace.sqlite", device_id=0) as ctx:
        ops = op_summary(ctx)
        layers = layer_report(ctx)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import numpy as np
import pandas as pd

from nsysparse.analyses.mapping_cache import keep_mapping, kept_mapping, mapping_key
from nsysparse.errors import UsageError
from nsysparse.rules import RuleSet, load_rules
from nsysparse.structure.inductor import inductor_names, provenance_notes
from nsysparse.structure.mapping import DEFAULT_LAYER_PATTERN, Mapping, check_options, map_trace
from nsysparse.structure.steps import DEFAULT_STEP_PATTERN
from nsysparse.trace import Trace, open_trace

T = TypeVar("T")


@dataclass(frozen=True)
class StructureOptions:
    """How steps, layers and ops are found: the NVTX patterns and how far NVTX is trusted (auto | steps | off)."""

    step_pattern: str = DEFAULT_STEP_PATTERN
    layer_pattern: str = DEFAULT_LAYER_PATTERN
    nvtx: str = "auto"
    inductor_provenance: str | None = None  # TorchInductor's debug folder: what each generated kernel computes

    def __post_init__(self) -> None:
        check_options(self.nvtx, self.step_pattern, self.layer_pattern)


class AnalysisContext:
    """Everything an analysis needs besides its own options. `mapping` is the mapped trace narrowed to the
    selected device; the full mapping, the rules and the mapping of the whole trace are computed once."""

    def __init__(
        self,
        trace: Trace,
        rules: RuleSet | None = None,
        *,
        device_id: int | None = None,
        options: StructureOptions | None = None,
        rule_paths: tuple[str, ...] = (),
        on_map: Callable[[Callable[[], Mapping]], Mapping] | None = None,
        include_warmup: bool = False,
        window: str | None = None,
    ) -> None:
        self.trace = trace
        self.device_id = device_id
        self.include_warmup = include_warmup
        self.window = window
        self.options = options or StructureOptions()
        self._rules = rules
        self._rule_paths = rule_paths
        self._on_map = on_map
        self._notes: list[str] = []
        self._sink: list[str] | None = None  # within `collecting`: the notes raised, repeats included

    @classmethod
    def open(cls, path: str | os.PathLike[str], rules: RuleSet | None = None, **kw: object) -> AnalysisContext:
        """Open `path` read-only; use as a context manager (closing it closes the trace)."""
        return cls(open_trace(path), rules, **kw)  # type: ignore[arg-type]

    def __enter__(self) -> AnalysisContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.trace.close()

    @property
    def rules(self) -> RuleSet:
        """The rule set: given, else loaded from `rule_paths` (or the bundled packs) on first use, once."""
        if self._rules is None:
            self._rules = load_rules(self._rule_paths or None)
        return self._rules

    @cached_property
    def full_mapping(self) -> Mapping:
        """Every kernel of the trace mapped to step, layer and op (all devices)."""

        def run() -> Mapping:
            self.trace.require_rows("kernels", "op mapping")
            o = self.options
            inductor = inductor_names(o.inductor_provenance) if o.inductor_provenance else None
            said = tuple(provenance_notes(o.inductor_provenance, inductor or {})) if o.inductor_provenance else ()
            return map_trace(
                self.trace, self.rules, step_pattern=o.step_pattern, layer_pattern=o.layer_pattern, nvtx=o.nvtx, inductor=inductor, inductor_notes=said
            )

        key = mapping_key(self.rules, self.options) if self.trace.has("kernels") else None
        kept = kept_mapping(self.trace, key, self.rules) if key else None
        if kept is not None:
            return kept
        mapping, notes = self.trace.collecting(lambda: self._on_map(run) if self._on_map is not None else run())
        if key:
            keep_mapping(self.trace, key, mapping, notes)
        return mapping

    @cached_property
    def mapping(self) -> Mapping:
        """What statistics are taken over: the selected device's steps in the window, without warm-up steps unless
        they are included."""
        return self.structure if self.include_warmup else self.structure.steady()

    @cached_property
    def structure(self) -> Mapping:
        """The mapping narrowed to the selected device, every step included (what `steps` lists)."""
        full = self.full_mapping
        if self.device_id is not None:
            self._check_device(sorted({int(d) for d in full.kernels["device_id"].unique()}))
        narrowed = full.on_device(self.device_id)
        if self.window:
            narrowed = narrowed.keep_steps(select_window(self.window, narrowed.steps, self.trace))
            if len(narrowed.steps) == 0:
                raise UsageError(f"{self.trace.path}: --window {self.window} holds no step", "Check `nsysparse steps` for the steps and their times")
        return narrowed

    def require_device(self) -> None:
        """A UsageError listing the GPUs present when the selected device ran no kernel (for analyses that
        do not go through the mapping)."""
        if self.device_id is not None:
            self._check_device(self.trace.kernel_devices())

    def _check_device(self, present: list[int]) -> None:
        if self.device_id not in present:
            listed = ", ".join(str(d) for d in present) or "none"
            raise UsageError(f"{self.trace.path}: --device {self.device_id} ran no kernels in this trace", f"GPUs present: {listed}")

    def note(self, message: str) -> None:
        """Add a note for the user (shown once, whatever else repeats it)."""
        if self._sink is not None and message not in self._sink:
            self._sink.append(message)
        if message not in self._notes:
            self._notes.append(message)

    def collecting(self, build: Callable[[], T]) -> tuple[T, list[str], list[str]]:
        """Run `build`: what it returns, the trace's notes and the context's notes it raised (each
        raised again counts, whether or not it was shown before; nested builds' notes included)."""
        outer = self._sink
        inner: list[str] = []
        self._sink = inner
        try:
            value, said = self.trace.collecting(build)
            return value, said, list(inner)
        finally:
            self._sink = outer
            if outer is not None:
                outer.extend(n for n in inner if n not in outer)

    @property
    def notes(self) -> list[str]:
        """The trace's notes, the mapping's (once it was computed) and the context's own, each once, in that order."""
        parts = [*self.trace.notes, *(self.__dict__["full_mapping"].notes if "full_mapping" in self.__dict__ else ()), *self._notes]
        return list(dict.fromkeys(parts))


def select_window(spec: str, steps: pd.DataFrame, trace: Trace) -> np.ndarray:
    """Which steps lie in the window `spec` (per row of `steps`):

    - `A:B` a time range in ms from the first step's start (`A:` or `:B` open), e.g. `100:250`;
    - `steps=I:J` steps I to J inclusive, by index;
    - `NAME` or `NAME#K` inside the NVTX ranges named NAME (the K-th of them, from 1), by launch time."""
    spec = spec.strip()
    if len(steps) == 0:
        return np.zeros(0, dtype=bool)
    if spec.startswith("steps="):
        lo, _, hi = spec[len("steps=") :].partition(":")
        try:
            a = int(lo) if lo else int(steps["step"].min())
            b = int(hi) if hi else int(steps["step"].max())
        except ValueError:
            raise UsageError(f"--window {spec}: steps=I:J needs step indices", "For example --window steps=3:10") from None
        return (steps["step"].to_numpy() >= a) & (steps["step"].to_numpy() <= b)
    m = re.fullmatch(r"(-?[\d.]*)\s*:\s*(-?[\d.]*)", spec)
    if m:
        try:
            t_a = float(m.group(1)) if m.group(1) else -np.inf
            t_b = float(m.group(2)) if m.group(2) else np.inf
        except ValueError:
            raise UsageError(f"--window {spec}: A:B is a time range in ms", "For example --window 100:250") from None
        t0 = float(steps["start_ns"].min())
        rel_s = (steps["start_ns"].to_numpy() - t0) / 1e6
        rel_e = (steps["end_ns"].to_numpy() - t0) / 1e6
        return (rel_s >= t_a) & (rel_e <= t_b)
    name, _, nth = spec.partition("#")
    if not trace.has("nvtx"):
        raise UsageError(f"{trace.path}: --window {spec} names an NVTX range, and the trace has no NVTX")
    n = trace.nvtx()
    ranges = n[(n["text"].astype(str) == name) & (n["end_ns"] >= n["start_ns"])].sort_values("start_ns")
    if nth:
        if not nth.isdigit() or not 1 <= int(nth) <= len(ranges):
            raise UsageError(f"--window {spec}: there are {len(ranges)} NVTX ranges named {name!r}", f"Use {name}#1 to {name}#{len(ranges)}")
        ranges = ranges.iloc[[int(nth) - 1]]
    if len(ranges) == 0:
        raise UsageError(f"{trace.path}: no NVTX range is named {name!r}", "Name a range that `nsysparse steps` or nsys shows")
    a = ranges["start_ns"].to_numpy()
    b = ranges["end_ns"].to_numpy()
    cs = steps["cpu_start_ns"].to_numpy()
    ce = steps["cpu_end_ns"].to_numpy()
    i = np.searchsorted(a, cs, side="right") - 1  # the last range starting at or before each step's first launch
    ok = i >= 0
    j = np.clip(i, 0, None)
    return ok & (cs >= a[j]) & (ce <= np.maximum.accumulate(b)[j])
