"""Plotly figures built from the report's tables, as the JSON plotly.js draws. The only module that imports plotly.

Figures are plain dicts, not plotly graph objects: validating thousands of bars through `plotly.graph_objects`
cost about a second at 400x. They are what `go.Figure(...).to_plotly_json()` gave for the same calls (titles
as {"text": ...}, `marker_color` as {"marker": {"color": ...}}, the layout's template written out, numpy
arrays as plotly.js typed arrays), so the page draws the same; tests/test_report.py compares them.

Every string that reaches a figure (op names, kernel names, NVTX-derived labels) is HTML-escaped first:
plotly renders a subset of HTML in labels and hover text, and trace strings are user-controlled.
"""

from __future__ import annotations

import html
from functools import cache
from typing import Any

import numpy as np
from plotly.colors import qualitative

from nsysparse.report.collect import ReportData

try:  # plotly >= 6 writes numpy arrays as typed arrays (base64); plotly 5 wrote JSON lists
    from _plotly_utils.utils import convert_to_base64
except ImportError:  # pragma: no cover - plotly 5

    def convert_to_base64(obj: Any) -> None:
        return None


PALETTE = qualitative.Dark24 + qualitative.Light24
LAYOUT: dict[str, Any] = dict(margin=dict(l=60, r=20, t=50, b=50), font=dict(size=12), hoverlabel=dict(namelength=-1))
TEMPLATE = "plotly_white"


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


@cache
def _template() -> dict[str, Any]:
    import plotly.io as pio

    return dict(pio.templates[TEMPLATE].to_plotly_json())


def figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> dict[str, Any]:
    """A figure's JSON: traces (each a dict with its "type") and the layout over the common one."""
    fig: dict[str, Any] = {"data": data, "layout": {**LAYOUT, **layout}}
    convert_to_base64(fig)  # as plotly's Figure.to_dict does
    fig["layout"] = {"template": _template(), **fig["layout"]}
    return fig


def trace(kind: str, **props: Any) -> dict[str, Any]:
    """One trace; `marker_color` becomes {"marker": {"color": ...}} as plotly's magic underscores do."""
    if "marker_color" in props:
        props["marker"] = {"color": props.pop("marker_color")}
    return {**props, "type": kind}


def title(text: str) -> dict[str, str]:
    return {"text": text}


def axis(text: str, **props: Any) -> dict[str, Any]:
    return {"title": title(text), **props}


def layer_breakdown(d: ReportData, colors: Colors) -> dict[str, Any] | None:
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
    x = [esc(k) for k in kinds]
    values = grid.to_numpy(dtype=float)
    bars = [
        trace(
            "bar", hovertemplate=esc(op) + " in one %{x} layer: %{y:.1f} µs<extra></extra>", marker_color=colors(str(op)), name=esc(op), x=list(x), y=values[i]
        )
        for i, op in enumerate(grid.index)
    ]
    layout = {
        "barmode": "stack",
        "title": title("One layer of each kind: op breakdown (µs per layer instance)"),
        "yaxis": axis("µs"),
        "xaxis": axis("layer kind", categoryorder="array", categoryarray=list(x)),
    }
    return figure(bars, layout)


def timeline(d: ReportData, colors: Colors) -> dict[str, Any] | None:
    tl = d.timeline
    if tl is None or len(tl.segments) == 0:
        return None
    seg = tl.segments
    streams = sorted(seg["stream"].unique())
    labels = {s: f"stream {s}" for s in streams}
    bars = []
    for op, sub in seg.groupby("op", sort=False):
        hover = [
            f"{esc(lbl)}<br>{esc(op)} · {esc(kind) or '-'}<br>{dur:.2f} µs at {st:.1f} µs"
            for lbl, kind, dur, st in zip(sub["label"], sub["layer_kind"], sub["dur_us"], sub["start_us"])
        ]
        bars.append(
            trace(
                "bar",
                base=np.round(sub["start_us"].to_numpy(), 3).tolist(),  # plotly keeps `base` a plain list
                hoverinfo="text",
                hovertext=hover,
                marker_color=colors(str(op)),
                name=esc(op),
                orientation="h",
                width=0.8,
                x=np.maximum(np.round(sub["dur_us"].to_numpy(), 3), 0.05),
                y=[labels[s] for s in sub["stream"]],
            )
        )
    layout = {
        "barmode": "overlay",
        "title": title(f"Step {tl.step} on GPU {tl.device_id}: {tl.kernels} kernels, {tl.wall_us:,.1f} µs ({tl.method})"),
        "xaxis": axis("µs from the step's first kernel"),
        "height": 260 + 40 * len(streams),
    }
    return figure(bars, layout)


def gaps(d: ReportData) -> dict[str, Any] | None:
    g = d.gaps.gaps
    if len(g) == 0:
        return None
    hists = [trace("histogram", name=esc(cause), nbinsx=40, x=np.round(sub["gap_us"].to_numpy(), 2)) for cause, sub in g.groupby("cause", sort=False)]
    layout = {"barmode": "stack", "title": title("Inter-step gaps by cause"), "xaxis": axis("gap (µs)"), "yaxis": axis("gaps")}
    return figure(hists, layout)


def causes(d: ReportData) -> dict[str, Any] | None:
    c = d.gaps.causes
    if len(c) == 0:
        return None
    bars = [
        trace("bar", hovertemplate=esc(cause) + ": %{y:,.1f} µs<extra></extra>", name=esc(cause), x=[esc(k) for k in sub["kind"]], y=sub["total_us"].to_numpy())
        for cause, sub in c.groupby("cause", sort=False)
    ]
    return figure(bars, {"barmode": "stack", "title": title("Idle GPU time by cause"), "yaxis": axis("µs (whole trace)")})


def top_kernels(d: ReportData) -> dict[str, Any] | None:
    k = d.top_kernels
    if len(k) == 0:
        return None
    k = k.iloc[::-1]
    names = [esc(n if len(n) <= 70 else n[:69] + "…") for n in k["name"].astype(str)]
    bar = trace("bar", hovertext=[esc(n) for n in k["name"].astype(str)], marker_color="#4c78a8", orientation="h", x=k["total_us"].to_numpy() / 1e3, y=names)
    layout = {
        "title": title("Top kernels by total time"),
        "xaxis": axis("ms (whole trace)"),
        "height": 200 + 22 * len(k),
        "margin": dict(l=380, r=20, t=50, b=50),
    }
    return figure([bar], layout)


def waterfall(d: ReportData, top: int = 14) -> dict[str, Any] | None:
    sd = d.simdiff
    if sd is None:
        return None
    t = sd.table
    head = t.head(top)
    rest = float(t["total_diff_ms"].iloc[top:].sum())
    recon = sd.reconciliation.set_index("component")["ms"]
    x = ["predicted total"] + [f"{esc(o)} ({esc(s)})" if s != "matched" else esc(o) for o, s in zip(head["op"], head["status"])]
    y = [sd.predicted_total_ms] + head["total_diff_ms"].to_numpy().tolist()
    measure = ["absolute"] + ["relative"] * len(head)
    if len(t) > top:
        x.append(f"{len(t) - top} other ops")
        y.append(rest)
        measure.append("relative")
    x += ["overlap/idle/copies", "measured total"]
    y += [float(recon["+ overlap/idle/copies"]), sd.measured_total_ms]
    measure += ["relative", "total"]
    fall = trace(
        "waterfall", connector=dict(line=dict(color="#999")), hovertemplate="%{x}: %{y:+.3f} ms<extra></extra>", measure=measure, x=x, y=[float(v) for v in y]
    )
    return figure([fall], {"title": title("From predicted to measured: Δ × instances per op (ms per step)"), "yaxis": axis("ms")})


def comparison(d: ReportData, top: int = 20) -> dict[str, Any] | None:
    c = d.comparison
    if c is None:
        return None
    t = c.table[c.table["verdict"] != "info"].copy()
    if len(t) == 0:
        return None
    t = t.reindex(t["delta_us"].abs().sort_values(ascending=False).index).head(top).iloc[::-1]
    color = t["verdict"].map({"regression": "#d62728", "improvement": "#2ca02c"}).fillna("#999999")
    bar = trace(
        "bar",
        error_x=dict(array=t["noise_us"].fillna(0).to_numpy(), type="data", visible=True),
        hovertemplate="%{y}: %{x:+,.1f} µs<extra></extra>",
        marker_color=color.tolist(),
        orientation="h",
        x=t["delta_us"].to_numpy(),
        y=[f"{esc(s)}: {esc(k)}" for s, k in zip(t["section"], t["key"])],
    )
    layout = {
        "title": title(f"Against the baseline: Δ µs per step (bars: ± noise), verdict {esc(c.verdict)}"),
        "xaxis": axis("new − base (µs)"),
        "height": 220 + 24 * len(t),
        "margin": dict(l=300, r=20, t=50, b=50),
    }
    return figure([bar], layout)


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
    return {k: f for k, f in figs.items() if f is not None}


def plotly_js() -> str:
    """plotly.js from the installed package (inlined: the report must work offline)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()
