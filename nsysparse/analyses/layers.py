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

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nsysparse import intervals
from nsysparse.analyses.context import AnalysisContext
from nsysparse.analyses.instances import dominant_per_group
from nsysparse.columns import Column, empty_frame
from nsysparse.distinct import map_distinct
from nsysparse.structure.mapping import Mapping

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
    """The per-layer cost table of the selected device(s)."""
    m = ctx.mapping
    inst = m.op_instances
    steps = m.steps
    nsteps = len(steps)
    k = m.kernels[["step", "start_ns", "end_ns", "dur_ns", "source", "short_name"]]  # the columns used below, not all
    k = k[k["step"].to_numpy() >= 0]
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

    in_layer = inst[inst["layer_id"] >= 0]
    if len(in_layer):
        ops, kind_df = _layer_tables(in_layer, steps, nsteps)
        note = layer_count_note(in_layer, steps)
        if note:
            ctx.note(note)
    else:
        ops, kind_df = empty_frame(OP_COLUMNS), empty_frame(KIND_COLUMNS)  # no layers: ops outside layers only

    recon = _reconcile(k, steps, inst, kind_df, nsteps, m)
    total_k = float(k["dur_ns"].sum())
    um = k[k["source"] == "unmapped"]
    unmapped_share = float(um["dur_ns"].sum() / total_k) if total_k else 0.0
    ug = um.groupby(um["short_name"].astype(str))["dur_ns"].agg(["size", "sum"]).sort_values("sum", ascending=False).head(top_unmapped)
    unmapped = pd.DataFrame(
        {
            "short_name": ug.index.astype(str),
            "count": ug["size"].to_numpy(dtype=np.int64),
            "total_us": ug["sum"].to_numpy() / 1e3,
            "share_pct": ug["sum"].to_numpy() / total_k * 100 if total_k else 0.0,
        }
    )
    return LayerReport(
        ops=ops,
        kinds=kind_df,
        reconciliation=recon,
        unmapped=unmapped,
        steps=nsteps,
        step_time_us=float(steps["wall_ns"].median() / 1e3),
        step_busy_us=float(steps["busy_ns"].median() / 1e3),
        layer_kinds={str(r.layer_kind): float(r.count_per_step) for r in kind_df.itertuples()},
        unmapped_share=unmapped_share,
        named_share=named_share(k),
        meta=meta,
    )


def named_share(k: pd.DataFrame) -> float:
    """Share of the kernel time of `k` whose op came from NVTX or a template; a kernel named by its class alone
    (gemm, elementwise) is counted as not named, so a trace cannot look mapped when it is only classified."""
    total = float(k["dur_ns"].sum())
    if not total:
        return float("nan")
    named = map_distinct(k["source"], lambda s: s in ("nvtx", "template"), bool, False)
    return float(k["dur_ns"].to_numpy()[named].sum()) / total


def layers_per_step(in_layer: pd.DataFrame) -> pd.Series:
    """Layers of each kind in one step: the most common count over the steps that hold that kind (an integer,
    never an average: steps whose layers were not all found must not make 3.76 layers)."""
    inst = in_layer.drop_duplicates("layer_id")
    counts = inst.groupby(["step", "layer_kind"]).size().unstack(fill_value=0)
    return counts.apply(lambda col: int(col[col > 0].mode().min()) if (col > 0).any() else 0).astype(int)


def layer_count_note(in_layer: pd.DataFrame, steps: pd.DataFrame) -> str | None:
    """A note when steps disagree on their layer counts (per phase, so a user sees which steps lack layers)."""
    inst = in_layer.drop_duplicates("layer_id")
    counts = inst.groupby(["step", "layer_kind"]).size().unstack(fill_value=0).reindex(steps["step"].to_numpy(), fill_value=0)
    if len(counts.drop_duplicates()) <= 1:
        return None
    phase = steps.set_index("step")["phase"].reindex(counts.index).astype(str)
    label = counts.apply(lambda r: ", ".join(f"{k} {v}" for k, v in r.items() if v) or "no layers", axis=1)
    groups = pd.DataFrame({"phase": phase.to_numpy(), "layers": label.to_numpy()}).value_counts().sort_index()
    parts = [f"{n} {ph} steps: {lay}" for (ph, lay), n in groups.items()]
    return "layers per step differ between steps (" + "; ".join(parts) + "); the table counts the most common number"


def _layer_tables(in_layer: pd.DataFrame, steps: pd.DataFrame, nsteps: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The layer kind × op table and the one-layer-per-kind table from op instances inside layers."""
    kind, kinds = pd.factorize(in_layer["layer_kind"], sort=True)
    time, start = in_layer["time_ns"].to_numpy(), in_layer["start_ns"].to_numpy()
    layer = intervals.Groups(in_layer["layer_id"].to_numpy(), kind)  # one layer instance per group
    lkind = kind[layer.first]
    n = np.bincount(lkind, minlength=len(kinds))
    per_kind = {  # means over the layers of each kind, kinds in sort order
        "kernel_ns": np.bincount(lkind, layer.sum(time), len(kinds)) / n,
        "wall_ns": np.bincount(lkind, layer.max(in_layer["end_ns"].to_numpy()) - layer.min(start), len(kinds)) / n,
        "kernels": np.bincount(lkind, layer.sum(in_layer["kernels"].to_numpy()), len(kinds)) / n,
    }
    step_wall = float(steps["wall_ns"].mean())
    per_step = layers_per_step(in_layer)
    names = np.asarray(kinds, dtype=object)
    kind_df = pd.DataFrame(
        {
            "layer_kind": names,
            "count_per_step": per_step.reindex(names).fillna(0).to_numpy(dtype=float),
            "kernel_us": per_kind["kernel_ns"] / 1e3,
            "wall_us": per_kind["wall_ns"] / 1e3,
            "kernels": per_kind["kernels"],
        }
    )
    kind_df["total_us_per_step"] = kind_df["count_per_step"] * kind_df["kernel_us"]
    kind_df["share_of_step_pct"] = kind_df["total_us_per_step"] / (step_wall / 1e3) * 100 if step_wall else 0.0
    kind_df = kind_df.sort_values("total_us_per_step", ascending=False).reset_index(drop=True)

    # layer kind × op, in order of first appearance (the groups of groupby(sort=False))
    g = intervals.Groups(kind, pd.factorize(in_layer["op"])[0])
    size, total = g.size(), g.sum(time)
    median, p10, p90 = g.quantiles(time, (0.5, 0.1, 0.9))
    ops = pd.DataFrame(
        {
            "layer_kind": names[kind[g.first]],
            "op": in_layer["op"].to_numpy()[g.first],
            "count_per_step": size / nsteps,
            "mean_us": total / size / 1e3,
            "median_us": median / 1e3,
            "p10_us": p10 / 1e3,
            "p90_us": p90 / 1e3,
            "total_us_per_step": total / nsteps / 1e3,
            "source": dominant_per_group(g, in_layer["source"], time),
        }
    )
    per_layer = ops["total_us_per_step"] / (n[kind[g.first]].astype(float) / nsteps)
    kind_us = ops["layer_kind"].map(kind_df.set_index("layer_kind")["kernel_us"])
    ops["share_of_layer_pct"] = per_layer / kind_us * 100
    # order rows as the ops run inside a layer: by their mean offset from the layer's start
    offset = start - layer.min(start)[layer.ids]
    ops["position"] = g.sum(offset) / size
    rank = {kd: i for i, kd in enumerate(["dense", "moe", "mtp", "unknown"])}
    ops["korder"] = ops["layer_kind"].map(lambda x: rank.get(x, 9))
    ops = ops.sort_values(["korder", "position"]).reset_index(drop=True)[[c.name for c in OP_COLUMNS]]
    return ops, kind_df


def _reconcile(k: pd.DataFrame, steps: pd.DataFrame, inst: pd.DataFrame, kinds: pd.DataFrame, nsteps: int, m: Mapping) -> pd.DataFrame:
    rows = []
    for r in kinds.itertuples():
        rows.append((f"layers: {r.layer_kind}", r.count_per_step, r.kernel_us, r.total_us_per_step, f"{r.count_per_step:g} layers × {r.kernel_us:.1f} µs"))
    out_layer = inst[inst["layer_id"] < 0]
    other = out_layer.groupby("op")["time_ns"].sum().sort_values(ascending=False) / nsteps / 1e3
    rows.append(("ops outside layers", float("nan"), float("nan"), float(other.sum()), ", ".join(f"{op} {us:.1f}" for op, us in other.head(6).items())))
    # kernel-only union per step, for the overlap and copy lines
    start, end = k["start_ns"].to_numpy(), k["end_ns"].to_numpy()
    g = intervals.Groups(k["step"].to_numpy())
    uniq = k["step"].to_numpy()[g.first]
    kunion = intervals.union_by_group(g.ids, start, end, g.n)
    ksum = g.sum(end - start)
    overlap = float((ksum - kunion).sum() / nsteps / 1e3)
    busy = steps.set_index("step")["busy_ns"].reindex(uniq).fillna(0).to_numpy()
    copies = float((busy - kunion).sum() / nsteps / 1e3)
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
