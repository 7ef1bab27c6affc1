"""Per logical op: instances per step, mean/median time of one instance, total per step, share, source."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nsysparse.analyses.context import AnalysisContext
from nsysparse.analyses.instances import CodeGroups, coded_instances
from nsysparse.analyses.kept import kept_or_computed
from nsysparse.columns import Column, empty_frame
from nsysparse.structure.instances import coded_op_instances

COLUMNS = (
    Column("op", "str", "logical op (vocabulary name, NVTX name, or kernel class when nothing better is known)"),
    Column("layer_kind", "str", "dense | moe | mtp for ops inside layers, empty outside layers (with --by-kind)"),
    Column("count_per_step", "float", "op instances per step (one per layer instance, one per step outside layers)"),
    Column("kernels_per_step", "float", "kernels per step"),
    Column("mean_us", "float", "mean time of one instance: the sum of its kernel durations"),
    Column("median_us", "float", "median time of one instance"),
    Column("total_us_per_step", "float", "summed kernel time per step (mean over steps)"),
    Column("share_pct", "float", "share of the summed kernel time of all steps"),
    Column("source", "str", "naming source covering most of the op's time: nvtx | template | class | unmapped"),
)


def op_summary(ctx: AnalysisContext, by_kind: bool = False) -> pd.DataFrame:
    """Columns: COLUMNS (layer_kind is empty unless `by_kind`). Sorted by total time per step. Kept in
    the frame cache (see `kept`)."""
    return kept_or_computed(ctx, "ops", (by_kind,), None, lambda: _op_summary(ctx, by_kind))


def _op_summary(ctx: AnalysisContext, by_kind: bool) -> pd.DataFrame:
    m = ctx.mapping
    nsteps = len(m.steps)
    if nsteps == 0 and len(m.kernels):
        # no steps: the whole (windowed) trace counts as one, so every kernel is still accounted for
        inst = coded_op_instances(m.kernels, step=np.zeros(len(m.kernels), dtype=np.int64))
        nsteps = 1
        ctx.note("no steps were found: per-step columns are totals over the whole trace")
    else:
        inst = coded_instances(m)
    if len(inst) == 0 or nsteps == 0:
        return empty_frame(COLUMNS)
    # the groups of groupby(["layer_kind", "op"] or "op", sort=False), on the codes
    nops = len(inst.ops)
    g = CodeGroups(inst.kind * nops + inst.op, len(inst.kinds) * nops) if by_kind else CodeGroups(inst.op, nops)
    time = inst.time_ns
    size, time_sum = g.size(), g.sum(time)
    out = pd.DataFrame(
        {
            **({"layer_kind": inst.kinds[inst.kind[g.first]]} if by_kind else {}),
            "op": inst.ops[inst.op[g.first]],
            "count_per_step": size / nsteps,
            "kernels_per_step": g.sum(inst.kernels) / nsteps,
            "mean_us": time_sum / size / 1e3,
            "median_us": g.quantiles(time, (0.5,))[0] / 1e3,
            "total_us_per_step": time_sum / nsteps / 1e3,
            "source": g.dominant(inst.source, inst.sources, time),
        }
    )
    if not by_kind:
        out["layer_kind"] = ""
    total = out["total_us_per_step"].sum()
    out["share_pct"] = out["total_us_per_step"] / total * 100 if total else 0.0
    out = out.sort_values(["total_us_per_step", "op"], ascending=[False, True]).reset_index(drop=True)
    return out[[c.name for c in COLUMNS]]
