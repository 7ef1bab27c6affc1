"""Analysis results kept in the frame cache beside the mapping: a later command on the same file, with the
same rules, structure options, selection (device, window, warm-up) and arguments, reads the result back
instead of computing it again (the mapping is read back first all the same: its errors and notes are
those of a run without the cache).

The key extends the mapping's (`mapping_key`: rules digest, options, a digest of nsysparse's own source)
with the selection, the analysis's name and its arguments; no key, nothing kept (a rule set built in code,
TorchInductor provenance, the cache off). A result is kept only when each of its fields is a frame the
cache restores exactly or plain JSON data (str, int, float, bool, None, lists and str-keyed dicts of them:
no tuple, no numpy scalar); the notes its computing raised, on the trace and on the context, are kept
with it and raised again when it is read back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from nsysparse.analyses.mapping_cache import mapping_key, split_fields

if TYPE_CHECKING:
    from nsysparse.analyses.context import AnalysisContext

T = TypeVar("T")


def result_key(ctx: AnalysisContext, name: str, args: tuple[Any, ...]) -> str | None:
    """The name a result is kept under, or None when it is not kept."""
    base = mapping_key(ctx.rules, ctx.options) if ctx.trace.has("kernels") and ctx.trace.cache.active else None
    if base is None:
        return None
    text = "\0".join((base, name, repr(args), repr(ctx.device_id), repr(ctx.include_warmup), repr(ctx.window)))
    return "result-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> bool:
    if value is None or type(value) in (str, int, float, bool):
        return True
    if type(value) is list:
        return all(_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


def _parts(value: Any) -> tuple[dict[str, pd.DataFrame], dict[str, Any]] | None:
    """A dataclass (or a frame) as frames and plain data, or None when a field is neither."""
    if isinstance(value, pd.DataFrame):
        return {"frame": value}, {}
    if not is_dataclass(value) or isinstance(value, type):
        return None
    return split_fields(value, _plain)


def _rebuilt(cls: type[T] | None, frames: dict[str, pd.DataFrame], data: dict[str, Any]) -> T | None:
    if cls is None:
        return frames.get("frame")  # type: ignore[return-value]
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    if set(frames) | set(data) != names:
        return None  # kept by another layout of the class
    return cls(**frames, **data)


def kept_or_computed(ctx: AnalysisContext, name: str, args: tuple[Any, ...], cls: type[T] | None, compute: Callable[[], T]) -> T:
    """The result of `compute()` (a `cls` dataclass, or a DataFrame when `cls` is None), read back when it
    was kept under the same key, else computed and kept."""
    ctx.mapping  # noqa: B018 - first, as without the cache: its errors, its notes
    key = result_key(ctx, name, args)
    trace = ctx.trace
    if key is not None:
        hit = trace.kept_result(key)
        if hit is not None:
            frames, data, notes = hit
            said = data.pop("_context_notes", [])
            back = _rebuilt(cls, frames, data)
            if back is not None:
                for n in notes:
                    trace.note(n)
                for n in said:
                    ctx.note(str(n))
                return back
    value, notes, said = ctx.collecting(compute)
    if key is not None:
        parts = _parts(value)
        if parts is not None:
            frames, data = parts
            data["_context_notes"] = said
            trace.keep_result(key, frames, data, notes)
    return value
