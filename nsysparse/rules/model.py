"""Rule-set value objects: kernel-class rules, op slots, layer templates, the loaded rule set."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SCHEMA_VERSION = 1
TEMPLATE_ROLES = ("layer", "prelude", "head", "mtp_prelude")


@dataclass(frozen=True)
class ClassRule:
    """Kernels whose short name matches `short` and demangled name matches `name` are class `cls`."""

    id: str
    cls: str
    pack: str
    short: re.Pattern[str] | None
    name: re.Pattern[str] | None
    priority: int
    op: str | None  # op when only the class is known (defaults to the class's vocabulary op)
    examples: tuple[str, ...] = ()

    def matches(self, short: str, name: str) -> bool:
        if self.short is not None and not self.short.search(short):
            return False
        return not (self.name is not None and not self.name.search(name))


@dataclass(frozen=True)
class Slot:
    """One op of a template: `pattern` is a regex over class names (`gemm splitk?`, `(ew|copy)+`)."""

    op: str
    pattern: str
    optional: bool = False


@dataclass(frozen=True)
class Template:
    """Ordered op slots describing one layer kind (or the step prelude/head) of one framework."""

    id: str
    pack: str
    role: str  # layer | prelude | head | mtp_prelude
    kind: str  # dense | moe | mtp | other
    slots: tuple[Slot, ...]
    anchor: str | None = None  # class marking one instance per layer (layer templates)
    description: str = ""
    to_end: bool = False  # only matches when it reaches the end of the step (epilogues, train tails)


@dataclass
class RuleSet:
    classes: list[ClassRule] = field(default_factory=list)  # highest priority first
    templates: list[Template] = field(default_factory=list)  # pack order, then file order
    class_ops: dict[str, str] = field(default_factory=dict)  # class -> op when only the class is known
    ops: dict[str, str] = field(default_factory=dict)  # vocabulary: op -> meaning
    aliases: dict[str, str] = field(default_factory=dict)  # normalised alias -> op
    packs: dict[str, str] = field(default_factory=dict)  # pack -> file
    digest: str = ""

    def templates_for(self, role: str) -> list[Template]:
        return [t for t in self.templates if t.role == role]

    def canonical_op(self, text: str) -> str:
        """Map an NVTX range or simulator op name to the vocabulary (unknown names are kept, normalised)."""
        key = normalise(text)
        if key in self.ops:
            return key
        if key in self.aliases:
            return self.aliases[key]
        # a framework module path ("self_attn.q_proj", "mlp.experts"): its last parts name the op
        parts = [p for p in re.split(r"[./]", text.strip()) if p]
        if len(parts) > 1 and normalise(parts[-1]) in BACKWARD_SUFFIXES:
            stem = self.canonical_op(".".join(parts[:-1]))  # a module's backward range: the module's op (the layer's
            if stem in self.ops:  # kind says backward)
                return stem
        for i in range(1, len(parts)):
            tail = normalise(".".join(parts[i:]))
            if tail in self.ops:
                return tail
            if tail in self.aliases:
                return self.aliases[tail]
        return key


BACKWARD_SUFFIXES = ("backward", "bwd", "grad")
"""Last parts of a module path that name the module's backward pass (`model.layers.3.mlp.down_proj.backward`)."""


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")
