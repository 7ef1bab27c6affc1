"""Parse a step's kernel sequence into prelude, layers, head and MTP with the rule packs' templates.

Each kernel becomes one character (its class code); each template is a regex with one named group per
op slot. At every position the longest matching template wins (layers before head before preludes on
ties). A layer found after the step's head is an MTP layer: it absorbs the MTP prelude before it and
the head after it, as DeepSeek's MTP block does. Runs no template explains are kept as "unparsed";
if they hold attention anchors they are split into layers of unknown kind at the norm before each
anchor, so layer counts survive kernels no pack knows. Parses are cached by sequence string: a trace
of thousands of identical steps is parsed once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nsysparse.distinct import map_distinct
from nsysparse.rules.model import RuleSet, Template
from nsysparse.rules.pattern import UNKNOWN_CODE, class_codes, compile_pattern
from nsysparse.structure.classes import EXPERT_CLASSES

ROLE_RANK = {"layer": 3, "head": 2, "mtp_prelude": 1, "prelude": 0}


@dataclass
class Segment:
    start: int
    end: int
    role: str  # layer | prelude | head | mtp_prelude | unparsed
    kind: str  # dense | moe | mtp | unknown | other
    template: str = ""
    slot_ops: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, op), absolute


@dataclass
class _Compiled:
    template: Template
    regex: re.Pattern[str]
    ops: list[str]


class Parser:
    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.codes = class_codes(list(rules.class_ops))
        self.anchor_code = self.codes.get("fmha")
        self.norm_code = self.codes.get("norm")
        self.moe_codes = {self.codes[c] for c in EXPERT_CLASSES if c in self.codes}
        self.mlp_codes = [self.codes[c] for c in ("act", "grouped_gemm") if c in self.codes]
        self.compiled: list[_Compiled] = []
        for t in rules.templates:
            parts, ops = [], []
            for i, slot in enumerate(t.slots):
                body = f"(?P<s{i}>{compile_pattern(slot.pattern, self.codes)})"
                parts.append(body + ("?" if slot.optional else ""))
                ops.append(slot.op)
            self.compiled.append(_Compiled(t, re.compile("".join(parts)), ops))
        self._cache: dict[tuple[str, str], list[Segment]] = {}

    # -- encoding -----------------------------------------------------------------------------------
    def encode(self, classes: pd.Series) -> np.ndarray:
        """One byte per kernel: its class code (UNKNOWN_CODE when unclassified)."""
        return map_distinct(classes, lambda c: ord(self.codes.get(c, UNKNOWN_CODE)), np.uint8, ord(UNKNOWN_CODE))

    @staticmethod
    def text(encoded: np.ndarray) -> str:
        return encoded.tobytes().decode("ascii")

    # -- matching -----------------------------------------------------------------------------------
    def _best(self, seq: str, pos: int, roles: tuple[str, ...]) -> tuple[_Compiled, re.Match[str]] | None:
        best = None
        for c in self.compiled:
            if c.template.role not in roles:
                continue
            m = c.regex.fullmatch(seq, pos) if c.template.to_end else c.regex.match(seq, pos)
            if m is None or m.end() == pos:
                continue
            key = (m.end(), ROLE_RANK[c.template.role])
            if best is None or key > best[0]:
                best = (key, c, m)
        return (best[1], best[2]) if best else None

    @staticmethod
    def _slots(c: _Compiled, m: re.Match[str]) -> list[tuple[int, int, str]]:
        out = []
        for i, op in enumerate(c.ops):
            a, b = m.span(f"s{i}")
            if a >= 0 and b > a:
                out.append((a, b, op))
        return out

    def parse(self, seq: str, kind_hint: str = "") -> list[Segment]:
        """Segments covering `seq` from 0 to len(seq). `kind_hint` ('mtp') marks an NVTX MTP layer."""
        key = (seq, kind_hint)
        if key in self._cache:
            return self._cache[key]
        segs: list[Segment] = []
        pos, n = 0, len(seq)
        unparsed_from = None
        while pos < n:
            hit = self._best(seq, pos, ("layer", "head", "mtp_prelude", "prelude"))
            if hit is None:
                if unparsed_from is None:
                    unparsed_from = pos
                pos += 1
                continue
            if unparsed_from is not None:
                segs += self._unparsed(seq, unparsed_from, pos)
                unparsed_from = None
            c, m = hit
            t = c.template
            segs.append(Segment(pos, m.end(), t.role, t.kind, t.id, self._slots(c, m)))
            pos = m.end()
        if unparsed_from is not None:
            segs += self._unparsed(seq, unparsed_from, n)
        segs = self._mtp(segs, kind_hint)
        self._cache[key] = segs
        return segs

    def fullmatch_layer(self, seq: str) -> Segment | None:
        """The best layer template matching the whole of `seq` (an NVTX-delimited layer)."""
        best = None
        for c in self.compiled:
            if c.template.role != "layer":
                continue
            m = c.regex.fullmatch(seq)
            if m is not None:
                best = Segment(0, len(seq), "layer", c.template.kind, c.template.id, self._slots(c, m))
                break
        return best

    def _unparsed(self, seq: str, a: int, b: int) -> list[Segment]:
        """Unexplained run: split into unknown-kind layers at the norm before each attention anchor."""
        if self.anchor_code is None:
            return [Segment(a, b, "unparsed", "unknown")]
        chunk = seq[a:b]
        anchors = [m.start() for m in re.finditer(f"(?:{re.escape(self.anchor_code)})+", chunk)]
        if not anchors:
            return [Segment(a, b, "unparsed", "unknown")]
        # a layer starts at the first norm after the previous MLP's activation (attention blocks have
        # several norms - MLA has three - but no activation), else at the first norm after the last anchor
        starts = []
        prev = 0
        for anc in anchors:
            last_act = max((chunk.rfind(c, prev, anc) for c in self.mlp_codes), default=-1)
            lo = max(prev, last_act + 1)
            norm = chunk.find(self.norm_code, lo, anc) if self.norm_code else -1
            starts.append(norm if norm >= 0 else anc)
            prev = anc + 1
        out = []
        if starts[0] > 0:
            out.append(Segment(a, a + starts[0], "unparsed", "unknown"))
        for i, s in enumerate(starts):
            e = starts[i + 1] if i + 1 < len(starts) else len(chunk)
            body = chunk[s:e]
            kind = "moe" if any(ch in self.moe_codes for ch in body) else "dense"
            out.append(Segment(a + s, a + e, "layer", kind, "anchor"))
        return out

    @staticmethod
    def _mtp(segs: list[Segment], kind_hint: str) -> list[Segment]:
        """Layers after the step's head are MTP layers; they absorb their prelude and trailing head."""
        out: list[Segment] = []
        seen_head = False
        i = 0
        while i < len(segs):
            s = segs[i]
            if s.role == "head":
                seen_head = True
            if s.role == "layer" and (seen_head or kind_hint == "mtp"):
                merged = Segment(s.start, s.end, "layer", "mtp", s.template, list(s.slot_ops))
                if out and out[-1].role == "mtp_prelude":
                    pre = out.pop()
                    merged.start, merged.slot_ops = pre.start, pre.slot_ops + merged.slot_ops
                if i + 1 < len(segs) and segs[i + 1].role == "head":
                    nxt = segs[i + 1]
                    merged.end, merged.slot_ops = nxt.end, merged.slot_ops + nxt.slot_ops
                    i += 1
                out.append(merged)
            else:
                out.append(s)
            i += 1
        return out
