"""The analysis context: one opened trace, the rule set (loaded once), the selection, and the notes.

Built once at the edge (a CLI command, or a user of the Python API) and handed to every analysis, which
then neither loads rules nor filters by device again:

    with AnalysisContext.open("trace.sqlite", device_id=0) as ctx:
        ops = op_summary(ctx)
        layers = layer_report(ctx)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from nsysparse.errors import UsageError
from nsysparse.rules import RuleSet, load_rules
from nsysparse.structure.mapping import DEFAULT_LAYER_PATTERN, Mapping, check_options, map_trace
from nsysparse.structure.steps import DEFAULT_STEP_PATTERN
from nsysparse.trace import Trace, open_trace


@dataclass(frozen=True)
class StructureOptions:
    """How steps, layers and ops are found: the NVTX patterns and how far NVTX is trusted (auto | steps | off)."""

    step_pattern: str = DEFAULT_STEP_PATTERN
    layer_pattern: str = DEFAULT_LAYER_PATTERN
    nvtx: str = "auto"

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
    ) -> None:
        self.trace = trace
        self.device_id = device_id
        self.options = options or StructureOptions()
        self._rules = rules
        self._rule_paths = rule_paths
        self._on_map = on_map
        self._notes: list[str] = []

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
            return map_trace(self.trace, self.rules, step_pattern=o.step_pattern, layer_pattern=o.layer_pattern, nvtx=o.nvtx)

        return self._on_map(run) if self._on_map is not None else run()

    @cached_property
    def mapping(self) -> Mapping:
        """The mapping narrowed to the selected device (the whole trace when none is selected)."""
        full = self.full_mapping
        if self.device_id is not None:
            self._check_device(sorted({int(d) for d in full.kernels["device_id"].unique()}))
        return full.on_device(self.device_id)

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
        if message not in self._notes:
            self._notes.append(message)

    @property
    def notes(self) -> list[str]:
        """The trace's notes, the mapping's (once it was computed) and the context's own, each once, in that order."""
        parts = [*self.trace.notes, *(self.__dict__["full_mapping"].notes if "full_mapping" in self.__dict__ else ()), *self._notes]
        return list(dict.fromkeys(parts))
