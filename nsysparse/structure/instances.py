"""Op instances: the kernels of one op inside one layer instance (or one step, outside layers) summed.

An op instance is the unit a performance engineer reads in a spreadsheet: "q_proj_b of one MoE layer
takes 16 µs" is the sum of that op's kernels in one layer instance, averaged over instances.

The grouping runs on integer codes. Kernels come sorted by start, and an op's kernels in one layer are
mostly consecutive, so the rows are first cut into runs of one (step, layer, kind, op, source) key; only the
runs (a fraction of the kernels) are sorted, by one sort of their packed key. `CodedInstances` keeps
layer_kind, op and source as codes (what ops and layers group on); `op_instances` is its frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nsysparse.columns import MAPPED_OP_INSTANCE_COLUMNS, empty_frame
from nsysparse.distinct import dense_codes

I64 = np.int64
_PACK_LIMIT = 2**62


@dataclass(frozen=True)
class CodedInstances:
    """Op instances in order of first appearance (MAPPED_OP_INSTANCE_COLUMNS as arrays), with layer_kind, op and
    source as int64 codes into the object arrays `kinds`, `ops` and `sources` (distinct strings, one code each)."""

    step: np.ndarray
    layer_id: np.ndarray
    kind: np.ndarray
    op: np.ndarray
    source: np.ndarray
    time_ns: np.ndarray
    kernels: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    kinds: np.ndarray
    ops: np.ndarray
    sources: np.ndarray

    def __len__(self) -> int:
        return len(self.step)

    def take(self, rows: np.ndarray) -> CodedInstances:
        """The instances at `rows` (a boolean mask or positions), same code tables."""
        cols = ("step", "layer_id", "kind", "op", "source", "time_ns", "kernels", "start_ns", "end_ns")
        return CodedInstances(**{c: getattr(self, c)[rows] for c in cols}, kinds=self.kinds, ops=self.ops, sources=self.sources)

    def frame(self) -> pd.DataFrame:
        """MAPPED_OP_INSTANCE_COLUMNS, text columns as plain strings."""
        if len(self) == 0:
            return empty_frame(MAPPED_OP_INSTANCE_COLUMNS)
        return pd.DataFrame(
            {
                "step": self.step,
                "layer_id": self.layer_id,
                "layer_kind": self.kinds[self.kind],
                "op": self.ops[self.op],
                "source": self.sources[self.source],
                "time_ns": self.time_ns,
                "kernels": self.kernels,
                "start_ns": self.start_ns,
                "end_ns": self.end_ns,
            }
        )[[c.name for c in MAPPED_OP_INSTANCE_COLUMNS]]


def op_instances(kernels: pd.DataFrame) -> pd.DataFrame:
    """One row per (step, layer instance, op) of the mapped `kernels` inside steps: MAPPED_OP_INSTANCE_COLUMNS,
    in order of first appearance; layer_kind, op and source as plain strings."""
    return coded_op_instances(kernels).frame()


def coded_op_instances(kernels: pd.DataFrame, step: np.ndarray | None = None) -> CodedInstances:
    """The op instances of the mapped `kernels` inside steps (step >= 0), coded. `step` replaces the kernels'
    step column (e.g. all zeros: the whole trace as one step). An instance's source is the naming source
    carrying most of its kernel time (on a tie, the source whose first kernel comes last)."""
    steps = kernels["step"].to_numpy() if step is None else np.asarray(step)
    (kind, kinds), (op, ops), (src, srcs) = (_codes(kernels[c]) for c in ("layer_kind", "op", "source"))
    cols = [steps, kernels["layer_id"].to_numpy(), kind, op, src, kernels["dur_ns"].to_numpy(), kernels["start_ns"].to_numpy(), kernels["end_ns"].to_numpy()]
    if len(steps) and steps.min() < 0:
        inside = steps >= 0
        cols = [c[inside] for c in cols]
    st, layer, kind, op, src, dur, start, end = cols
    tables = {"kinds": np.asarray(kinds, dtype=object), "ops": np.asarray(ops, dtype=object), "sources": np.asarray(srcs, dtype=object)}
    n = len(st)
    if n == 0:
        z = np.zeros(0, dtype=I64)
        return CodedInstances(z, z, z, z, z, z, z, z, z, **tables)
    # runs of consecutive rows with one (step, layer, kind, op, source), reduced over contiguous rows
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(st[1:], st[:-1], out=new[1:])
    for c in (layer, kind, op, src):
        new[1:] |= c[1:] != c[:-1]
    rb = np.flatnonzero(new)
    ends = np.append(rb[1:], n)
    csum = np.zeros(n + 1, dtype=I64)
    np.cumsum(dur, out=csum[1:])
    rt, rn = csum[ends] - csum[rb], ends - rb
    rs = start[rb] if _nondecreasing(start) else np.minimum.reduceat(start, rb)
    rising = end[1:] >= end[:-1]  # ends that rise within every run: a run's last end is its largest
    re = end[ends - 1] if bool((rising | new[1:]).all()) else np.maximum.reduceat(end, rb)
    # instances: runs with one (step, layer, kind, op) key; most are one run, the others found by one (stable,
    # timsort: the keys are nearly sorted) sort of the run keys
    key = _mixed_radix([st[rb], layer[rb]]) * (len(kinds) * len(ops))
    key += kind[rb].astype(I64) * len(ops)
    key += op[rb]
    rsrc = src[rb].astype(I64)
    order = None if _nondecreasing(key) else np.argsort(key, kind="stable")
    sk = key if order is None else key[order]
    same = sk[1:] == sk[:-1]  # a run continuing the instance of the run before it (in key order)
    if not same.any():  # every instance is one run: the runs are the instances, in order
        inst_run = np.arange(len(rb), dtype=I64)
        time_ns, kernels_n, first_start, last_end, source = rt, rn, rs, re, rsrc
    else:
        bounds = np.flatnonzero(np.concatenate(([True], ~same)))
        first_run = bounds if order is None else order[bounds]  # stable: a group's first run is its earliest
        starts = np.zeros(len(rb), dtype=bool)
        starts[first_run] = True
        inst_run = np.flatnonzero(starts)  # each instance's first run, in order of first appearance
        extra_pos = np.flatnonzero(same) + 1
        extra = extra_pos if order is None else order[extra_pos]
        owner = np.searchsorted(inst_run, first_run[np.searchsorted(bounds, extra_pos, side="right") - 1])
        time_ns, kernels_n, first_start, last_end = rt[inst_run], rn[inst_run], rs[inst_run], re[inst_run]
        np.add.at(time_ns, owner, rt[extra])
        np.add.at(kernels_n, owner, rn[extra])
        np.minimum.at(first_start, owner, rs[extra])
        np.maximum.at(last_end, owner, re[extra])
        source = rsrc[inst_run]
        mixed = np.unique(owner[rsrc[extra] != source[owner]])  # instances whose kernels carry several sources
        if len(mixed):
            more = np.isin(owner, mixed)
            ids = np.concatenate((mixed, owner[more]))
            runs = np.concatenate((inst_run[mixed], extra[more]))
            source[mixed] = _dominant_sources(ids, rsrc[runs], rt[runs], runs)
    f = rb[inst_run]
    return CodedInstances(
        step=st[f].astype(I64),
        layer_id=layer[f].astype(I64),
        kind=kind[f].astype(I64),
        op=op[f].astype(I64),
        source=source + 0,
        time_ns=time_ns,
        kernels=kernels_n.astype(I64),
        start_ns=first_start,
        end_ns=last_end,
        **tables,
    )


def _dominant_sources(inst: np.ndarray, src: np.ndarray, time: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Per instance (in `inst`'s sort order), from its runs (`inst`, `src`, `time`, `run`: run order is time order): the
    source with the most time; on a tie, the source whose first run comes last."""
    span = int(src.max()) + 1
    pairs, inv = np.unique(inst * span + src, return_inverse=True)
    pid = inv.ravel()
    tsum = np.bincount(pid, weights=time).astype(I64) if int(np.abs(time).sum()) < 2**53 else _int_sums(pid, time, len(pairs))
    pfirst = np.full(len(pairs), np.iinfo(I64).max, dtype=I64)
    np.minimum.at(pfirst, pid, run)
    pinst, psrc = pairs // span, pairs % span
    order = np.lexsort((pfirst, tsum, pinst))  # per instance: the largest time, then the latest first run
    last = np.flatnonzero(np.append(pinst[order][1:] != pinst[order][:-1], True))
    return psrc[order][last]


def _int_sums(ids: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=I64)
    np.add.at(out, ids, values)
    return out


class Segments:
    """Consecutive blocks of an array (starting at `bounds`, covering `total` elements): reductions that gather
    one-element blocks directly and reduce only the longer ones (most op instances are one run of kernels)."""

    def __init__(self, bounds: np.ndarray, total: int) -> None:
        self.bounds = bounds
        self.n = len(bounds)
        self.sizes = np.diff(np.append(bounds, total))
        self.long = np.flatnonzero(self.sizes > 1)
        lens = self.sizes[self.long]
        self._sub = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(I64)  # each long block in `_rows`
        self._rows = np.repeat(bounds[self.long] - self._sub, lens) + np.arange(int(lens.sum()), dtype=I64)

    def reduce(self, ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        out = values[self.bounds]
        if len(self.long):
            out[self.long] = ufunc.reduceat(values[self._rows], self._sub)
        return out


def _nondecreasing(a: np.ndarray) -> bool:
    return bool(np.all(a[1:] >= a[:-1]))


def _codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """`dense_codes`, keeping a categorical's small code dtype (a missing value gets the code of "")."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return dense_codes(values)
    strings = [str(c) for c in values.cat.categories]
    codes = values.cat.codes.to_numpy()
    if len(codes) and codes.min() < 0:
        return dense_codes(values)
    if "" not in strings:
        strings.append("")
    return codes, strings


def _mixed_radix(keys: list[np.ndarray]) -> np.ndarray:
    """Parallel integer columns as one non-negative int64 key, ordered as the columns (the last varies fastest).
    Columns are re-densified (np.unique) when the key would overflow."""
    out = np.zeros(len(keys[0]), dtype=I64)
    bound = 1
    for k in keys:
        lo, hi = int(k.min()), int(k.max())
        span = hi - lo + 1
        if bound * span >= _PACK_LIMIT:
            uniq, inv = np.unique(out, return_inverse=True)
            out, bound = inv.astype(I64).ravel(), len(uniq)
        out *= span
        out += k
        if lo:
            out -= lo
        bound *= span
    return out
