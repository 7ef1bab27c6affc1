"""The per-layer cost table: layer kind × op, per-kind layer totals, and the step-time reconciliation.

Reconciliation (means over steps, so the lines add up exactly):
    Σ_kind (layers of that kind per step × kernel time of one such layer)
  + kernel time outside layers (embedding, LM head, sampling, ...)
  − kernel time counted twice because kernels ran concurrently
  + memcpy/memset time not hidden under kernels
  + idle GPU time inside the step
  = measured step time (first GPU start to last GPU end)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nsysparse import intervals
from nsysparse.analyses.context import AnalysisContext
from nsysparse.analyses.instances import CodeGroups, coded_instances, int_sums
from nsysparse.analyses.kept import kept_or_computed
from nsysparse.columns import Column, empty_frame
from nsysparse.distinct import map_distinct
from nsysparse.structure.instances import CodedInstances, Segments

OP_COLUMNS = (
    Column("layer_kind", "str", "dense | moe | mtp | unknown"),
    Column("op", "str", "logical op"),
    Column("count_per_step", "float", "instances per step (one per layer of that kind that runs the op)"),
    Column("mean_us", "float", "mean time of one instance (sum of its kernels in one layer)"),
    Column("median_us", "float", "median time of one instance"),
    Column("p10_us", "float", "10th percentile over instances"),
    Column("p90_us", "float", "90th percentile over instances"),
    Column("total_us_per_step", "float", "count_per_step × mean_us"),
    Column("share_of_layer_pct", "float", "share of one layer of that kind"),
    Column("source", "str", "naming source covering most of the op's time"),
)
KIND_COLUMNS = (
    Column("layer_kind", "str", "dense | moe | mtp | unknown"),
    Column("count_per_step", "float", "layers of this kind per step"),
    Column("kernel_us", "float", "summed kernel time of one layer (mean over layers)"),
    Column("wall_us", "float", "first kernel start to last kernel end of one layer (mean)"),
    Column("kernels", "float", "kernels in one layer (mean)"),
    Column("total_us_per_step", "float", "count_per_step × kernel_us"),
    Column("share_of_step_pct", "float", "share of the measured step time"),
)
RECON_COLUMNS = (
    Column("component", "str", "reconciliation line"),
    Column("count_per_step", "float", "instances per step (layers lines)"),
    Column("us_each", "float", "time of one instance (layers lines)"),
    Column("us_per_step", "float", "contribution to the mean step time (negative: subtracted)"),
    Column("detail", "str", "what the line holds"),
)
UNMAPPED_COLUMNS = (
    Column("short_name", "str", "kernel short name"),
    Column("count", "int", "instances inside steps"),
    Column("total_us", "float", "summed duration inside steps"),
    Column("share_pct", "float", "share of kernel time inside steps"),
)


@dataclass
class LayerReport:
    ops: pd.DataFrame
    kinds: pd.DataFrame
    reconciliation: pd.DataFrame
    unmapped: pd.DataFrame
    steps: int
    step_time_us: float  # median wall
    step_busy_us: float  # median busy
    layer_kinds: dict[str, float]
    unmapped_share: float
    meta: dict[str, Any] = field(default_factory=dict)
    named_share: float = float("nan")  # in-step kernel time named by NVTX or a template (class-only time is not named)

    def payload(self) -> dict[str, Any]:
        """The documented JSON (see docs/columns.md#layers)."""
        return {
            **self.meta,
            "steps": self.steps,
            "step_time_us": self.step_time_us,
            "step_busy_us": self.step_busy_us,
            "layer_kinds": self.layer_kinds,
            "ops": self.ops[["layer_kind", "op", "count_per_step", "mean_us", "median_us", "total_us_per_step", "source"]].to_dict("records"),
            "layer_totals": self.kinds.to_dict("records"),
            "reconciliation": self.reconciliation.to_dict("records"),
            "unmapped_share": self.unmapped_share,
            "named_share": self.named_share,
            "top_unmapped": self.unmapped.to_dict("records"),
        }


def layer_report(ctx: AnalysisContext, top_unmapped: int = 10) -> LayerReport:
    """The per-layer cost table of the selected device(s) (kept in the frame cache: see `kept`)."""
    return kept_or_computed(ctx, "layers", (top_unmapped,), LayerReport, lambda: _layer_report(ctx, top_unmapped))


def _layer_report(ctx: AnalysisContext, top_unmapped: int) -> LayerReport:
    m = ctx.mapping
    inst = coded_instances(m)
    steps = m.steps
    nsteps = len(steps)
    meta = {"step_source": m.step_source, "step_confidence": m.step_confidence, "layer_source": m.layer_source}
    if nsteps == 0 or len(inst) == 0:
        return LayerReport(
            empty_frame(OP_COLUMNS),
            empty_frame(KIND_COLUMNS),
            empty_frame(RECON_COLUMNS),
            empty_frame(UNMAPPED_COLUMNS),
            0,
            float("nan"),
            float("nan"),
            {},
            float("nan"),
            meta,
        )

    in_layer = inst.take(inst.layer_id >= 0)
    if len(in_layer):
        layers = _Layers(in_layer)
        ops, kind_df = _layer_tables(in_layer, layers, steps, nsteps)
        note = layer_count_note(layers, steps)
        if note:
            ctx.note(note)
    else:
        ops, kind_df = empty_frame(OP_COLUMNS), empty_frame(KIND_COLUMNS)  # no layers: ops outside layers only

    kernels = m.kernels
    k = _InStep(kernels)
    recon = _reconcile(k, steps, inst, kind_df, nsteps)
    total_k = float(k.dur.sum())
    source = kernels["source"]
    unmapped = k.select(_flags(source, lambda s: s == "unmapped"))
    unmapped_share = float(k.dur[unmapped].sum() / total_k) if total_k else 0.0
    rows = k.rows(unmapped)
    um = pd.DataFrame({"short_name": kernels["short_name"].take(rows), "dur_ns": kernels["dur_ns"].take(rows)})
    ug = um.groupby(um["short_name"].astype(str))["dur_ns"].agg(["size", "sum"]).sort_values("sum", ascending=False).head(top_unmapped)
    top = pd.DataFrame(
        {
            "short_name": ug.index.astype(str),
            "count": ug["size"].to_numpy(dtype=np.int64),
            "total_us": ug["sum"].to_numpy() / 1e3,
            "share_pct": ug["sum"].to_numpy() / total_k * 100 if total_k else 0.0,
        }
    )
    named = k.select(_flags(source, lambda s: s in ("nvtx", "template")))
    return LayerReport(
        ops=ops,
        kinds=kind_df,
        reconciliation=recon,
        unmapped=top,
        steps=nsteps,
        step_time_us=float(steps["wall_ns"].median() / 1e3),
        step_busy_us=float(steps["busy_ns"].median() / 1e3),
        layer_kinds={str(r.layer_kind): float(r.count_per_step) for r in kind_df.itertuples()},
        unmapped_share=unmapped_share,
        named_share=float(k.dur[named].sum()) / total_k if total_k else float("nan"),
        meta=meta,
    )


def _flags(values: pd.Series, fn: Callable[[str], bool]) -> np.ndarray:
    """`map_distinct(values, fn, bool, False)`: one lookup by a categorical's codes (-1, missing, takes the last entry)."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return map_distinct(values, fn, bool, False)
    table = np.array([fn(str(c)) for c in values.cat.categories] + [False], dtype=bool)
    return table[values.cat.codes.to_numpy()]


class _InStep:
    """The kernels inside steps, as arrays (no frame copy): step, start, end, duration."""

    def __init__(self, kernels: pd.DataFrame) -> None:
        step = kernels["step"].to_numpy()
        self.inside = None if len(step) == 0 or step.min() >= 0 else step >= 0
        self.step, self.start, self.end, self.dur = (self.select(kernels[c].to_numpy()) for c in ("step", "start_ns", "end_ns", "dur_ns"))

    def select(self, values: np.ndarray) -> np.ndarray:
        """`values` (one per kernel) of the kernels inside steps."""
        return values if self.inside is None else values[self.inside]

    def rows(self, mask: np.ndarray) -> np.ndarray:
        """Positions in the kernel frame of the in-step kernels where `mask` holds."""
        pos = np.flatnonzero(mask)
        return pos if self.inside is None else np.flatnonzero(self.inside)[pos]


class _Layers:
    """The layer instances of op instances inside layers (groups of one layer_id and kind, in layer_id order):
    each instance's layer, per layer its kind, first instance, start, end, kernel time and kernels, and the
    layers of each kind per step."""

    def __init__(self, inst: CodedInstances) -> None:
        present = np.flatnonzero(np.bincount(inst.kind, minlength=len(inst.kinds)))
        by_text = sorted(present.tolist(), key=lambda c: str(inst.kinds[c]))
        self.names = np.array([str(inst.kinds[c]) for c in by_text], dtype=object)  # the kinds present, sorted
        rank = np.zeros(len(inst.kinds), dtype=np.int64)
        rank[by_text] = np.arange(len(by_text))
        self.kind_of_row = rank[inst.kind]  # pd.factorize(layer_kind, sort=True)
        nk = len(self.names)
        lo = int(inst.layer_id.min())
        key = (inst.layer_id - lo) * nk + self.kind_of_row
        order = None if bool(np.all(key[1:] >= key[:-1])) else np.argsort(key, kind="stable")
        sk = key if order is None else key[order]
        bounds = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1])))
        seg = Segments(bounds, len(sk))

        def per_layer(ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
            return seg.reduce(ufunc, values if order is None else values[order])

        rows = np.arange(len(sk)) if order is None else order
        self.first = rows[bounds]  # a layer's first op instance (stable: rows keep their order)
        self.kind = self.kind_of_row[self.first]
        self.kernel_ns = per_layer(np.add, inst.time_ns)
        self.start = per_layer(np.minimum, inst.start_ns)
        self.end = per_layer(np.maximum, inst.end_ns)
        self.kernels = per_layer(np.add, inst.kernels)
        of_row = np.empty(len(sk), dtype=np.int64)
        of_row[rows] = np.repeat(np.arange(len(bounds)), seg.sizes)
        self.of_row = of_row  # each op instance's layer
        # each layer_id once, with the step and kind of its first instance (drop_duplicates("layer_id"))
        lid = inst.layer_id[self.first]
        once = np.flatnonzero(np.concatenate(([True], lid[1:] != lid[:-1])))  # a layer_id's groups are consecutive
        first = self.first if len(once) == len(lid) else np.minimum.reduceat(self.first, once)
        self._step_ids, inv = np.unique(inst.step[first], return_inverse=True)
        nk = len(self.names)
        code = inv.ravel() * nk + self.kind_of_row[first]
        self._counts = np.bincount(code, minlength=len(self._step_ids) * nk).reshape(len(self._step_ids), nk)

    def per_step(self, steps: np.ndarray) -> np.ndarray:
        """Layers of each kind (columns: `names`) in each of `steps` (rows; 0 where a step has none)."""
        ids, counts = self._step_ids, self._counts
        at = np.minimum(np.searchsorted(ids, steps), len(ids) - 1)  # a layer exists: ids is not empty
        return np.where((ids[at] == steps)[:, None], counts[at], 0)

    def typical_count(self) -> np.ndarray:
        """Per kind, layers in one step: the most common count over the steps that hold that kind (an integer,
        never an average: steps whose layers were not all found must not make 3.76 layers; the smallest on a tie)."""
        out = np.zeros(len(self.names), dtype=np.int64)
        for j in range(len(self.names)):  # a few kinds
            col = self._counts[:, j]
            vals, n = np.unique(col[col > 0], return_counts=True)
            out[j] = int(vals[np.argmax(n)]) if len(vals) else 0
        return out


def layer_count_note(layers: _Layers, steps: pd.DataFrame) -> str | None:
    """A note when steps disagree on their layer counts (per phase, so a user sees which steps lack layers). Each
    distinct row of the step × kind counts is labelled once."""
    counts = layers.per_step(steps["step"].to_numpy())
    if len(counts) == 0:
        return None
    rows, inv = np.unique(counts, axis=0, return_inverse=True)
    if len(rows) <= 1:
        return None
    names = [str(n) for n in layers.names]
    labels = np.array([", ".join(f"{k} {v}" for k, v in zip(names, r.tolist()) if v) or "no layers" for r in rows], dtype=object)
    phase = steps.set_index("step")["phase"].reindex(steps["step"].to_numpy()).astype(str)
    groups = pd.DataFrame({"phase": phase.to_numpy(), "layers": labels[inv.ravel()]}).value_counts().sort_index()
    parts = [f"{n} {ph} steps: {lay}" for (ph, lay), n in groups.items()]
    return "layers per step differ between steps (" + "; ".join(parts) + "); the table counts the most common number"


def _layer_tables(in_layer: CodedInstances, layers: _Layers, steps: pd.DataFrame, nsteps: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The layer kind × op table and the one-layer-per-kind table from op instances inside layers."""
    names, nk = layers.names, len(layers.names)
    lkind = layers.kind
    n = np.bincount(lkind, minlength=nk)
    per_kind = {  # means over the layers of each kind, kinds in sort order
        "kernel_ns": np.bincount(lkind, layers.kernel_ns, nk) / n,
        "wall_ns": np.bincount(lkind, layers.end - layers.start, nk) / n,
        "kernels": np.bincount(lkind, layers.kernels, nk) / n,
    }
    step_wall = float(steps["wall_ns"].mean())
    kind_df = pd.DataFrame(
        {
            "layer_kind": names,
            "count_per_step": layers.typical_count().astype(float),
            "kernel_us": per_kind["kernel_ns"] / 1e3,
            "wall_us": per_kind["wall_ns"] / 1e3,
            "kernels": per_kind["kernels"],
        }
    )
    kind_df["total_us_per_step"] = kind_df["count_per_step"] * kind_df["kernel_us"]
    kind_df["share_of_step_pct"] = kind_df["total_us_per_step"] / (step_wall / 1e3) * 100 if step_wall else 0.0
    kind_df = kind_df.sort_values("total_us_per_step", ascending=False).reset_index(drop=True)

    # layer kind × op, in order of first appearance (the groups of groupby(sort=False))
    kind = layers.kind_of_row
    nops = len(in_layer.ops)
    g = CodeGroups(kind * nops + in_layer.op, nk * nops)
    time = in_layer.time_ns
    size, total = g.size(), g.sum(time)
    median, p10, p90 = g.quantiles(time, (0.5, 0.1, 0.9))
    ops = pd.DataFrame(
        {
            "layer_kind": names[kind[g.first]],
            "op": in_layer.ops[in_layer.op[g.first]],
            "count_per_step": size / nsteps,
            "mean_us": total / size / 1e3,
            "median_us": median / 1e3,
            "p10_us": p10 / 1e3,
            "p90_us": p90 / 1e3,
            "total_us_per_step": total / nsteps / 1e3,
            "source": g.dominant(in_layer.source, in_layer.sources, time),
        }
    )
    per_layer = ops["total_us_per_step"] / (n[kind[g.first]].astype(float) / nsteps)
    kind_us = ops["layer_kind"].map(kind_df.set_index("layer_kind")["kernel_us"])
    ops["share_of_layer_pct"] = per_layer / kind_us * 100
    # order rows as the ops run inside a layer: by their mean offset from the layer's start
    offset = in_layer.start_ns - layers.start[layers.of_row]
    ops["position"] = g.sum(offset) / size
    rank = {kd: i for i, kd in enumerate(["dense", "moe", "mtp", "unknown"])}
    ops["korder"] = ops["layer_kind"].map(lambda x: rank.get(x, 9))
    ops = ops.sort_values(["korder", "position"]).reset_index(drop=True)[[c.name for c in OP_COLUMNS]]
    return ops, kind_df


def _reconcile(k: _InStep, steps: pd.DataFrame, inst: CodedInstances, kinds: pd.DataFrame, nsteps: int) -> pd.DataFrame:
    rows = []
    for r in kinds.itertuples():
        rows.append((f"layers: {r.layer_kind}", r.count_per_step, r.kernel_us, r.total_us_per_step, f"{r.count_per_step:g} layers × {r.kernel_us:.1f} µs"))
    out_layer = inst.layer_id < 0
    op = inst.op[out_layer]
    present = np.flatnonzero(np.bincount(op, minlength=len(inst.ops)))
    by_text = sorted(present.tolist(), key=lambda c: str(inst.ops[c]))  # groupby("op") sorts by name
    sums = int_sums(op, inst.time_ns[out_layer], len(inst.ops))[by_text]
    other = pd.Series(sums, index=pd.Index([str(inst.ops[c]) for c in by_text], dtype=object), dtype=np.int64)
    other = other.sort_values(ascending=False) / nsteps / 1e3
    rows.append(("ops outside layers", float("nan"), float("nan"), float(other.sum()), ", ".join(f"{op} {us:.1f}" for op, us in other.head(6).items())))
    # kernel-only union per step, for the overlap and copy lines
    present_steps, kunion = union_per_step(k.step, k.start, k.end)
    overlap = float(((k.end - k.start).sum() - kunion.sum()) / nsteps / 1e3)
    busy = steps.set_index("step")["busy_ns"].reindex(present_steps).fillna(0).to_numpy()
    copies = float((busy.sum() - kunion.sum()) / nsteps / 1e3)
    idle = float((steps["wall_ns"] - steps["busy_ns"]).sum() / nsteps / 1e3)
    wall = float(steps["wall_ns"].sum() / nsteps / 1e3)
    rows.append(("concurrent kernels (counted twice)", float("nan"), float("nan"), -overlap, "summed kernel time minus the union of kernel intervals"))
    rows.append(("memcpy/memset not under kernels", float("nan"), float("nan"), copies, "GPU busy with copies/sets only"))
    rows.append(("idle inside the step", float("nan"), float("nan"), idle, "no kernel, copy or set running"))
    parts = sum(r[3] for r in rows)
    rows.append(
        ("= step time (mean wall)", float("nan"), float("nan"), wall, f"median {steps['wall_ns'].median() / 1e3:.1f} µs; residual {wall - parts:+.3f} µs")
    )
    return pd.DataFrame(rows, columns=[c.name for c in RECON_COLUMNS])


def union_per_step(step: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The steps present (sorted) and the union length of the intervals of each (zero- or negative-length
    intervals add nothing): one sweep, each interval adding the part of it beyond the furthest end before it in
    its step. Kernels sorted by start, steps in time order (as the mapping holds them) need no sort; when a
    step's intervals reach back before the previous step's end, the steps are laid end to end on one axis."""
    if len(step) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rising = bool(np.all(start[1:] >= start[:-1])) and bool(np.all(step[1:] >= step[:-1]))
    if not rising and not bool(np.all((step[1:] > step[:-1]) | ((step[1:] == step[:-1]) & (start[1:] >= start[:-1])))):
        order = np.lexsort((start, step))
        step, start, end = step[order], start[order], end[order]
    first = np.flatnonzero(np.concatenate(([True], step[1:] != step[:-1])))
    reach = np.maximum.accumulate(end)
    if not bool(np.all(reach[first[1:] - 1] <= start[first[1:]])):  # steps overlap in time: one axis, end to end
        lo = int(min(start.min(), end.min()))
        span = int(max(start.max(), end.max())) - lo + 1
        if span * (len(first) + 1) >= 2**62:  # pragma: no cover - only for absurd time spans
            ids = np.repeat(np.arange(len(first)), np.diff(np.append(first, len(step))))
            return step[first], intervals.union_by_group(ids, start, end, len(first))
        off = np.repeat(np.arange(len(first), dtype=np.int64) * span - lo, np.diff(np.append(first, len(step))))
        start, end = start + off, end + off
        reach = np.maximum.accumulate(end)
    # each interval's part beyond max(its start, the reach before it); at a step's first interval that reach
    # lies at or before its start
    part = np.empty(len(step), dtype=np.int64)
    part[0] = start[0]
    np.maximum(start[1:], reach[:-1], out=part[1:])
    np.subtract(end, part, out=part)
    np.maximum(part, 0, out=part)
    return step[first], np.add.reduceat(part, first)
