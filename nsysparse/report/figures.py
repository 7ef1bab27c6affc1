"""Plotly figures built from the report's tables. The only module that imports plotly.

Every string that reaches a figure (op names, kernel names, NVTX-derived labels) is HTML-escaped first:
plotly renders a subset of HTML in labels and hover text, and trace strings are user-controlled.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from nsysparse.report.collect import ReportData

PALETTE = qualitative.Dark24 + qualitative.Light24
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), font=dict(size=12), hoverlabel=dict(namelength=-1))


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


class Colors:
    """One color per op, the same in every figure."""

    def __init__(self) -> None:
        self.map: dict[str, str] = {}

    def __call__(self, op: str) -> str:
        if op not in self.map:
            self.map[op] = PALETTE[len(self.map) % len(PALETTE)]
        return self.map[op]


def layer_breakdown(d: ReportData, colors: Colors) -> go.Figure | None:
    ops = d.layers.ops
    if len(ops) == 0:
        return None
    per_kind = d.layers.layer_kinds
    df = ops.assign(us_per_layer=ops["total_us_per_step"] / ops["layer_kind"].map(per_kind).astype(float))
    df = df.assign(layer_kind=df["layer_kind"].astype(str), op=df["op"].astype(str))
    kinds = [k for k in ("dense", "moe", "mtp", "unknown") if k in set(df["layer_kind"])] + sorted(set(df["layer_kind"]) - {"dense", "moe", "mtp", "unknown"})
    # one value for every (op, kind): an op a kind lacks is 0, never NaN (plotly restarts a stack at zero
    # after a missing value, so the bars stopped short of the kinds table's totals)
    grid = df.pivot_table(index="op", columns="layer_kind", values="us_per_layer", aggfunc="sum", fill_value=0.0).reindex(columns=kinds, fill_value=0.0)
    grid = grid.loc[grid.sum(axis=1).sort_values(ascending=False, kind="stable").index]
    fig = go.Figure()
    for op, row in grid.iterrows():
        fig.add_bar(
            name=esc(op),
            x=[esc(k) for k in kinds],
            y=row.to_numpy(dtype=float),
            marker_color=colors(str(op)),
            hovertemplate=esc(op) + " in one %{x} layer: %{y:.1f} µs<extra></extra>",
        )
    fig.update_layout(
        barmode="stack", title="One layer of each kind: op breakdown (µs per layer instance)", yaxis_title="µs", xaxis_title="layer kind", **LAYOUT
    )
    fig.update_xaxes(categoryorder="array", categoryarray=[esc(k) for k in kinds])
    return fig


def timeline(d: ReportData, colors: Colors) -> go.Figure | None:
    tl = d.timeline
    if tl is None or len(tl.segments) == 0:
        return None
    seg = tl.segments
    fig = go.Figure()
    streams = sorted(seg["stream"].unique())
    labels = {s: f"stream {s}" for s in streams}
    for op, sub in seg.groupby("op", sort=False):
        hover = [
            f"{esc(lbl)}<br>{esc(op)} · {esc(kind) or '-'}<br>{dur:.2f} µs at {st:.1f} µs"
            for lbl, kind, dur, st in zip(sub["label"], sub["layer_kind"], sub["dur_us"], sub["start_us"])
        ]
        fig.add_bar(
            name=esc(op),
            orientation="h",
            base=np.round(sub["start_us"].to_numpy(), 3),
            x=np.maximum(np.round(sub["dur_us"].to_numpy(), 3), 0.05),
            y=[labels[s] for s in sub["stream"]],
            marker_color=colors(str(op)),
            hovertext=hover,
            hoverinfo="text",
            width=0.8,
        )
    fig.update_layout(
        barmode="overlay",
        title=f"Step {tl.step} on GPU {tl.device_id}: {tl.kernels} kernels, {tl.wall_us:,.1f} µs ({tl.method})",
        xaxis_title="µs from the step's first kernel",
        height=260 + 40 * len(streams),
        **LAYOUT,
    )
    return fig


def gaps(d: ReportData) -> go.Figure | None:
    g = d.gaps.gaps
    if len(g) == 0:
        return None
    fig = go.Figure()
    for cause, sub in g.groupby("cause", sort=False):
        fig.add_histogram(x=np.round(sub["gap_us"].to_numpy(), 2), name=esc(cause), nbinsx=40)
    fig.update_layout(barmode="stack", title="Inter-step gaps by cause", xaxis_title="gap (µs)", yaxis_title="gaps", **LAYOUT)
    return fig


def causes(d: ReportData) -> go.Figure | None:
    c = d.gaps.causes
    if len(c) == 0:
        return None
    fig = go.Figure()
    for cause, sub in c.groupby("cause", sort=False):
        fig.add_bar(name=esc(cause), x=[esc(k) for k in sub["kind"]], y=sub["total_us"].to_numpy(), hovertemplate=esc(cause) + ": %{y:,.1f} µs<extra></extra>")
    fig.update_layout(barmode="stack", title="Idle GPU time by cause", yaxis_title="µs (whole trace)", **LAYOUT)
    return fig


def top_kernels(d: ReportData) -> go.Figure | None:
    k = d.top_kernels
    if len(k) == 0:
        return None
    k = k.iloc[::-1]
    names = [esc(n if len(n) <= 70 else n[:69] + "…") for n in k["name"].astype(str)]
    fig = go.Figure(
        go.Bar(orientation="h", x=k["total_us"].to_numpy() / 1e3, y=names, hovertext=[esc(n) for n in k["name"].astype(str)], marker_color="#4c78a8")
    )
    fig.update_layout(
        title="Top kernels by total time", xaxis_title="ms (whole trace)", height=200 + 22 * len(k), **{**LAYOUT, "margin": dict(l=380, r=20, t=50, b=50)}
    )
    return fig


def waterfall(d: ReportData, top: int = 14) -> go.Figure | None:
    sd = d.simdiff
    if sd is None:
        return None
    t = sd.table
    head = t.head(top)
    rest = float(t["total_diff_ms"].iloc[top:].sum())
    recon = sd.reconciliation.set_index("component")["ms"]
    x = ["predicted total"] + [f"{esc(o)} ({esc(s)})" if s != "matched" else esc(o) for o, s in zip(head["op"], head["status"])]
    y = [sd.predicted_total_ms] + list(head["total_diff_ms"].to_numpy())
    measure = ["absolute"] + ["relative"] * len(head)
    if len(t) > top:
        x.append(f"{len(t) - top} other ops")
        y.append(rest)
        measure.append("relative")
    x += ["overlap/idle/copies", "measured total"]
    y += [float(recon["+ overlap/idle/copies"]), sd.measured_total_ms]
    measure += ["relative", "total"]
    fig = go.Figure(go.Waterfall(x=x, y=y, measure=measure, connector=dict(line=dict(color="#999")), hovertemplate="%{x}: %{y:+.3f} ms<extra></extra>"))
    fig.update_layout(title="From predicted to measured: Δ × instances per op (ms per step)", yaxis_title="ms", **LAYOUT)
    return fig


def comparison(d: ReportData, top: int = 20) -> go.Figure | None:
    c = d.comparison
    if c is None:
        return None
    t = c.table[c.table["verdict"] != "info"].copy()
    if len(t) == 0:
        return None
    t = t.reindex(t["delta_us"].abs().sort_values(ascending=False).index).head(top).iloc[::-1]
    color = t["verdict"].map({"regression": "#d62728", "improvement": "#2ca02c"}).fillna("#999999")
    fig = go.Figure(
        go.Bar(
            orientation="h",
            x=t["delta_us"].to_numpy(),
            y=[f"{esc(s)}: {esc(k)}" for s, k in zip(t["section"], t["key"])],
            marker_color=color.tolist(),
            error_x=dict(type="data", array=t["noise_us"].fillna(0).to_numpy(), visible=True),
            hovertemplate="%{y}: %{x:+,.1f} µs<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Against the baseline: Δ µs per step (bars: ± noise), verdict {esc(c.verdict)}",
        xaxis_title="new − base (µs)",
        height=220 + 24 * len(t),
        **{**LAYOUT, "margin": dict(l=300, r=20, t=50, b=50)},
    )
    return fig


def all_figures(d: ReportData) -> dict[str, dict[str, Any]]:
    """Figure id → plotly JSON-able dict, for the sections that have data."""
    colors = Colors()
    figs = {
        "fig-layers": layer_breakdown(d, colors),
        "fig-timeline": timeline(d, colors),
        "fig-gaps": gaps(d),
        "fig-causes": causes(d),
        "fig-kernels": top_kernels(d),
        "fig-waterfall": waterfall(d),
        "fig-compare": comparison(d),
    }
    return {k: f.to_plotly_json() for k, f in figs.items() if f is not None}


def plotly_js() -> str:
    """plotly.js from the installed package (inlined: the report must work offline)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()
