"""Render ReportData into one self-contained HTML file (template: reports/templates/report.html).

Escaping: every string from a trace goes through `html.escape` before it reaches the page; figure
JSON is embedded in `<script type="application/json">` with `<`, `>` and `&` written as \\u escapes,
so no trace string can close the script element or open a tag.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pandas as pd

from nsysparse import __version__
from nsysparse.formatting import fmt_value
from nsysparse.outputs import write_text
from nsysparse.report import figures
from nsysparse.report.collect import ReportData
from nsysparse.resources import data_dir

MAX_TABLE_ROWS = 60


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def safe_json(obj: Any) -> str:
    """JSON that is inert inside a <script> element."""
    from plotly.utils import PlotlyJSONEncoder

    text = json.dumps(obj, cls=PlotlyJSONEncoder, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def table(df: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS, cls: str = "") -> str:
    if df is None or len(df) == 0:
        return '<p class="sub">(none)</p>'
    shown = df.head(max_rows)
    head = "".join(f"<th>{esc(c)}</th>" for c in shown.columns)
    rows = []
    for rec in shown.itertuples(index=False):
        cells = []
        for col, v in zip(shown.columns, rec):
            numeric = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            text = fmt_value(str(col), v, width=10_000)
            klass = "num" if numeric else ("name" if col in ("name", "short_name", "key", "label") else "")
            if col == "verdict":
                klass = f"verdict-{esc(v)}"
            cells.append(f'<td class="{klass}">{esc(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="sub">{len(df) - max_rows} more rows not shown (use the CLI for the full table).</p>' if len(df) > max_rows else ""
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>{more}'


def figure_div(fig_id: str, figs: dict[str, Any]) -> str:
    return f'<div class="figure" id="{fig_id}"></div>' if fig_id in figs else ""


def section(sec_id: str, title: str, inner: str) -> str:
    return f'<section id="{sec_id}"><h2>{esc(title)}</h2>{inner}</section>'


def render(d: ReportData) -> str:
    figs = figures.all_figures(d)
    parts: list[tuple[str, str, str]] = []
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in d.summary)
    parts.append(("summary", "Summary", f'<dl class="summary">{dl}</dl>'))

    lr = d.layers
    per_kind = lr.kinds
    inner = figure_div("fig-layers", figs)
    inner += "<h3>One layer of each kind</h3>" + table(per_kind)
    inner += "<h3>Layer kind × op (µs per instance)</h3>" + table(lr.ops, max_rows=200)
    inner += "<h3>Reconciliation of the mean step</h3>" + table(lr.reconciliation)
    parts.append(("layers", "Per-layer cost", inner))

    tl = d.timeline
    if tl is not None:
        inner = (
            figure_div("fig-timeline", figs)
            + f'<p class="sub">The step with the median wall time; {tl.kernels} kernels drawn as {len(tl.segments)} bars ({esc(tl.method)}).</p>'
        )
        parts.append(("timeline", "Timeline of a representative step", inner))

    g = d.gaps
    inner = figure_div("fig-gaps", figs) + figure_div("fig-causes", figs)
    inner += "<h3>Per device</h3>" + table(g.devices) + "<h3>Idle time by cause</h3>" + table(g.causes)
    inner += "<h3>Largest bubbles inside steps</h3>" + table(g.bubbles, max_rows=15)
    if d.serving:
        inner += "<h3>Serving</h3>" + table(pd.DataFrame([d.serving]))
    parts.append(("gaps", "Gaps and their causes", inner))

    inner = figure_div("fig-kernels", figs) + table(d.top_kernels)
    parts.append(("kernels", "Top kernels", inner))

    parts.append(
        (
            "unmapped",
            "Unmapped kernels",
            f'<p class="sub">{lr.unmapped_share * 100 if lr.unmapped_share == lr.unmapped_share else 0:.2f} % of kernel time inside steps is not mapped to an op; `nsysparse rules check` lists them all.</p>'
            + table(lr.unmapped),
        )
    )

    if d.mfu is not None:
        s = d.mfu.summary.iloc[0]
        mfu_rows = pd.DataFrame({"metric": list(s.index), "value": [fmt_value(str(k), v) for k, v in s.items()]})
        parts.append(("mfu", "MFU", table(mfu_rows, max_rows=40)))

    if d.simdiff is not None:
        inner = (
            figure_div("fig-waterfall", figs)
            + "<h3>Per op</h3>"
            + table(d.simdiff.table, max_rows=80)
            + "<h3>Reconciliation</h3>"
            + table(d.simdiff.reconciliation)
        )
        parts.append(("simdiff", "Measured vs predicted", inner))

    if d.comparison is not None:
        c = d.comparison
        changed = c.table[c.table["verdict"].isin(["regression", "improvement"])]
        head = (
            f'<p>Baseline <b>{esc(d.baseline_name)}</b>: verdict <span class="verdict-{esc(c.verdict)}">{esc(c.verdict)}</span>'
            + (f" — {esc('; '.join(c.reasons))}" if c.reasons else "")
            + "</p>"
        )
        inner = head + figure_div("fig-compare", figs) + "<h3>Changes</h3>" + table(changed) + "<h3>All keys</h3>" + table(c.table, max_rows=120)
        parts.append(("baseline", "Against the baseline", inner))

    if d.notes:
        parts.append(("notes", "Notes", '<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in d.notes) + "</ul>"))

    body = "\n".join(section(i, t, inner) for i, t, inner in parts)
    nav = "".join(f'<a href="#{i}">{esc(t)}</a>' for i, t, _ in parts)
    data = "\n".join(f'<script type="application/json" data-figure="{k}">{safe_json(v)}</script>' for k, v in figs.items())
    tdir = data_dir("templates")
    tmpl = Template((tdir / "report.html").read_text(encoding="utf-8"))
    import plotly

    return tmpl.substitute(
        title=esc(d.title),
        version=esc(__version__),
        css=(tdir / "report.css").read_text(encoding="utf-8"),
        plotly_js=figures.plotly_js(),
        plotly_version=esc(plotly.__version__),
        nav=nav,
        body=body,
        figure_data=data,
    )


def write_report(d: ReportData, path: str | Path) -> int:
    text = render(d)
    write_text(path, text)
    return len(text.encode("utf-8"))
