"""Declared output columns: every analysis states its columns (name, dtype kind, meaning) once.

Units live in the names (`_ns`, `_us`, `_ms`, `_pct`). `validate_frame` checks a frame against its
declaration; tests call it on every analysis output and `docs/columns.md` is generated from these.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

_KINDS = {
    "int": "iu",
    "float": "fiu",
    "str": "OUSTb",  # object/str/category-of-str; bool tolerated for flags rendered as text
    "bool": "b",
    "category": "OUST",
}


@dataclass(frozen=True)
class Column:
    """One output column: its name (with unit suffix), a kind (int, float, str, bool) and a meaning."""

    name: str
    kind: str
    doc: str

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown column kind {self.kind!r}")


def _dtype_char(series: pd.Series) -> str:
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "S"
    if pd.api.types.is_string_dtype(dtype):
        return "S"
    return dtype.kind


def validate_frame(df: pd.DataFrame, columns: tuple[Column, ...]) -> None:
    """Raise AssertionError-like ValueError if `df` does not have exactly the declared columns and kinds."""
    names = [c.name for c in columns]
    if list(df.columns) != names:
        raise ValueError(f"columns {list(df.columns)} != declared {names}")
    for col in columns:
        series = df[col.name]
        if series.isna().all():
            continue
        char = _dtype_char(series)
        if char not in _KINDS[col.kind]:
            raise ValueError(f"column {col.name}: dtype {series.dtype} is not {col.kind}")


def empty_frame(columns: tuple[Column, ...]) -> pd.DataFrame:
    """An empty frame with the declared columns and sensible dtypes."""
    dtypes = {"int": "int64", "float": "float64", "str": "object", "bool": "bool", "category": "object"}
    return pd.DataFrame({c.name: pd.Series(dtype=dtypes[c.kind]) for c in columns})


def describe(columns: tuple[Column, ...]) -> str:
    """Markdown table documenting columns (used by the docs generator and `--help` epilogs)."""
    lines = ["| column | kind | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.kind} | {c.doc.replace('|', chr(92) + '|')} |" for c in columns]
    return "\n".join(lines)


@dataclass(frozen=True)
class Categories:
    """A closed vocabulary stored as a pandas categorical. With `ordered`, the order is a precedence:
    the first value wins (naming sources, gap causes), so the precedence is written here and nowhere else."""

    name: str
    values: tuple[str, ...]
    doc: str
    ordered: bool = False

    @property
    def dtype(self) -> pd.CategoricalDtype:
        return pd.CategoricalDtype(list(self.values), ordered=self.ordered)

    def code(self, value: str) -> int:
        return self.values.index(value)

    def from_codes(self, codes: object) -> pd.Categorical:
        return pd.Categorical.from_codes(codes, dtype=self.dtype)


NAMING_SOURCE = Categories(
    "source",
    ("nvtx", "template", "class", "unmapped"),
    "where a kernel's op name came from, best first: an NVTX op range (for graph kernels, the range open at capture) > "
    "its slot in a layer/prelude/head template > its kernel class alone > no rule knows it",
    ordered=True,
)
LAYER_KIND = Categories(
    "layer_kind",
    ("", "dense", "moe", "mtp", "dense_bwd", "moe_bwd", "unknown"),
    "the layer a kernel is in: dense (attention + MLP), moe (router + experts), mtp (multi-token-prediction block), "
    "dense_bwd / moe_bwd (the backward of such a layer in training), unknown (a layer whose kind could not be told), "
    "empty outside layers",
)
GAP_CAUSE = Categories(
    "cause",
    (
        "unknown (no API table)",
        "unknown (no launch record)",
        "graph",
        "collective wait",
        "gpu dependency",
        "profiler",
        "launch latency",
        "sync",
        "launch-bound",
        "host work",
    ),
    "why the GPU idled, decided in this order (the first that applies wins): no API table or no launch record; "
    "a CUDA-graph node waiting on its graph; the GPU waiting on other GPU work (a collective, else a dependency); "
    "the profiler's own overhead; launch latency; a synchronising call; the host still launching; other host work",
    ordered=True,
)
VERDICT = Categories(
    "verdict",
    ("regression", "improvement", "neutral", "info", "unjudged"),
    "compare's judgement of one key: regression | improvement | neutral (within noise) | info (not judged) | unjudged (not comparable)",
)
STEP_PHASE = Categories(
    "phase",
    ("prefill", "decode", "train", "other"),
    "what the step is: a prefill forward (the first of a generate call), a decode forward, a training iteration, "
    "or other (a forward whose kind the trace does not tell)",
)
STEP_SOURCE = Categories(
    "step_source",
    ("nvtx", "inferred-repeat", "inferred-gaps", "inferred-period", "inferred-mixed", "none"),
    "where step boundaries came from: NVTX ranges, idle gaps in the GPU timeline, the period of the kernel sequence, or nowhere",
)

# -- the frames of a Mapping (nsysparse.structure.mapping): what every analysis consumes -------------------------------------
MAPPED_KERNEL_COLUMNS = (
    Column("start_ns", "int", "kernel start on the GPU"),
    Column("end_ns", "int", "kernel end on the GPU"),
    Column("dur_ns", "int", "end − start"),
    Column("device_id", "int", "GPU"),
    Column("stream_id", "int", "CUDA stream"),
    Column("pid", "int", "process that launched it"),
    Column("short_name", "category", "kernel's short name"),
    Column("name", "category", "kernel's demangled name"),
    Column("kernel_class", "category", "class from the rule packs (gemm, norm, attention, allreduce, ...)"),
    Column("rule_id", "category", "the rule that classified it"),
    Column("graph_node_id", "int", "CUDA-graph node (0: launched eagerly)"),
    Column("step", "int", "step it was launched in (-1: outside steps)"),
    Column("layer_id", "int", "layer instance (-1: outside layers)"),
    Column("layer_index", "int", "position of its layer within the step (-1: outside layers)"),
    Column("layer_name", "category", "NVTX layer range text or layer_<i>_<kind> from templates"),
    Column("layer_kind", "category", LAYER_KIND.doc),
    Column("op", "category", "logical op (q_proj_b, fmha, dispatch, ...)"),
    Column("source", "category", NAMING_SOURCE.doc),
    Column("has_launch", "bool", "whether its launching API call is in the trace"),
    Column("api_start_ns", "int", "launching call's start (NO_TIME when has_launch is false)"),
    Column("api_end_ns", "int", "launching call's end"),
    Column("global_tid", "int", "launching thread (-1 unknown)"),
)
MAPPED_STEP_COLUMNS = (
    Column("step", "int", "step index"),
    Column("pid", "int", "process (-1: inferred per device)"),
    Column("device_id", "int", "GPU of the step's first kernel"),
    Column("name", "str", "NVTX range text (empty when inferred)"),
    Column("source", "str", STEP_SOURCE.doc),
    Column("cpu_start_ns", "int", "launch window start"),
    Column("cpu_end_ns", "int", "launch window end"),
    Column("start_ns", "int", "first GPU start of the step's work"),
    Column("end_ns", "int", "last GPU end"),
    Column("wall_ns", "int", "end − start"),
    Column("busy_ns", "int", "union of the step's GPU work intervals"),
    Column("kernel_ns", "int", "summed kernel durations"),
    Column("kernels", "int", "kernels launched in the step"),
    Column("phase", "str", STEP_PHASE.doc),
    Column("warmup", "bool", "a leading step much slower than its phase's median (left out of statistics by default)"),
    Column("ordinal", "int", "position among its device's steps in time order, before any selection (neighbours differ by 1)"),
)
MAPPED_LAYER_COLUMNS = (
    Column("layer_id", "int", "layer instance"),
    Column("step", "int", "its step"),
    Column("layer_index", "int", "position within the step, in time order"),
    Column("layer_name", "str", "NVTX range text or layer_<i>_<kind>"),
    Column("layer_kind", "str", LAYER_KIND.doc),
    Column("start_ns", "int", "first kernel start"),
    Column("end_ns", "int", "last kernel end"),
    Column("kernel_ns", "int", "summed kernel durations"),
    Column("kernels", "int", "kernels in it"),
    Column("source", "str", "nvtx | template"),
)
MAPPED_GPU_OP_COLUMNS = (
    Column("kind", "category", "kernel | memcpy | memset"),
    Column("start_ns", "int", "start on the GPU"),
    Column("end_ns", "int", "end on the GPU"),
    Column("device_id", "int", "GPU"),
    Column("stream_id", "int", "CUDA stream"),
    Column("pid", "int", "process"),
    Column("step", "int", "step it was launched in (-1: outside steps)"),
    Column("graph", "bool", "launched as a CUDA-graph node"),
    Column("op", "category", "logical op (memcpy/memset for copies)"),
    Column("layer_kind", "category", LAYER_KIND.doc),
    Column("kernel_class", "category", "kernel class (memcpy/memset for copies)"),
    Column("has_launch", "bool", "whether its launching API call is in the trace"),
    Column("api_start_ns", "int", "launching call's start"),
    Column("api_end_ns", "int", "launching call's end"),
    Column("global_tid", "int", "launching thread"),
)
MAPPED_OP_INSTANCE_COLUMNS = (
    Column("step", "int", "step"),
    Column("layer_id", "int", "layer instance (-1: outside layers)"),
    Column("layer_kind", "str", LAYER_KIND.doc),
    Column("op", "str", "logical op"),
    Column("source", "str", "naming source covering most of the instance's time"),
    Column("time_ns", "int", "summed kernel durations of the op in this layer instance (or step, outside layers)"),
    Column("kernels", "int", "kernels"),
    Column("start_ns", "int", "first kernel start"),
    Column("end_ns", "int", "last kernel end"),
)
