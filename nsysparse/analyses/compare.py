"""Trace-vs-trace diff for CI: per-step samples of each key, their means, Δ, noise and a verdict.

Keys (each a per-step sample, so the spread between steps is the noise):
  step      wall (first to last GPU activity), period (start to next start), busy
  layer     kernel time of one layer of each kind
  op        (layer kind, op) kernel time per step — logical ops, so renaming a kernel inside an op
            changes nothing
  gaps      inter-step gap (one sample per gap), idle inside a step
  kernel    the top kernels by short name (informational: not judged, names change between builds)
  mfu       TFLOP/s per GPU per step, when a model is given (informational; higher is better)

Verdict per judged key: significant when |Δ| > max(threshold % of base, min_us, noise_us) with
noise_us = 3 × √(s_base²/n_base + s_new²/n_new) (three standard errors of the difference of means).
Significant and slower = regression, faster = improvement, else neutral.

The overall verdict is the verdict of the step time, which is what the user pays: the step period
(`nsysparse.structure.period`, start to next start), or the step wall when a trace has a single step.
Every other key that changed significantly is reported as a cause (a longer inter-step gap in a run
whose steps got faster is a cause that did not cost step time, not a regression). Two traces are not
comparable (no verdict) when their GPUs differ, their layer structure differs, or either has fewer
than `min_steps` steps; and nothing is judged, whatever `force` says, without a step time in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nsysparse.analyses.context import AnalysisContext
from nsysparse.analyses.gaps import GapReport, gap_report
from nsysparse.columns import Column
from nsysparse.models.flops import tflops_per_gpu
from nsysparse.structure.period import step_periods_ns

COLUMNS = (
    Column("section", "str", "step | layer | op | gaps | kernel | mfu"),
    Column("key", "str", "what is compared (op keys are layer_kind/op)"),
    Column("base_us", "float", "mean over base samples (mfu: TFLOP/s)"),
    Column("new_us", "float", "mean over new samples"),
    Column("delta_us", "float", "new − base"),
    Column("delta_pct", "float", "Δ / base × 100"),
    Column("noise_us", "float", "3 standard errors of the difference of the means"),
    Column("base_n", "int", "samples in base (steps, gaps)"),
    Column("new_n", "int", "samples in new"),
    Column("verdict", "str", "regression | improvement | neutral | info (not judged) | unjudged (not comparable)"),
)
SECTION_ORDER = {"step": 0, "gaps": 1, "layer": 2, "op": 3, "mfu": 4, "kernel": 5}
NOISE_SIGMAS = 3.0


@dataclass
class Profile:
    """What one trace contributes: per-sample values in long form and the structure to check."""

    samples: pd.DataFrame  # section, key, value (µs), judged (bool), higher_is_better (bool)
    gpu: str
    steps: int
    layers_per_step: dict[str, int]
    step_source: str
    layer_source: str = "none"
    notes: list[str] = field(default_factory=list)


# The keys whose verdict is the overall verdict, in order of preference (the first present in both traces).
STEP_TIME_KEYS = (("step", "period"), ("step", "wall"))
CAUSE_ORDER = {"gaps": 0, "op": 1, "layer": 2, "mfu": 3}


@dataclass
class Comparison:
    table: pd.DataFrame
    verdict: str  # regression | improvement | neutral | not comparable (the step time's verdict)
    comparable: bool
    reasons: list[str]
    base: Profile
    new: Profile
    notes: list[str] = field(default_factory=list)
    step_key: str | None = None  # "period" or "wall": the row the verdict follows
    judged: bool = False  # whether the step time was judged at all

    @property
    def step_row(self) -> pd.Series | None:
        if self.step_key is None:
            return None
        rows = self.table[(self.table["section"] == "step") & (self.table["key"] == self.step_key)]
        return rows.iloc[0] if len(rows) else None

    @property
    def causes(self) -> pd.DataFrame:
        """The judged keys outside the step time that changed significantly: gaps, then ops, then layers
        (what the step time is made of), largest |Δ| first within each."""
        t = self.table
        keep = t[t["verdict"].isin(["regression", "improvement"]) & (t["section"] != "step")]
        order = keep["section"].map(CAUSE_ORDER).fillna(9)
        return keep.assign(_o=order, _a=-keep["delta_us"].abs()).sort_values(["_o", "_a"], kind="stable").drop(columns=["_o", "_a"]).reset_index(drop=True)

    def payload(self) -> dict[str, Any]:
        counts = self.table["verdict"].value_counts().to_dict()
        row = self.step_row
        step = None if row is None else {k: row[k] for k in ("key", "base_us", "new_us", "delta_us", "delta_pct", "noise_us", "verdict")}
        return {
            "verdict": self.verdict,
            "comparable": self.comparable,
            "reasons": self.reasons,
            "step_time": step,
            "causes": self.causes[["section", "key", "delta_us", "delta_pct", "verdict"]],
            "regressions": int(counts.get("regression", 0)),
            "improvements": int(counts.get("improvement", 0)),
            "base": {"gpu": self.base.gpu, "steps": self.base.steps, "layers_per_step": self.base.layers_per_step, "step_source": self.base.step_source},
            "new": {"gpu": self.new.gpu, "steps": self.new.steps, "layers_per_step": self.new.layers_per_step, "step_source": self.new.step_source},
            "rows": self.table,
            "notes": self.notes,
        }


def _long(section: str, keys: pd.Series | np.ndarray | list[str], values: np.ndarray, judged: bool = True, higher_is_better: bool = False) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "section": section,
            "key": np.asarray(keys, dtype=object),
            "value": np.asarray(values, dtype=float),
            "judged": judged,
            "higher_is_better": higher_is_better,
        }
    )


def profile(ctx: AnalysisContext, top_kernels: int = 10, flops_per_step: float | None = None, gpus: int = 1, gaps: GapReport | None = None) -> Profile:
    """Per-step samples of every key for one trace's selected device(s) (`gaps`: its gap report, if already computed)."""
    trace, m = ctx.trace, ctx.mapping
    steps = m.steps
    parts: list[pd.DataFrame] = []
    notes: list[str] = []
    if len(steps):
        s = steps.sort_values(["device_id", "start_ns"])
        parts.append(_long("step", ["wall"] * len(s), s["wall_ns"].to_numpy() / 1e3))
        parts.append(_long("step", ["busy"] * len(s), s["busy_ns"].to_numpy() / 1e3))
        period = step_periods_ns(s)
        period = period[np.isfinite(period)] / 1e3
        parts.append(_long("step", ["period"] * len(period), period))
        parts.append(_long("gaps", ["idle inside step"] * len(s), (s["wall_ns"] - s["busy_ns"]).to_numpy() / 1e3))
        if flops_per_step and len(period):
            parts.append(
                _long(
                    "mfu",
                    ["TFLOP/s per GPU"] * len(period),
                    np.asarray(tflops_per_gpu(flops_per_step, period * 1e-6, gpus)),
                    judged=False,
                    higher_is_better=True,
                )
            )
    # ops: per step total of each (layer kind, op); a step without the op counts 0
    inst = m.op_instances
    if len(inst):
        inst = inst.assign(key=np.where(inst["layer_kind"].astype(str) == "", "other", inst["layer_kind"].astype(str)) + "/" + inst["op"].astype(str))
        per = inst.groupby(["step", "key"])["time_ns"].sum().unstack(fill_value=0)
        per = per.reindex(steps["step"].unique(), fill_value=0) if len(steps) else per
        long = per.stack().reset_index(name="ns")
        parts.append(_long("op", long["key"], long["ns"].to_numpy() / 1e3))
        # the same per op alone, used when the layer structure was inferred and differs
        per_op = inst.groupby(["step", "op"])["time_ns"].sum().unstack(fill_value=0)
        per_op = per_op.reindex(steps["step"].unique(), fill_value=0) if len(steps) else per_op
        long = per_op.stack().reset_index(name="ns")
        parts.append(_long("op-any", long["op"].astype(str), long["ns"].to_numpy() / 1e3))
    # layers: kernel time of one layer of each kind, per step
    lay = m.layers
    layers_per_step: dict[str, int] = {}
    if len(lay) and len(steps):
        g = lay.groupby(["step", "layer_kind"])["kernel_ns"].mean().reset_index()
        parts.append(_long("layer", g["layer_kind"].astype(str) + " layer", g["kernel_ns"].to_numpy() / 1e3))
        counts = lay.groupby("layer_kind").size() / len(steps)
        layers_per_step = {str(k): round(v) for k, v in counts.items()}
    # gaps between steps
    if len(steps) > 1:
        gr = gaps if gaps is not None else gap_report(ctx)
        if len(gr.gaps):
            parts.append(_long("gaps", ["inter-step gap"] * len(gr.gaps), gr.gaps["gap_us"].to_numpy()))
    # top kernels by short name (informational)
    k = m.kernels[m.kernels["step"] >= 0]
    if len(k) and len(steps):
        kk = k.assign(name=k["short_name"].astype(str))
        tot = kk.groupby("name")["dur_ns"].sum().sort_values(ascending=False).head(top_kernels)
        sub = kk[kk["name"].isin(tot.index)]
        per = sub.groupby(["step", "name"])["dur_ns"].sum().unstack(fill_value=0).reindex(steps["step"].unique(), fill_value=0)
        long = per.stack().reset_index(name="ns")
        parts.append(_long("kernel", long["name"], long["ns"].to_numpy() / 1e3, judged=False))
    samples = pd.concat(parts, ignore_index=True) if parts else _long("step", [], np.zeros(0))
    return Profile(samples, trace.gpu_name(), len(steps), layers_per_step, m.step_source, m.layer_source, notes)


def _stats(samples: pd.DataFrame) -> pd.DataFrame:
    g = samples.groupby(["section", "key"], sort=False)
    return pd.DataFrame(
        {"mean": g["value"].mean(), "var": g["value"].var(ddof=1), "n": g.size(), "judged": g["judged"].first(), "hib": g["higher_is_better"].first()}
    )


def _fmt_layers(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "no layers"


def comparable(base: Profile, new: Profile, min_steps: int) -> tuple[list[str], bool]:
    """Reasons the two traces cannot be judged against each other (empty: comparable), and whether
    ops must be keyed without their layer kind (layer structure inferred from templates and differing:
    the op keys stay meaningful, the layer kinds do not)."""
    reasons = []
    if base.gpu != new.gpu and "unknown" not in (base.gpu, new.gpu):
        reasons.append(f"different GPUs ({base.gpu} vs {new.gpu})")
    by_op = False
    if base.layers_per_step != new.layers_per_step:
        if base.layer_source == "nvtx" and new.layer_source == "nvtx":
            reasons.append(f"different structure (NVTX layers per step: base {_fmt_layers(base.layers_per_step)}; new {_fmt_layers(new.layers_per_step)})")
        else:
            by_op = True
    for name, p in (("base", base), ("new", new)):
        if p.steps == 0:
            reasons.append(f"no step structure was found in {name} (the step inference abstained; `nsysparse steps` says why)")
        elif p.steps < min_steps:
            reasons.append(f"only {p.steps} steps in {name}, fewer than --min-steps {min_steps}: the per-step noise cannot be estimated")
    return reasons, by_op


def _rekey(samples: pd.DataFrame) -> pd.DataFrame:
    out = samples[samples["section"] != "op"].copy()
    out.loc[out["section"] == "op-any", "section"] = "op"
    out.loc[out["section"] == "layer", "judged"] = False
    return out


def compare_profiles(base: Profile, new: Profile, threshold_pct: float = 5.0, min_us: float = 5.0, min_steps: int = 3, force: bool = False) -> Comparison:
    reasons, by_op = comparable(base, new, min_steps)
    judge = not reasons or force
    sa, sb = base.samples, new.samples
    if by_op:  # ops without layer kinds; layer rows become informational
        sa, sb = (_rekey(x) for x in (sa, sb))
    else:
        sa, sb = (x[x["section"] != "op-any"] for x in (sa, sb))
    a, b = _stats(sa), _stats(sb)
    idx = a.index.union(b.index, sort=False)
    a, b = a.reindex(idx), b.reindex(idx)
    base_mean = a["mean"].fillna(0.0).to_numpy()
    new_mean = b["mean"].fillna(0.0).to_numpy()
    na, nb = a["n"].fillna(0).to_numpy(), b["n"].fillna(0).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(
            np.where(na > 1, a["var"].fillna(0).to_numpy() / np.maximum(na, 1), 0.0) + np.where(nb > 1, b["var"].fillna(0).to_numpy() / np.maximum(nb, 1), 0.0)
        )
        delta = new_mean - base_mean
        pct = np.where(base_mean != 0, delta / base_mean * 100, np.where(delta == 0, 0.0, np.nan))
    noise = NOISE_SIGMAS * se
    bar = np.maximum.reduce([np.abs(base_mean) * threshold_pct / 100, np.full(len(idx), min_us), noise])
    judged = a["judged"].fillna(b["judged"]).astype(bool).to_numpy()
    hib = a["hib"].fillna(b["hib"]).astype(bool).to_numpy()
    worse = np.where(hib, -delta, delta)
    sig = np.abs(delta) > bar
    verdict = np.where(sig & (worse > 0), "regression", np.where(sig & (worse < 0), "improvement", "neutral"))
    verdict = np.where(judged, verdict, "info")
    if not judge:
        verdict = np.where(judged, "unjudged", "info")
    sec = [s for s, _ in idx]
    table = pd.DataFrame(
        {
            "section": sec,
            "key": [k for _, k in idx],
            "base_us": a["mean"].to_numpy(),
            "new_us": b["mean"].to_numpy(),
            "delta_us": delta,
            "delta_pct": pct,
            "noise_us": noise,
            "base_n": na.astype(np.int64),
            "new_n": nb.astype(np.int64),
            "verdict": verdict,
        }
    )
    table["order"] = table["section"].map(SECTION_ORDER).fillna(9)
    table["abs"] = -table["delta_us"].abs()
    table = table.sort_values(["order", "abs"], kind="stable").drop(columns=["order", "abs"]).reset_index(drop=True)
    notes = []
    if by_op:
        notes.append(
            f"layer structure inferred from templates differs (base {_fmt_layers(base.layers_per_step)}; new {_fmt_layers(new.layers_per_step)}): ops are compared without their layer kind and layer rows are not judged"
        )
    if "unknown" in (base.gpu, new.gpu):
        notes.append("a trace has no GPU table: the GPUs could not be checked to be the same")
    if base.step_source != new.step_source:
        notes.append(f"steps come from {base.step_source} in base and {new.step_source} in new")
    if force and reasons:
        notes.append("judged although not comparable (--force): " + "; ".join(reasons))
    step_key = next(
        (k for sec, k in STEP_TIME_KEYS if ((table["section"] == sec) & (table["key"] == k) & (table["base_n"] > 0) & (table["new_n"] > 0)).any()), None
    )
    comparable_ = not reasons
    if step_key is None:  # nothing the verdict could follow: not judged, --force or not
        reasons = [*reasons, "no step time in both traces (each needs at least one step), so nothing was judged"]
        comparable_, judge = False, False
        table["verdict"] = np.where(table["verdict"] == "info", "info", "unjudged")
        notes = [n for n in notes if not n.startswith("judged although not comparable")]
    overall = "not comparable"
    c = Comparison(table, overall, comparable_, reasons, base, new, notes + base.notes + new.notes, step_key=step_key, judged=judge)
    if judge:
        row = c.step_row
        assert row is not None
        c.verdict = str(row["verdict"]) if row["verdict"] in ("regression", "improvement") else "neutral"
        slower = c.causes[c.causes["verdict"] == "regression"]
        if c.verdict != "regression" and len(slower):
            listed = ", ".join(f"{r.section} {r.key} {r.delta_us:+.1f} µs" for r in slower.head(3).itertuples())
            more = f" and {len(slower) - 3} more" if len(slower) > 3 else ""
            c.notes.insert(0, f"{len(slower)} key(s) got slower without costing step time (step {step_key} {row['delta_pct']:+.1f} %): {listed}{more}")
    return c
