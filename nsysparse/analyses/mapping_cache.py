"""The mapped trace kept in the frame cache: a later command on the same file, with the same rules and
structure options, reads the mapping back instead of loading the trace and mapping it again.

The key is the rule set's content digest, the options (step and layer patterns, NVTX mode) and a digest of
nsysparse's own source (`code_digest`: an edited checkout maps again); the file's own identity (path, size,
modification time) is the frame cache's key already.
Not kept: a mapping made with TorchInductor provenance (a folder whose contents may change), or with a rule
set built in code (no digest). A mapping is kept only when every frame and field round-trips exactly (the
frame cache refuses column types it cannot restore); the notes its making raised are kept with it and raised
again when it is read back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from nsysparse.rules import RuleSet
from nsysparse.structure.mapping import Mapping

if TYPE_CHECKING:
    from nsysparse.analyses.context import StructureOptions
    from nsysparse.trace import Trace

FORMAT = 1
"""Bumped whenever what is kept changes."""


def mapping_key(rules: RuleSet, options: StructureOptions) -> str | None:
    """The name the mapping is kept under, or None when it is not kept."""
    if not rules.digest or options.inductor_provenance:
        return None
    text = "\0".join((str(FORMAT), code_digest(), rules.digest, options.step_pattern, options.layer_pattern, options.nvtx))
    return "mapping-" + hashlib.sha256(text.encode()).hexdigest()[:16]


@cache
def code_digest() -> str:
    """A digest of nsysparse's own source files: a mapping made by other code (an edited checkout, another
    release) is never read back, whatever the version number says. About a megabyte read once per process."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for f in sorted(root.rglob("*.py")):
        digest.update(str(f.relative_to(root)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def _plain(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(isinstance(v, str) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def split_fields(value: Any, plain: Callable[[Any], bool], skip: tuple[str, ...] = ()) -> tuple[dict[str, pd.DataFrame], dict[str, Any]] | None:
    """A dataclass's fields (but `skip`) as its frames and its plain values (those `plain` accepts), or
    None when a field is neither."""
    frames: dict[str, pd.DataFrame] = {}
    data: dict[str, Any] = {}
    for f in fields(value):
        if f.name in skip:
            continue
        v = getattr(value, f.name)
        if isinstance(v, pd.DataFrame):
            frames[f.name] = v
        elif plain(v):
            data[f.name] = v
        else:
            return None
    return frames, data


def keep_mapping(trace: Trace, key: str, mapping: Mapping, notes: list[str]) -> bool:
    """Keep `mapping` (of the whole trace) and the notes its making raised."""
    parts = split_fields(mapping, _plain, skip=("rules",))
    if parts is None:
        return False
    frames, data = parts
    data = {k: {"tuple": list(v)} if isinstance(v, tuple) else v for k, v in data.items()}
    return trace.keep_result(key, frames, data, notes)


def kept_mapping(trace: Trace, key: str, rules: RuleSet) -> Mapping | None:
    """The mapping kept under `key`, with its notes raised again on the trace; None when there is none."""
    hit = trace.kept_result(key)
    if hit is None:
        return None
    frames, data, notes = hit
    values: dict[str, Any] = {}
    for f in fields(Mapping):
        if f.name == "rules":
            values[f.name] = rules
        elif f.name in frames:
            values[f.name] = frames[f.name]
        elif f.name in data:
            v = data[f.name]
            values[f.name] = tuple(v["tuple"]) if isinstance(v, dict) else v
        else:
            return None  # kept by another layout of Mapping
    for n in notes:
        trace.note(n)
    return Mapping(**values)
