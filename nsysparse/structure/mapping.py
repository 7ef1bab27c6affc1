"""Kernels -> (step, layer, logical op), with the source of every name.

Naming precedence, recorded per kernel in `source`:
  nvtx      innermost NVTX op range on the launching thread (for CUDA-graph node kernels: on the
            capturing thread, at node creation), reached through the correlationId;
  template  the kernel's position in a layer/prelude/head template matched inside its layer;
  class     the op of the kernel's class alone (gemm, norm, allreduce, ...);
  unmapped  no rule knows the kernel.
Steps come from NVTX ranges matching the step pattern, else are inferred (structure.steps). Layers
come from NVTX ranges matching the layer pattern, else from template parsing of each step.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd

from nsysparse import intervals
from nsysparse.columns import LAYER_KIND, MAPPED_KERNEL_COLUMNS, MAPPED_STEP_COLUMNS, NAMING_SOURCE
from nsysparse.distinct import code_dtype, dense_codes, map_distinct
from nsysparse.errors import UsageError
from nsysparse.rules import RuleSet, classify_names, load_rules
from nsysparse.structure.classes import ATTENTION_CLASSES, BACKWARD_CLASSES, MATMUL_CLASSES, MOE_LAYER_CLASSES
from nsysparse.structure.instances import op_instances
from nsysparse.structure.layer_repeats import content_kind, repeated_layers
from nsysparse.structure.layer_roles import aligned_roles, layer_roles, step_roles, train_roles
from nsysparse.structure.loops import warmup_flags
from nsysparse.structure.nvtx import build_tree
from nsysparse.structure.parse import Parser, Segment
from nsysparse.structure.runs import SortedGroups, is_sorted, run_starts, stable_order, unique_counts, unique_inverse
from nsysparse.structure.slices import Slices
from nsysparse.structure.steps import DEFAULT_STEP_PATTERN, StepWindows, assign_windows, infer_step_windows, nvtx_step_windows
from nsysparse.trace import NO_TIME, Trace

DEFAULT_LAYER_PATTERN = (
    r"(?i)^(?!.*::)(?:(?:.*?[^a-z0-9])?(?:layers?|blocks?|decoder_?layer|transformer_?(?:layer|block))[_.\[\s#:-]*\d+"
    r"|(?:.*?[^a-z0-9])?(?:mtp|nextn)(?:[_.\s-]*(?:layers?|blocks?))?(?:[_.\[\s#:-]*\d+)?\]?$)"
)
"""NVTX layer ranges: "layer_3", "model.layers.3", "decoder.layers.3", "block 3", ..., and a multi-token-prediction
block named as such ("mtp", "model.mtp", "mtp_layer.0", "nextn"); never names with "::" (framework hooks such as
"FSDP::pre_forward (blocks.15...)"). Option: --layer-pattern."""
EMIT_NVTX_SUFFIX = re.compile(r"(?is),\s*(?:seq|op_id|sizes|input_op_ids|stashed\s+seq)\s*=.*$")
"""torch.autograd.profiler.emit_nvtx's decoration of op ranges ("aten::addmm, seq = 12, op_id = 34, sizes = [...]"), stripped from op names."""
IGNORED_DOMAINS = ("CCCL", "CUB", "Thrust", "cuBLAS", "cuDNN", "NCCL")
"""NVTX domains of libraries: their ranges are never steps, layers or ops."""
KIND_FROM_NAME = (("mtp", "mtp"), ("nextn", "mtp"), ("moe", "moe"), ("expert", "moe"), ("dense", "dense"))
"""Words in an NVTX layer name that state its kind, first match wins."""
NVTX_MODES = ("auto", "steps", "off")
"""--nvtx: use NVTX for steps, layers and ops (auto), for steps only, or not at all."""


class Vocab:
    """Strings as small integer codes (per-kernel columns stay numpy int arrays, never Python strings)."""

    def __init__(self, *initial: str) -> None:
        self.values: list[str] = []
        self.index: dict[str, int] = {}
        for v in initial:
            self(v)

    def __call__(self, value: str) -> int:
        code = self.index.get(value)
        if code is None:
            code = self.index[value] = len(self.values)
            self.values.append(value)
        return code

    def categorical(self, codes: np.ndarray) -> pd.Categorical:
        """The values at `codes` (all >= 0), with only the categories used, in vocabulary order: what
        `from_codes(...).remove_unused_categories()` gives, found by counting instead of a sort of the rows."""
        if not self.values:
            return pd.Categorical([""] * len(codes))
        used = np.bincount(codes, minlength=len(self.values)) > 0
        categories = pd.Index(self.values).take(np.flatnonzero(used))
        dense = (np.cumsum(used) - 1).astype(code_dtype(len(categories)))
        return pd.Categorical.from_codes(dense[codes], dtype=pd.CategoricalDtype(categories, ordered=False), validate=False)


@dataclass(frozen=True)
class Mapping:
    """The mapped trace: frames with declared columns (nsysparse.columns.MAPPED_*_COLUMNS).

    `kernels` has one row per kernel, `steps` and `layers` one per instance, `gpu_ops` one per kernel,
    memcpy and memset (with its step, for busy time). Frozen: derived tables are cached properties, so a
    selected copy (`on_device`) computes its own instead of sharing stale ones."""

    kernels: pd.DataFrame
    steps: pd.DataFrame
    layers: pd.DataFrame
    step_source: str
    step_confidence: float
    layer_source: str
    rules: RuleSet
    gpu_ops: pd.DataFrame
    notes: tuple[str, ...] = ()
    device_id: int | None = None  # the GPU this mapping was narrowed to (None: all)

    def on_device(self, device_id: int | None) -> Mapping:
        """The same mapping narrowed to one GPU: its kernels, GPU work, steps and their layers."""
        if device_id is None:
            return self
        steps = self.steps[self.steps["device_id"] == device_id].reset_index(drop=True)
        keep = steps["step"].to_numpy()
        # a process that drives two GPUs: its steps belong to the GPU of their first kernel; this GPU's work in those
        # steps counts as outside steps here
        kernels = _steps_only(self.kernels[self.kernels["device_id"].to_numpy() == device_id].reset_index(drop=True), keep)
        return replace(
            self,
            kernels=kernels,
            gpu_ops=_steps_only(self.gpu_ops[self.gpu_ops["device_id"].to_numpy() == device_id].reset_index(drop=True), keep),
            steps=steps,
            layers=self.layers[np.isin(self.layers["step"].to_numpy(), keep)].reset_index(drop=True),
            device_id=device_id,
        )

    def steady(self) -> Mapping:
        """The same mapping without its warm-up steps (their kernels and copies count as outside steps)."""
        warm = self.steps["warmup"].to_numpy(dtype=bool) if len(self.steps) else np.zeros(0, dtype=bool)
        return self.keep_steps(~warm)

    def keep_steps(self, keep: np.ndarray) -> Mapping:
        """The same mapping with only the steps where `keep` (per row of `steps`) holds; the others' kernels and
        copies count as outside steps."""
        if keep.all():
            return self
        drop = self.steps["step"].to_numpy()[~keep]
        warm = ~keep
        k = self.kernels.copy(deep=False)
        out = _in_steps(k["step"].to_numpy(), drop)
        k["step"] = np.where(out, -1, k["step"].to_numpy())
        k["layer_id"] = np.where(out, -1, k["layer_id"].to_numpy())
        g = self.gpu_ops.copy(deep=False)
        g["step"] = np.where(_in_steps(g["step"].to_numpy(), drop), -1, g["step"].to_numpy())
        layers = self.layers[~np.isin(self.layers["step"].to_numpy(), drop)].reset_index(drop=True)
        return replace(self, kernels=k, gpu_ops=g, steps=self.steps[~warm].reset_index(drop=True), layers=layers)

    @cached_property
    def op_instances(self) -> pd.DataFrame:
        """One row per (step, layer instance, op): MAPPED_OP_INSTANCE_COLUMNS (ops, layers, compare and the report start here)."""
        return op_instances(self.kernels)


def _match(texts: pd.Series, pattern: str) -> np.ndarray:
    """Vectorised regex test over a categorical/str column (evaluated once per distinct text)."""
    if len(texts) == 0:
        return np.zeros(0, dtype=bool)
    rx = re.compile(pattern)
    return map_distinct(texts, lambda t: bool(rx.search(t)), bool, False)


def _op_name(text: str, layer_rx: re.Pattern[str], rules: RuleSet) -> str:
    """Canonical op for an NVTX range: the part after a layer prefix, through the alias table."""
    text = EMIT_NVTX_SUFFIX.sub("", text)
    m = layer_rx.search(text)
    if m and m.end() < len(text):
        text = text[m.end() :]
    return rules.canonical_op(text) or "unnamed"


def _kind_from_name(name: str) -> str | None:
    low = name.lower()
    return next((k for key, k in KIND_FROM_NAME if key in low), None)


class _NvtxAttribution:
    """Per-kernel NVTX layer range and op range (tree positions), plus step windows."""

    def __init__(self, trace: Trace, k: pd.DataFrame, capture: _Capture | None, step_pattern: str, layer_pattern: str, ignore: tuple[str, ...]) -> None:
        n = trace.nvtx()
        is_layer_text = _match(n["text"], layer_pattern)
        self.windows = nvtx_step_windows(n, step_pattern, ignore, keep=~is_layer_text)
        start, end = n["start_ns"].to_numpy(), n["end_ns"].to_numpy()
        closed = map_distinct(n["kind"], lambda kind: kind == "push_pop", bool, False) & (end > start)  # build_tree drops empty ranges
        closed &= n["end_global_tid"].to_numpy() == n["global_tid"].to_numpy()
        closed &= ~map_distinct(n["domain"], lambda d: d in ignore, bool, False)
        cols = ["start_ns", "end_ns", "global_tid", "text"]
        tree = build_tree(n[cols] if closed.all() else n[cols][closed])
        self.tree = tree
        texts = tree.frame["text"]
        cand = _match(texts, layer_pattern)
        # outermost layer-like ranges are layers; nested ones (model.layers.3.mlp) are ops
        anc = tree.nearest_flagged(cand)
        par = tree.parent
        nested = cand & (par >= 0) & (np.where(par >= 0, anc[np.clip(par, 0, None)], -1) >= 0)
        is_layer = cand & ~nested
        is_step = _match(texts, step_pattern) & ~cand
        # ranges that contain layers (model_forward, decoder) are containers, not ops
        container = tree.with_flagged_below(is_layer)
        is_op = ~is_step & ~is_layer & ~container
        graph = (k["graph_node_id"].to_numpy() > 0) & (capture.ns != NO_TIME) if capture is not None else np.zeros(0, dtype=bool)
        if capture is not None and graph.any():
            gtid = np.where(graph, capture.global_tid, k["global_tid"].to_numpy())
            ts = np.where(graph, capture.ns, k["api_start_ns"].to_numpy())
            valid = graph | k["has_launch"].to_numpy()
        else:
            gtid, ts, valid = k["global_tid"].to_numpy(), k["api_start_ns"].to_numpy(), k["has_launch"].to_numpy()
        inner = tree.innermost(gtid, ts, valid)  # -1: none, which indexes the sentinel at the end of the arrays below
        # a range holding op ranges that launch kernels is a block (`self_attn` around q/k/v/o_proj, `mlp` around its
        # projections): the kernels directly in it (the attention core) are named by templates or their class. An
        # op whose child ranges launch nothing (an allocation inside flash_attn::_flash_attn_forward) stays an op.
        launches = np.zeros(len(tree) + 1, dtype=bool)
        launches[inner] = True
        launches = launches[:-1]
        launches |= tree.with_flagged_below(launches)
        block = np.zeros(len(tree), dtype=bool)
        child = is_op & launches & (par >= 0)
        block[par[child]] = True
        is_op &= ~block
        self.is_layer = is_layer
        near_layer = tree.nearest_flagged(is_layer)
        near_op = tree.nearest_flagged(is_op, stop=is_layer | is_step)
        self.layer_pos = np.append(near_layer, -1)[inner]
        self.op_pos = np.append(near_op, -1)[inner]
        self.text_codes, self.text_values = dense_codes(texts)

    def named(self, pos: np.ndarray, name: Callable[[str], int]) -> np.ndarray:
        """name(text) of the range at each tree position of `pos` (-1 where pos is -1), as int32. Each distinct text
        that occurs is named once, in the order of the texts' codes."""
        used = np.zeros(len(self.tree) + 1, dtype=bool)
        used[pos] = True  # -1 marks the spare last entry
        present = np.bincount(self.text_codes[used[:-1]], minlength=len(self.text_values)) > 0
        table = np.full(len(self.text_values), -1, dtype=np.int32)
        for c in np.flatnonzero(present).tolist():
            table[c] = name(self.text_values[c])
        return np.append(table[self.text_codes], np.int32(-1))[pos]


def _inductor_classes(k: pd.DataFrame, rules: RuleSet, names: dict[str, str]) -> list[str]:
    """Classify the Triton kernels TorchInductor's provenance describes by their descriptive names, in place (the
    kernel keeps its own name); a note says how many kernels that covers."""
    short = k["short_name"].astype(str)
    hit = short.isin(names.keys()).to_numpy()
    if not hit.any():
        return [f"--inductor-provenance: none of its {len(names)} kernels is in this trace (another compile?)"]
    sub = k.loc[hit]
    cls = classify_names(rules, pd.Series(pd.Categorical(short[hit].map(names)), index=sub.index), sub["name"])
    for col in cls.columns:
        col_now = k[col]
        if isinstance(col_now.dtype, pd.CategoricalDtype):
            new = pd.Index(cls[col].astype(object).unique()).difference(col_now.cat.categories)
            k[col] = col_now.cat.add_categories(new)
        k.loc[hit, col] = cls[col].astype(object).to_numpy()
    n = int(short[hit].nunique())
    return [f"--inductor-provenance: {int(hit.sum())} kernels ({n} distinct Triton kernels) classified by the ATen ops TorchInductor recorded"]


@dataclass
class _Capture:
    """Per kernel of a CUDA graph: when and on which thread its node was created (NO_TIME / -1: not a graph node)."""

    ns: np.ndarray
    global_tid: np.ndarray


def _kernel_frame(trace: Trace) -> tuple[pd.DataFrame, _Capture | None]:
    """The kernels with their launches, and their graph nodes' capture (None: no graph node kernels)."""
    k = trace.launches().copy(deep=False)  # copy-on-write (pandas >= 3): new columns only
    origins = trace.graph_node_origins() if (k["graph_node_id"].to_numpy() > 0).any() else None
    if origins is None or len(origins) == 0:
        return k, None
    idx = pd.Index(origins["graph_node_id"].to_numpy())
    pos = idx.get_indexer(k["graph_node_id"].to_numpy())
    hit = pos >= 0
    at = np.clip(pos, 0, None)
    return k, _Capture(np.where(hit, origins["capture_ns"].to_numpy()[at], NO_TIME), np.where(hit, origins["capture_global_tid"].to_numpy()[at], -1))


def _steps_only(frame: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """`frame` with the step of rows outside the steps `keep` set to -1 (and their layer, where it has one)."""
    inside = _in_steps(frame["step"].to_numpy(), keep)
    if inside.all() or (frame["step"].to_numpy() < 0).all():
        return frame
    out = frame.copy(deep=False)
    gone = ~inside & (frame["step"].to_numpy() >= 0)
    out["step"] = np.where(gone, -1, frame["step"].to_numpy())
    if "layer_id" in out:
        out["layer_id"] = np.where(gone, -1, frame["layer_id"].to_numpy())
    return out


def _in_steps(step: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """np.isin(step, steps) for step numbers (-1: outside steps), by a table over the step numbers."""
    if len(step) == 0 or len(steps) == 0 or int(step.min()) < -1 or int(steps.min()) < 0:
        return np.isin(step, steps)
    table = np.zeros(max(int(step.max()), int(steps.max())) + 2, dtype=bool)  # the last entry answers for -1
    table[steps] = True
    return table[step]


def check_options(nvtx: str, step_pattern: str, layer_pattern: str) -> None:
    """Raise UsageError for an unknown NVTX mode or a pattern that is not a regular expression."""
    if nvtx not in NVTX_MODES:
        raise UsageError(f"nvtx mode must be one of {', '.join(NVTX_MODES)}")
    for flag, pat in (("--step-pattern", step_pattern), ("--layer-pattern", layer_pattern)):
        try:
            re.compile(pat)
        except re.error as err:
            raise UsageError(f"{flag} {pat!r} is not a valid regular expression ({err})") from None


@dataclass
class _Names:
    """The vocabularies behind the per-kernel integer codes: op names, layer kinds and layer names."""

    ops: Vocab
    kinds: Vocab
    layers: Vocab

    @classmethod
    def new(cls) -> _Names:
        return cls(Vocab(), Vocab(*LAYER_KIND.values), Vocab(""))


@dataclass
class _LayerCodes:
    """Per kernel: template op code, layer instance, layer kind code and layer name code (-1 / 0: none)."""

    op: np.ndarray
    layer_id: np.ndarray
    kind: np.ndarray
    name: np.ndarray

    @classmethod
    def empty(cls, n: int) -> _LayerCodes:
        return cls(np.full(n, -1, dtype=np.int32), np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int32), np.zeros(n, dtype=np.int32))


def map_trace(
    trace: Trace,
    rules: RuleSet | None = None,
    *,
    step_pattern: str = DEFAULT_STEP_PATTERN,
    layer_pattern: str = DEFAULT_LAYER_PATTERN,
    nvtx: str = "auto",
    ignore_domains: tuple[str, ...] = IGNORED_DOMAINS,
    inductor: dict[str, str] | None = None,
    inductor_notes: tuple[str, ...] = (),
) -> Mapping:
    """Map every kernel of `trace` to step, layer and op. `nvtx`: auto | steps (NVTX for steps only) | off.
    `rules`: the rule set (the analysis context loads it once; the bundled packs when None). `inductor`: Triton
    kernel name -> the descriptive name TorchInductor's provenance gives it (structure.inductor), classified instead."""
    trace.require("kernels", "op mapping")
    check_options(nvtx, step_pattern, layer_pattern)
    rules = rules or load_rules()
    trace.prefetch("kernels", "api", "memcpy", "memset", *(("nvtx",) if nvtx != "off" else ()))
    k, windows, layer_source, notes = _mapped_kernels(trace, rules, step_pattern, layer_pattern, nvtx, ignore_domains, inductor)
    gpu_ops = _gpu_ops_with_steps(trace, k, windows)
    steps = _step_table(k, gpu_ops, windows)
    layers = _layer_table(k, layer_source)
    k["layer_index"] = _layer_index(k["layer_id"].to_numpy(), layers)
    kernels = k[[c.name for c in MAPPED_KERNEL_COLUMNS]]
    return Mapping(kernels, steps, layers, windows.source, windows.confidence, layer_source, rules, gpu_ops, (*inductor_notes, *notes, *trace.notes))


def _mapped_kernels(
    trace: Trace, rules: RuleSet, step_pattern: str, layer_pattern: str, nvtx: str, ignore_domains: tuple[str, ...], inductor: dict[str, str] | None
) -> tuple[pd.DataFrame, StepWindows, str, list[str]]:
    """The kernel frame with classes, steps, layers and ops; the step windows, the layer source, and the notes (on
    the inductor classes, the steps and the layers). The NVTX tree and the per-kernel codes are freed on return,
    before the GPU-op and step tables are built."""
    k, capture = _kernel_frame(trace)
    k = pd.concat([k, classify_names(rules, k["short_name"], k["name"])], axis=1)
    inductor_notes = _inductor_classes(k, rules, inductor) if inductor else []
    att = _NvtxAttribution(trace, k, capture, step_pattern, layer_pattern, ignore_domains) if nvtx != "off" and trace.has("nvtx") else None
    windows, k["step"], notes = _find_steps(trace, k, att, nvtx)

    parser = Parser(rules)
    enc = parser.encode(k["kernel_class"])
    names = _Names.new()
    codes, layer_source, layer_notes = _find_layers(parser, k, enc, att if nvtx == "auto" else None, names)
    k["layer_id"] = codes.layer_id
    k["layer_kind"] = names.kinds.categorical(np.where(codes.layer_id >= 0, codes.kind, 0))
    k["layer_name"] = names.layers.categorical(np.where(codes.layer_id >= 0, codes.name, 0))
    nvtx_op = _nvtx_op_codes(att, names.ops, rules, re.compile(layer_pattern), len(k)) if nvtx == "auto" else np.full(len(k), -1, dtype=np.int32)
    class_op = map_distinct(k["class_op"], lambda c: names.ops(c) if c else -1, np.int32, -1)
    op, source = _by_precedence((nvtx_op, codes.op, class_op), names.ops("unmapped"))
    k["op"] = names.ops.categorical(op)
    k["source"] = NAMING_SOURCE.from_codes(source)
    k["dur_ns"] = k["end_ns"] - k["start_ns"]
    return k, windows, layer_source, [*inductor_notes, *notes, *layer_notes]


def _by_precedence(candidates: tuple[np.ndarray, ...], unmapped: int) -> tuple[np.ndarray, np.ndarray]:
    """Per kernel, the op code of the first naming source (NAMING_SOURCE order) that has one (-1: none),
    and that source's code; kernels no source names get `unmapped` and the last source."""
    op = np.full(len(candidates[0]), unmapped, dtype=np.int32)
    source = np.full(len(op), NAMING_SOURCE.code("unmapped"), dtype=np.int8)
    for i, cand in reversed(list(enumerate(candidates))):  # the best source is written last
        has = cand >= 0
        op = np.where(has, cand, op).astype(np.int32, copy=False)
        source = np.where(has, np.int8(i), source)
    return op, source


def _find_steps(trace: Trace, k: pd.DataFrame, att: _NvtxAttribution | None, nvtx: str) -> tuple[StepWindows, np.ndarray, list[str]]:
    """Step windows from NVTX ranges when any match the step pattern, else inferred; each kernel's step."""
    notes: list[str] = []
    if att is not None and len(att.windows):
        windows = StepWindows(att.windows.drop(columns=["container"]).assign(device_id=-1, gpu_only=False), "nvtx", 1.0)
        k_step = assign_windows(k["pid"].to_numpy(), k["api_start_ns"].to_numpy(), k["has_launch"].to_numpy(), windows.frame, "pid")
        graph_launch = (k["graph_node_id"].to_numpy() > 0) & ~k["has_launch"].to_numpy()
        if graph_launch.any():
            notes.append(f"{int(graph_launch.sum())} graph kernels have no launch record; they are not in any step")
        return windows, k_step, notes
    windows = infer_step_windows(k, k["name"].cat.codes.to_numpy())
    k_step = windows.kernel_step if windows.kernel_step is not None else np.full(len(k), -1)
    why = "no NVTX" if not trace.has("nvtx") else ("NVTX ignored (--nvtx off)" if nvtx == "off" else "no NVTX range matches the step pattern")
    notes.append(f"steps inferred ({why}): " + "; ".join(windows.notes))
    outside = _outside_steps(k, k_step)
    if outside:
        notes.append(outside)
    return windows, k_step, notes


def _outside_steps(k: pd.DataFrame, step: np.ndarray) -> str | None:
    """A note counting every kernel outside steps: before the first step of its device (set-up, warm-up outside the
    loop), between steps (sampling, stopping checks) and after the last."""
    out = step < 0
    if not out.any() or out.all():
        return None
    dev = k["device_id"].to_numpy()
    start = k["start_ns"].to_numpy()
    frame = pd.DataFrame({"dev": dev, "start": start, "in": ~out})
    span = frame[frame["in"]].groupby("dev")["start"].agg(["min", "max"])
    lo = span["min"].reindex(dev).to_numpy()
    hi = span["max"].reindex(dev).to_numpy()
    before = int((out & ((start < lo) | np.isnan(lo))).sum())
    after = int((out & (start > hi)).sum())
    between = int(out.sum()) - before - after
    return f"{int(out.sum())} of {len(k)} kernels are outside steps: {before} before the first step, {between} between steps, {after} after the last"


def _find_layers(parser: Parser, k: pd.DataFrame, enc: np.ndarray, att: _NvtxAttribution | None, names: _Names) -> tuple[_LayerCodes, str, list[str]]:
    """Layers from NVTX layer ranges (templates name the ops inside them), else from template parsing of
    each step. Returns the per-kernel codes, the layer source and notes."""
    n = len(k)
    codes = _LayerCodes.empty(n)
    notes: list[str] = []
    if att is None or not bool((att.layer_pos >= 0).any()):
        _parse_steps(parser, k, enc, codes, names, notes)
        return codes, "template", notes
    has = att.layer_pos >= 0
    # one instance per (step, layer range): a CUDA graph's capture-time range recurs every replay
    step = k["step"].to_numpy()
    _, codes.layer_id[has] = unique_inverse(step[has] * (len(att.tree) + 1) + att.layer_pos[has])
    np.copyto(codes.name, att.named(att.layer_pos, names.layers), where=has)
    _template_ops_in_layers(parser, k, enc, codes, names)
    # kernels of a step outside its NVTX layers (embedding, LM head, sampling): prelude/head templates
    # steps with no NVTX layer range at all (CUDA-graph replays of a forward whose module hooks ran only while it
    # was captured, or eagerly) get the layers found without NVTX, so every step has its layers
    with_ranges = np.zeros(int(step.max()) + 2, dtype=bool)  # per step (the last entry: kernels outside steps)
    with_ranges[step[has]] = True
    without = (step >= 0) & ~with_ranges[step]
    outside = _LayerCodes.empty(n)
    other = _Names(names.ops, Vocab(*LAYER_KIND.values), Vocab(""))
    _parse_steps(parser, k, enc, outside, other, [], layers=bool(without.any()))
    fill = (codes.layer_id < 0) & (outside.op >= 0)
    codes.op[fill] = outside.op[fill]
    bare = without & (outside.layer_id >= 0)
    if bare.any():
        codes.layer_id[bare] = outside.layer_id[bare] + int(codes.layer_id.max()) + 1
        kind_map = np.array([names.kinds(v) for v in other.kinds.values], dtype=np.int32)
        name_map = np.array([names.layers(v) for v in other.layers.values], dtype=np.int32)
        codes.kind[bare] = kind_map[outside.kind[bare]]
        codes.name[bare] = name_map[outside.name[bare]]
        notes.append(f"{len(np.unique(step[bare]))} steps have no NVTX layer ranges: their layers were found without NVTX")
    return codes, "nvtx", notes


def _nvtx_op_codes(att: _NvtxAttribution | None, ops: Vocab, rules: RuleSet, layer_rx: re.Pattern[str], n: int) -> np.ndarray:
    """Op code of each kernel's innermost NVTX op range (-1: none). Each distinct range text is named once."""
    if att is None:
        return np.full(n, -1, dtype=np.int32)
    return att.named(att.op_pos, lambda text: ops(_op_name(text, layer_rx, rules)))


def _layer_index(layer_id: np.ndarray, layers: pd.DataFrame) -> np.ndarray:
    """Each kernel's layer position within its step, in time order (-1 outside layers)."""
    if len(layers) == 0:
        return np.full(len(layer_id), -1, dtype=np.int64)
    ids = layers["layer_id"].to_numpy()
    table = np.full(max(int(ids.max()), int(layer_id.max())) + 2, -1, dtype=np.int64)  # layer ids are small dense integers
    table[ids] = layers["layer_index"].to_numpy()
    return table[layer_id]  # -1 (outside layers) picks the unused last entry, -1


def _segment_arrays(parser: Parser, segs: list[Segment], length: int, ops: Vocab, kinds: Vocab) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per position of a parsed sequence: op code (-1 none), layer ordinal (-1 outside layers), kind
    code of that layer (-1), and the number of unparsed positions."""
    op = np.full(length, -1, dtype=np.int32)
    ordinal = np.full(length, -1, dtype=np.int32)
    kind = np.full(length, -1, dtype=np.int32)
    unparsed = 0
    n = 0
    for sg in segs:
        for x, y, opname in sg.slot_ops:
            op[x:y] = ops(opname)
        if sg.role == "layer":
            ordinal[sg.start : sg.end] = n
            kind[sg.start : sg.end] = kinds(sg.kind)
            n += 1
        elif sg.role == "unparsed":
            unparsed += sg.end - sg.start
    return op, ordinal, kind, unparsed


def _role_ops(parser: Parser, c: np.ndarray, ordinal: np.ndarray, ops: Vocab, kinds: list[str], name_codes: np.ndarray | None = None) -> np.ndarray:
    """Op codes of one step signature from the roles its kernels play (structure.layer_roles): inside each repeated
    forward layer, around the layers (prelude and head of the forward, which ends at the first loss kernel), and in a
    training step's loss, backward and optimizer. A kernel no role names gets -1 (it keeps its class name): the
    templates did not describe this step, so none of their slots is trusted here."""
    names_of = {ord(code): cls for cls, code in parser.codes.items()}
    classes = [names_of.get(int(x), "") for x in c.tolist()]  # one step signature's kernels, parsed once
    names = [""] * len(classes)
    # alignment keys: a matrix multiply by its kernel name (the rotary table's product is another GEMM than a
    # projection's), any other kernel by its class (compiled layers give the same fusion another name per layer)
    keys = [f"{cls}:{int(name_codes[i])}" if name_codes is not None and cls in ("gemm", "grouped_gemm") else cls for i, cls in enumerate(classes)]
    ids = np.unique(ordinal[ordinal >= 0]).tolist()
    layers = [np.nonzero(ordinal == lid)[0].tolist() for lid in ids]
    kind = [kinds[lid] if lid < len(kinds) else "" for lid in ids]
    roles = [layer_roles([classes[i] for i in pos]) for pos in layers]  # layers of one step signature
    for j, (pos, r) in enumerate(zip(layers, roles)):
        # a forward layer no role fits (the first one, holding the rotary table): align it to a named one of its kind
        named = [x for x in range(len(layers)) if any(roles[x]) and kind[x] == kind[j]]
        if not any(r) and named and not kind[j].endswith("_bwd"):
            ref = max(named, key=lambda x: len(layers[x]))
            r = aligned_roles([keys[i] for i in layers[ref]], roles[ref], [keys[i] for i in pos])
        for i, name in zip(pos, r):
            names[i] = name
    fend = classes.index("loss") + 1 if "loss" in classes else len(classes)
    for i, name in enumerate(step_roles(classes[:fend], (ordinal[:fend] >= 0).tolist())):
        names[i] = names[i] or name
    if fend < len(classes):
        for i, name in enumerate(train_roles(classes, names)):
            names[i] = names[i] or name
    return np.array([ops(x) if x else -1 for x in names], dtype=np.int32)


TEMPLATE_MISS_SHARE = 0.1
"""A step whose kernels the layer templates leave unparsed beyond this share gets its layers from repetition."""
TEMPLATE_MIN_NAMED = 0.5
"""A step whose kernels the templates parse but name less than this share of (slots that only give classes: a
compiled step matching a generic template) also gets its layers and names from repetition and roles."""


class _ClassFlags:
    """Which parser class codes are matrix multiplies, MoE kernels and attention (for content-based layer kinds)."""

    def __init__(self, parser: Parser) -> None:
        def codes_of(classes: tuple[str, ...]) -> np.ndarray:
            return np.array([ord(parser.codes[c]) for c in classes if c in parser.codes], dtype=np.uint8)

        self.gemm = codes_of(MATMUL_CLASSES)
        self.moe = codes_of(MOE_LAYER_CLASSES)
        self.attn = codes_of(ATTENTION_CLASSES)
        self.bwd = codes_of(BACKWARD_CLASSES)
        self.norm = codes_of(("norm",))

    def norm_of(self, c: np.ndarray) -> np.ndarray:
        return np.isin(c, self.norm)

    def of(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return np.isin(c, self.gemm), np.isin(c, self.moe), np.isin(c, self.attn), np.isin(c, self.bwd)


def _template_ops_in_layers(parser: Parser, k: pd.DataFrame, enc: np.ndarray, codes: _LayerCodes, names: _Names) -> None:
    """NVTX delimits the layers; templates name the ops inside them (kind from the name or template).
    Layers with the same kernel sequence and name hint are parsed once and written in one step."""
    has = np.flatnonzero(codes.layer_id >= 0)
    if len(has) == 0:
        return
    start = k["start_ns"].to_numpy()[has]
    by_id = stable_order(codes.layer_id[has]) if is_sorted(start) else np.lexsort((start, codes.layer_id[has]))
    order = has if by_id is None else has[by_id]  # each layer's kernels in time order, layers in id order
    starts = run_starts(codes.layer_id[order])
    hint_of = np.array([_kind_from_name(v) or "" for v in names.layers.values], dtype=object)
    flags = _ClassFlags(parser)
    slices = Slices(order, starts, Parser.text(enc[order]), hint_of[codes.name[order[starts]]].tolist())
    ops, kinds = [], []
    for seq, hint in slices.keys:
        seg = parser.fullmatch_layer(seq) if hint != "mtp" else None
        segs = [seg] if seg is not None else parser.parse(seq, "mtp" if hint == "mtp" else "")
        if seg is None and not hint:  # no template is this layer: its kind comes from its content, and only layer
            # templates may name kernels inside it (a prelude's `embed` or a head's `sample` slot would misfire)
            kind = content_kind(*flags.of(np.frombuffer(seq.encode("ascii"), dtype=np.uint8))[1:])
            segs = [x for x in segs if x.role == "layer"]
        else:
            kind = hint or next((x.kind for x in segs if x.role == "layer"), None) or "unknown"
        op, _, _, _ = _segment_arrays(parser, segs, len(seq), names.ops, names.kinds)
        ops.append(op)
        kinds.append(np.full(len(seq), names.kinds(kind), dtype=np.int32))
    slices.write(codes.op, slices.spread(ops))  # -1 where no slot names a kernel, as the codes start
    slices.write(codes.kind, slices.spread(kinds))


def _parse_steps(parser: Parser, k: pd.DataFrame, enc: np.ndarray, codes: _LayerCodes, names: _Names, notes: list[str], layers: bool = True) -> None:
    """No NVTX layers: parse each step's primary-stream sequence; other streams join by time.
    Steps with the same sequence are parsed once and written in one step. Without `layers`, only the ops are
    written (the prelude and head ops around NVTX layers), not the layer ids, kinds and names."""
    step = k["step"].to_numpy()
    has = np.flatnonzero(step >= 0)
    if len(has) == 0:
        notes.append("no steps, so no layers: kernels are named by class only")
        return
    streams = k["stream_id"].to_numpy().astype(np.int64, copy=False)
    devices = k["device_id"].to_numpy().astype(np.int64, copy=False)
    start = k["start_ns"].to_numpy()
    if _constant(streams) and _constant(devices):  # one stream: it is every step's primary stream
        main, other = has, has[:0]
    else:
        # the primary stream of each step: the (device, stream) with the most kernels in it
        # (ties: the smaller key), from the counts of the few distinct (step, key) pairs
        keys, code = unique_inverse(devices[has] * (1 << 32) + streams[has])
        pair, count = unique_counts(step[has] * len(keys) + code)
        pstep, pkey = pair // len(keys), pair % len(keys)
        best = np.lexsort((pkey, -count, pstep))
        first = best[np.concatenate(([True], pstep[best][1:] != pstep[best][:-1]))]
        main_code = np.full(int(step.max()) + 1, -1, dtype=np.int64)
        main_code[pstep[first]] = pkey[first]
        is_main = code == main_code[step[has]]
        main = has if is_main.all() else has[is_main]
        other = has[~is_main]
    every = len(main) == len(step)  # every kernel is in a step, on its primary stream: no row selection

    def of_main(values: np.ndarray) -> np.ndarray:
        return values if every else values[main]

    by_step = stable_order(of_main(step)) if is_sorted(of_main(start)) else np.lexsort((of_main(start), of_main(step)))  # kernels come sorted by start
    order = main if by_step is None else main[by_step]
    if every and by_step is None:  # the rows themselves, in order
        slices = Slices(None, run_starts(step), Parser.text(enc))
    else:
        slices = Slices(order, run_starts(step[order]), Parser.text(enc[order]))
    n_layers = np.zeros(len(slices), dtype=np.int64)
    parsed = []
    unparsed = 0
    flags = _ClassFlags(parser)
    name_codes = k["name"].cat.codes.to_numpy()
    repeated = no_layers = 0
    for g, (seq, _) in enumerate(slices.keys):
        members = int(slices.count[g])
        segs = parser.parse(seq)
        op, ordinal, kind, miss = _segment_arrays(parser, segs, len(seq), names.ops, names.kinds)
        only_mtp = bool((ordinal >= 0).any()) and {names.kinds.values[c] for c in np.unique(kind[ordinal >= 0])} <= {"mtp"}
        unnamed = int((op < 0).sum()) > (1 - TEMPLATE_MIN_NAMED) * len(seq)  # layers matched, their ops not
        if miss > TEMPLATE_MISS_SHARE * len(seq) or only_mtp or unnamed:
            # the templates do not describe this step (framework code we have no template for): its layers are the
            # blocks that repeat inside it, their kinds told by content
            c = np.frombuffer(seq.encode("ascii"), dtype=np.uint8)
            a = int(slices.starts[slices.first[g]])
            names_seq = name_codes[order[a : a + len(seq)]].astype(np.int64)  # kernel names repeat where classes may not line up
            ordinal, kinds = repeated_layers(names_seq, *flags.of(c), is_norm=flags.norm_of(c))
            if not kinds:  # compiled code: each layer's fused kernels have their own names, their classes repeat
                ordinal, kinds = repeated_layers(c.astype(np.int64), *flags.of(c), is_norm=flags.norm_of(c))
            if not kinds:
                no_layers += members
            op = _role_ops(parser, c, ordinal, names.ops, kinds, names_seq)
            kind = np.where(ordinal >= 0, np.array([names.kinds(x) for x in kinds] or [0], dtype=np.int32)[np.clip(ordinal, 0, None)], -1).astype(np.int32)
            miss = 0
            repeated += members
        n_layers[g] = int(ordinal.max()) + 1 if len(ordinal) else 0
        unparsed += miss * members
        parsed.append((op, ordinal, kind))
    slices.write(codes.op, slices.spread([p[0] for p in parsed]))  # -1 where no slot or role names a kernel, as the codes start
    if unparsed:
        notes.append(f"{unparsed} kernels inside steps matched no template; they are named by class")
    if repeated - no_layers:
        notes.append(f"layers of {repeated - no_layers} steps are their repeated blocks (no template matched): kinds from content, ops named by their roles")
    if no_layers:
        notes.append(f"no layers in {no_layers} steps: no template matched and no repeated block holds attention or MoE kernels")
    if layers:
        _write_layers(slices, parsed, n_layers, codes, names)
        if len(other):
            _place_secondary(k, other, codes)
            notes.append(f"{len(other)} kernels on secondary streams were placed in layers by time and named by class")


def _constant(values: np.ndarray) -> bool:
    return len(values) == 0 or int(values.min()) == int(values.max())


def _write_layers(slices: Slices, parsed: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_layers: np.ndarray, codes: _LayerCodes, names: _Names) -> None:
    """Layer id, kind and name of every kernel of the parsed steps (ids numbered step after step)."""
    per_step = n_layers[slices.group]
    base = np.concatenate(([0], np.cumsum(per_step)[:-1]))  # first layer id of each step, in step order
    labels = []
    for _, ordinal, kind in parsed:  # layer names, named in the order the steps' layers were found
        label = np.zeros(len(ordinal), dtype=np.int32)
        inl = ordinal >= 0
        label[inl] = [names.layers(f"layer_{o}_{names.kinds.values[c]}") for o, c in zip(ordinal[inl], kind[inl])]
        labels.append(label)
    ordinal = slices.spread([p[1].astype(np.int64) for p in parsed])
    inl = ordinal >= 0
    slices.write(codes.layer_id, slices.per_position(base) + ordinal, keep=inl)
    slices.write(codes.kind, slices.spread([p[2] for p in parsed]), keep=inl)
    slices.write(codes.name, slices.spread(labels), keep=inl)


def _place_secondary(k: pd.DataFrame, rows: np.ndarray, codes: _LayerCodes) -> None:
    """Kernels on other streams than their step's primary one join the layer running when they start (by time)."""
    lid = np.flatnonzero(codes.layer_id >= 0)
    if len(lid) == 0:
        return
    start = k["start_ns"].to_numpy()
    layer = SortedGroups(codes.layer_id[lid])
    at_first = lid[layer.first()]
    span = pd.DataFrame(
        {
            "s": layer.reduce(np.minimum, start[lid]),
            "e": layer.reduce(np.maximum, k["end_ns"].to_numpy()[lid]),
            "kind": codes.kind[at_first],
            "name": codes.name[at_first],
        },
        index=pd.Index(layer.keys, name="id"),
    ).sort_values("s")
    pos = intervals.assign_to_windows(start[rows], span["s"].to_numpy(), span["e"].to_numpy())
    ok = pos >= 0
    at = np.clip(pos, 0, None)
    codes.layer_id[rows[ok]] = span.index.to_numpy()[at][ok]
    codes.kind[rows[ok]] = span["kind"].to_numpy()[at][ok]
    codes.name[rows[ok]] = span["name"].to_numpy()[at][ok]


def _gpu_ops_with_steps(trace: Trace, k: pd.DataFrame, windows: StepWindows) -> pd.DataFrame:
    """Kernels plus memcpy/memset, each with the step it was launched in (for busy/wall time), in (start, end) order.
    Built column by column from numpy arrays; text columns stay categorical (the kernels' categories, then the
    copies' labels), built from codes."""
    launch_cols = ["has_launch", "api_start_ns", "api_end_ns", "global_tid"]
    num_cols = ["start_ns", "end_ns", "device_id", "stream_id", "pid", "step", *launch_cols]
    parts: list[tuple[str, pd.DataFrame, np.ndarray]] = [("kernel", k, k["step"].to_numpy())]
    for kind in ("memcpy", "memset") if trace.has("api") else ():
        if trace.has(kind):
            m = trace.launches_of(kind)
            key = "pid" if windows.source == "nvtx" else "device_id"
            parts.append((kind, m, assign_windows(m[key].to_numpy(), m["api_start_ns"].to_numpy(), m["has_launch"].to_numpy(), windows.frame, key)))
    sizes = [len(f) for _, f, _ in parts]
    place = _merged_positions([f["start_ns"].to_numpy() for _, f, _ in parts], [f["end_ns"].to_numpy() for _, f, _ in parts])

    def column(arrays: list[np.ndarray]) -> np.ndarray:
        """The parts' values at their merged positions, written straight into the new column."""
        out = np.empty(sum(sizes), dtype=np.result_type(*arrays))
        for at, values in zip(place, arrays):
            out[at] = values
        return out

    out: dict[str, object] = {
        "kind": pd.Categorical.from_codes(column([np.full(n, i, dtype=np.int8) for i, n in enumerate(sizes)]), categories=[p[0] for p in parts])
    }
    for c in num_cols:
        out[c] = column([st if c == "step" else f[c].to_numpy() for _, f, st in parts])
    out["graph"] = column([f["graph_node_id"].to_numpy() > 0 for _, f, _ in parts])
    for c, labels in (("op", [p[0] for p in parts[1:]]), ("layer_kind", [""] * (len(parts) - 1)), ("kernel_class", [p[0] for p in parts[1:]])):
        cats = list(k[c].cat.categories)
        for label in labels:
            if label not in cats:
                cats.append(label)
        dtype = code_dtype(len(cats))  # the codes are built in the type pandas keeps them in
        codes = [k[c].cat.codes.to_numpy().astype(dtype, copy=False), *(np.full(n, cats.index(label), dtype=dtype) for label, n in zip(labels, sizes[1:]))]
        out[c] = pd.Categorical.from_codes(column(codes), dtype=pd.CategoricalDtype(cats), validate=False)
    cols = ["kind", "start_ns", "end_ns", "device_id", "stream_id", "pid", "step", "graph", "op", "layer_kind", "kernel_class", *launch_cols]
    return pd.DataFrame({c: out[c] for c in cols}, copy=False)


def _merged_positions(starts: list[np.ndarray], ends: list[np.ndarray]) -> list[np.ndarray]:
    """Where each row of each part goes when the parts are concatenated and put in (start, end) order (ties: in
    concatenation order), as np.lexsort((end, start)) orders them. The parts come sorted by start (kernels, then
    the few copies): a stable sort of the starts merges them, and a lexsort remains only for ties of start whose
    ends are out of order."""
    start, end = np.concatenate(starts), np.concatenate(ends)
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    if bool(((s[1:] == s[:-1]) & (e[1:] < e[:-1])).any()):
        order = np.lexsort((end, start))
    place = np.empty(len(order), dtype=np.int64)
    place[order] = np.arange(len(order))
    return np.split(place, np.cumsum([len(x) for x in starts])[:-1])


def _step_table(k: pd.DataFrame, ops: pd.DataFrame, windows: StepWindows) -> pd.DataFrame:
    cols = [c.name for c in MAPPED_STEP_COLUMNS]
    w = windows.frame
    step = ops["step"].to_numpy()
    sel = step >= 0
    if len(w) == 0 or not sel.any():
        return pd.DataFrame(columns=cols)
    # step numbers are small dense integers, in time order: grouping by them is (at most) one stable sort
    every = bool(sel.all())  # every op in a step: no row selection

    def in_steps(values: np.ndarray) -> np.ndarray:
        return values if every else values[sel]

    g = SortedGroups(in_steps(step))
    start, end = in_steps(ops["start_ns"].to_numpy()), in_steps(ops["end_ns"].to_numpy())
    uniq = g.keys
    agg = pd.DataFrame({"start_ns": g.reduce(np.minimum, start), "end_ns": g.reduce(np.maximum, end)}, index=pd.Index(uniq, name="step"))
    agg["busy_ns"] = g.union(start, end)
    ks = k["step"].to_numpy()
    kin = None if int(ks.min()) >= 0 else np.flatnonzero(ks >= 0)
    kg = SortedGroups(ks if kin is None else ks[kin])
    has = kg.keys
    dur = k["dur_ns"].to_numpy()
    agg["kernel_ns"] = pd.Series(kg.reduce(np.add, dur if kin is None else dur[kin]), index=has)
    agg["kernels"] = pd.Series(kg.size(), index=has)
    first = kg.first() if kin is None else kin[kg.first()]  # each step's first kernel
    dev = pd.Series(k["device_id"].to_numpy()[first], index=has)  # a step's kernels run on the device of its launching process
    out = w.set_index("step").join(agg, how="inner")
    out["device_id"] = dev.reindex(out.index).fillna(-1).astype(np.int64)
    out["wall_ns"] = out["end_ns"] - out["start_ns"]
    out["source"] = windows.source
    out = out.reset_index()
    for c in ("start_ns", "end_ns", "wall_ns", "busy_ns", "kernel_ns", "kernels"):
        out[c] = out[c].fillna(0).astype(np.int64)
    out["phase"] = out["phase"].astype(object) if "phase" in out else "other"
    out = out.sort_values(["device_id", "start_ns"]).reset_index(drop=True)
    out["warmup"] = warmup_flags(out["phase"].to_numpy(), out["wall_ns"].to_numpy(), out["device_id"].to_numpy())
    out["ordinal"] = out.groupby("device_id").cumcount().to_numpy(dtype=np.int64)
    return out[cols]


def _layer_table(k: pd.DataFrame, source: str) -> pd.DataFrame:
    cols = ["layer_id", "step", "layer_index", "layer_name", "layer_kind", "start_ns", "end_ns", "kernel_ns", "kernels", "source"]
    lid = k["layer_id"].to_numpy()
    has = np.flatnonzero(lid >= 0)
    if len(has) == 0:
        return pd.DataFrame(columns=cols)
    g = SortedGroups(lid[has])  # layers in id order (ids are numbered in time order: usually no sort at all)
    first = has[g.first()]  # a layer lies inside one step: its first kernel's step, name and kind are the layer's

    def per_layer(column: str) -> np.ndarray:
        return k[column].to_numpy()[has]

    out = pd.DataFrame(
        {
            "layer_id": lid[first],
            "step": k["step"].to_numpy()[first],
            "layer_name": k["layer_name"].array.take(first),
            "layer_kind": k["layer_kind"].array.take(first).astype(str),
            "start_ns": g.reduce(np.minimum, per_layer("start_ns")),
            "end_ns": g.reduce(np.maximum, per_layer("end_ns")),
            "kernel_ns": g.reduce(np.add, per_layer("dur_ns")),
            "kernels": g.size(),
        }
    )
    out = out.sort_values(["step", "start_ns"]).reset_index(drop=True)
    out["layer_index"] = out.groupby("step").cumcount()
    out["source"] = source
    return out[cols]
