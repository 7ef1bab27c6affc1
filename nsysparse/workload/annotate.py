"""NVTX ranges at the requested level (step, layer, op), recorded in Python too.

The record lets the CPU smoke test check the exact range sequence a GPU run would emit. NVTX is only
emitted when torch was built with CUDA and the run is on the GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

LEVELS = {"none": 0, "step": 1, "layer": 2, "op": 3}


class Annotator:
    def __init__(self, level: str, emit: bool) -> None:
        self.level = LEVELS[level]
        self.emit = emit
        self.enabled = True  # switched off for warm-up so the record holds only measured work
        self.record: list[tuple[str, str, int]] = []  # (kind, name, nesting depth) at push time
        self._depth = 0
        self._push = self._pop = None
        if emit and self.level:
            import torch.cuda.nvtx as nvtx

            self._push, self._pop = nvtx.range_push, nvtx.range_pop

    @contextmanager
    def _range(self, kind: str, need: int, name: str) -> Iterator[None]:
        active = self.enabled and self.level >= need
        if active:
            self.record.append((kind, name, self._depth))
            self._depth += 1
            if self._push is not None:
                self._push(name)
        try:
            yield
        finally:
            if active:
                self._depth -= 1
                if self._pop is not None:
                    self._pop()

    def host(self, name: str):  # type: ignore[no-untyped-def]
        """Host-side work between steps (emitted with step-level NVTX and above)."""
        return self._range("host", 1, name)

    def step(self, name: str):  # type: ignore[no-untyped-def]
        return self._range("step", 1, name)

    def layer(self, name: str):  # type: ignore[no-untyped-def]
        return self._range("layer", 2, name)

    def op(self, name: str):  # type: ignore[no-untyped-def]
        return self._range("op", 3, name)
