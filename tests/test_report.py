"""The HTML report: self-contained, escaped, bounded in size, and rendering in headless Chromium."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, fixture_trace

from nsysparse.report.timeline import step_timeline
from nsysparse.structure.mapping import map_trace
from nsysparse.trace import open_trace

ARTIFACTS = Path(os.environ.get("NSYSPARSE_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SECTIONS = ("summary", "layers", "timeline", "gaps", "kernels", "unmapped")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("NSYSPARSE_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (NSYSPARSE_REQUIRE_CHROMIUM is set) but not installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


class Elements(HTMLParser):
    """Collects elements (tag, attrs) and the text of each <script>."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[tuple[dict[str, str], str]] = []
        self._in: dict[str, str] | None = None

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        d = {k: v or "" for k, v in attrs}
        self.elements.append((tag, d))
        if tag == "script":
            self._in = d
            self.scripts.append((d, ""))

    def handle_data(self, data):  # type: ignore[no-untyped-def]
        if self._in is not None:
            a, t = self.scripts[-1]
            self.scripts[-1] = (a, t + data)

    def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
        if tag == "script":
            self._in = None


def parse(text: str) -> Elements:
    p = Elements()
    p.feed(text)
    return p


def render_in_chromium(html_path: Path, name: str) -> tuple[str, str]:
    """(DOM after scripts ran, Chromium's stderr); keeps a screenshot under test-artifacts/."""
    exe = chromium()
    url = html_path.resolve().as_uri()
    dom = subprocess.run(
        [exe, *CHROMIUM_FLAGS, "--virtual-time-budget=20000", "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    subprocess.run(
        [exe, *CHROMIUM_FLAGS, "--hide-scrollbars", "--virtual-time-budget=20000", "--window-size=1400,4000", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=180,
    )
    assert shot.exists() and shot.stat().st_size > 10_000, "no screenshot"
    return dom.stdout, dom.stderr


def console_errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "CONSOLE" in ln and ("Uncaught" in ln or ":ERROR:" in ln)]


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    from click.testing import CliRunner

    from nsysparse.cli import cli

    tmp = tmp_path_factory.mktemp("report")
    trace = fixture_trace("moe_decode_op")
    man = trace.parent / "manifest.json"
    pred = tmp / "pred.csv"
    r = CliRunner().invoke(cli, ["predict", "--model", str(man), "--hardware", "h100_sxm", "-o", str(pred)])
    assert r.exit_code == 0, r.output
    out = tmp / "report.html"
    r = CliRunner().invoke(
        cli, ["report", str(trace), "-o", str(out), "--model", str(man), "--predictions", str(pred), "--baseline", str(fixture_trace("moe_decode_op_gap3ms"))]
    )
    assert r.exit_code == 0, r.output
    return out


def test_report_is_self_contained_and_complete(full_report):
    text = full_report.read_text(encoding="utf-8")
    assert full_report.stat().st_size < 10_000_000
    doc = parse(text)
    ids = {a.get("id") for _, a in doc.elements}
    assert set(SECTIONS) | {"mfu", "simdiff", "baseline"} <= ids
    assert {"fig-layers", "fig-timeline", "fig-gaps", "fig-kernels", "fig-waterfall", "fig-compare"} <= ids
    # nothing fetched at view time: no external scripts, styles, images or fonts
    for tag, a in doc.elements:
        assert not a.get("src", "").startswith(("http:", "https:", "//")), (tag, a)
        assert not (tag == "link" and a.get("href")), (tag, a)
    assert "Plotly.newPlot" in text and len(text) > 3_000_000  # plotly.js inlined
    # the summary carries the headline numbers
    assert "TPOT" in text and "MFU" in text and "vs baseline" in text and "regression" in text


def test_report_figures_are_what_plotly_makes_of_them(full_report):
    """The figures are written as plain JSON (not through plotly.graph_objects): validated by plotly, each comes
    back unchanged, so the page draws what the graph objects drew."""
    import plotly.graph_objects as go
    import plotly.io as pio
    from plotly.utils import PlotlyJSONEncoder

    figs = {a["data-figure"]: json.loads(t) for a, t in parse(full_report.read_text(encoding="utf-8")).scripts if "data-figure" in a}
    assert len(figs) == 7
    for key, fig in figs.items():
        again = json.loads(json.dumps(go.Figure(fig).to_plotly_json(), cls=PlotlyJSONEncoder))
        assert again == fig, key
        assert fig["layout"]["template"] == json.loads(json.dumps(pio.templates["plotly_white"].to_plotly_json(), cls=PlotlyJSONEncoder))


def test_report_renders_in_chromium(full_report):
    dom, stderr = render_in_chromium(full_report, "report-moe_decode_op")
    assert console_errors(stderr) == []
    m = re.search(r'data-figures-rendered="(\d+)"', dom)
    assert m and int(m.group(1)) == 7, dom[:400]
    assert 'data-js-errors="' not in dom
    assert dom.count('class="main-svg"') >= 7  # plotly drew its SVGs
    for sec in (*SECTIONS, "mfu", "simdiff", "baseline"):
        assert f'id="{sec}"' in dom


def hostile_trace(builder, path):
    b = builder("2024.5")
    b.gpu(0, 'NVIDIA H100 <img src=x onerror="alert(2)">')
    evil = "<script>alert(1)</script>"
    for i in range(4):
        t = 1_000_000 + i * 2_000_000
        b.push(t, t + 500_000, f"forward_{i}")
        b.push(t + 10, t + 400_000, "layer_0_dense")
        b.push(t + 20, t + 100, evil)
        b.kernel(t + 300_000, t + 800_000, "void evil<</script><b>>()", short="</script><script>alert(3)</script>", api_start=t + 30, api_end=t + 40)
        b.push(t + 200, t + 300, "o_proj")
        b.kernel(t + 810_000, t + 900_000, "nvjet_sm90_tst_64x8_TNT", api_start=t + 210, api_end=t + 220)
    return b.write(path)


def test_trace_strings_are_escaped(run, builder, tmp_path):
    trace = hostile_trace(builder, tmp_path / "evil.sqlite")
    out = tmp_path / "evil.html"
    run("report", trace, "-o", out)
    text = out.read_text(encoding="utf-8")
    doc = parse(text)
    for attrs, body in doc.scripts:
        if "alert(" in body:
            assert attrs.get("type") == "application/json", attrs  # only inert data holds the strings
            assert "<" not in body  # and even there no tag can open or close
    assert not any(tag == "img" for tag, _ in doc.elements)
    # shown as text: the kernel name in the tables, the GPU name in the summary (NVTX op text becomes a slug)
    assert "&lt;/script&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in text and "NVIDIA H100 &lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in text
    if shutil.which("chromium") or os.environ.get("NSYSPARSE_REQUIRE_CHROMIUM"):
        dom, stderr = render_in_chromium(out, "report-escaping")
        assert console_errors(stderr) == [] and 'data-js-errors="' not in dom
        rendered = parse(dom)
        assert not any(tag == "img" for tag, _ in rendered.elements)
        assert sum(1 for a, b in rendered.scripts if "alert(" in b and a.get("type") != "application/json") == 0


def test_timeline_is_downsampled(builder, tmp_path):
    b = builder("2024.5")
    b.gpu()
    rng = np.random.default_rng(0)
    for i in range(3):
        t = 1_000_000 + i * 100_000_000
        b.push(t, t + 50_000_000, f"forward_{i}")
        for j in range(6000):
            op = ("fmha", "o_proj", "mlp_up")[j // 10 % 3]  # runs of 5 kernels of one op per stream
            b.push(t + j * 100 + 10, t + j * 100 + 20, op)
            s0 = t + 60_000_000 + j * 4_000
            b.kernel(s0, s0 + int(rng.integers(500, 3000)), f"k{j % 7}", api_start=t + j * 100 + 12, api_end=t + j * 100 + 15, stream=7 + j % 2)
    path = b.write(tmp_path / "big.sqlite")
    with open_trace(path) as tr:
        m = map_trace(tr)
    tl = step_timeline(m, max_segments=3000)
    assert tl.kernels == 6000 and tl.method == "merged by op" and len(tl.segments) <= 3000
    assert tl.segments["kernels"].sum() == 6000
    tl2 = step_timeline(m, max_segments=200)
    assert tl2.method == "binned" and len(tl2.segments) <= 200 and tl2.segments["kernels"].sum() == 6000
    # bars stay inside the step
    seg = tl2.segments
    assert (seg["start_us"] >= 0).all() and ((seg["start_us"] + seg["dur_us"]) <= tl2.wall_us + 1e-6).all()


def test_report_options_and_errors(run, tmp_path):
    trace = fixture_trace("dense_train_step")
    run("report", trace, "-o", tmp_path / "r.txt", expect=2)
    res = run("report", trace, "-o", tmp_path / "train.html", "--model", trace.parent / "manifest.json", "--title", "dense train <v2>")
    text = (tmp_path / "train.html").read_text()
    assert "<title>dense train &lt;v2&gt;</title>" in text and 'id="mfu"' in text and "wrote" in res.output
    assert 'id="simdiff"' not in text and 'id="baseline"' not in text
    run("report", tmp_path / "missing.sqlite", "-o", tmp_path / "x.html", expect=1)


# Injected into a copy of a report: once plotly has drawn every figure, read back the drawn segments of
# one figure's bars (in data units, through its axes) and leave them in an attribute for --dump-dom.
BAR_PROBE = """<script>
(function () {
  function probe() {
    if (!document.documentElement.getAttribute("data-figures-rendered")) { return setTimeout(probe, 50); }
    var gd = document.getElementById("%s"), fl = gd._fullLayout, xa = fl.xaxis, ya = fl.yaxis, out = [];
    gd.querySelectorAll(".barlayer .trace").forEach(function (tr, i) {
      tr.querySelectorAll(".point path").forEach(function (path) {
        var b = path.getBBox();
        if (b.height <= 0) { return; }
        var cat = xa._categories[Math.round(xa.p2l(b.x + b.width / 2))];
        out.push({trace: i, x: cat, bottom: ya.p2l(b.y + b.height), top: ya.p2l(b.y)});
      });
    });
    document.documentElement.setAttribute("data-bar-segments", JSON.stringify(out));
  }
  probe();
})();
</script>"""


def drawn_bar_stacks(report: Path, fig_id: str, tmp: Path) -> dict[str, list[tuple[float, float]]]:
    """Per x category of `fig_id`'s bar chart, the (bottom, top) of each drawn segment, as Chromium drew them."""
    import html as html_mod
    import json

    page = tmp / f"probe-{report.name}"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", BAR_PROBE % fig_id + "</body>"), encoding="utf-8")
    dom, stderr = render_in_chromium(page, f"probe-{report.stem}")
    assert console_errors(stderr) == []
    m = re.search(r'data-bar-segments="([^"]*)"', dom)
    assert m, "the probe did not run"
    stacks: dict[str, list[tuple[float, float]]] = {}
    for seg in json.loads(html_mod.unescape(m.group(1))):
        stacks.setdefault(seg["x"], []).append((seg["bottom"], seg["top"]))
    return {k: sorted(v) for k, v in stacks.items()}


def assert_stacks_match(stacks: dict[str, list[tuple[float, float]]], totals: dict[str, float]) -> None:
    """Each bar: segments laid end to end from 0 (no restart, no overlap), its top the table's total."""
    assert set(stacks) == set(totals), (stacks.keys(), totals)
    for kind, segs in stacks.items():
        tol = max(totals.values()) * 0.004  # a pixel of a ~500 px tall plot
        assert segs[0][0] == pytest.approx(0, abs=tol), (kind, segs[:3])
        for (_, top), (bottom, _) in itertools.pairwise(segs):
            assert bottom == pytest.approx(top, abs=tol), (kind, "a segment restarts or overlaps", segs)
        assert segs[-1][1] == pytest.approx(totals[kind], abs=tol), (kind, segs[-1][1], totals[kind])
        assert sum(t - b for b, t in segs) == pytest.approx(totals[kind], abs=tol)


def test_layer_bars_reach_the_kinds_table_totals(full_report, tmp_path):
    """moe_decode_op: 158.2, 393.8 and 481.8 µs per dense, moe and mtp layer in the kinds table; the bars
    reached about 52, 308 and 385 µs (every op a kind lacks was NaN and restarted the stack)."""
    import json

    from click.testing import CliRunner

    from nsysparse.cli import cli

    kinds = json.loads(CliRunner().invoke(cli, ["layers", str(fixture_trace("moe_decode_op")), "-f", "json"]).stdout)["layer_totals"]
    totals = {k["layer_kind"]: k["kernel_us"] for k in kinds}
    assert totals == pytest.approx({"dense": 158.19625, "moe": 393.83905, "mtp": 481.832667}, abs=1e-3)
    assert_stacks_match(drawn_bar_stacks(full_report, "fig-layers", tmp_path), totals)
    # the shipped example (reports/moe_decode_op.html, the same fixture) too
    assert_stacks_match(drawn_bar_stacks(ROOT / "reports" / "moe_decode_op.html", "fig-layers", tmp_path), totals)


def test_layer_bars_of_kinds_with_different_ops(run, builder, tmp_path):
    """Built: a dense layer of fmha 100 µs + o_proj 20 µs, a moe layer of fmha 100 µs + experts 50 µs
    (no o_proj), three steps: the bars reach 120 and 150 µs."""
    b = builder("2024.5")
    b.gpu()
    t = 1_000_000
    for i in range(3):
        t0 = t
        for j, (kind, second, us) in enumerate((("dense", "o_proj", 20), ("moe", "experts", 50))):
            b.push(t + 10, t + 70, f"layer_{j}_{kind}")
            b.push(t + 20, t + 40, "fmha")
            b.kernel(t + 30_000, t + 130_000, "void flash::flash_fwd_kernel<T>()", short="flash_fwd_kernel", api_start=t + 25, api_end=t + 35)
            b.push(t + 50, t + 70, second)
            b.kernel(t + 132_000, t + 132_000 + us * 1000, f"void {second}_kernel<T>()", api_start=t + 55, api_end=t + 65)
            t += 132_000 + us * 1000
        b.push(t0, t + 10, f"forward_{i}")
        t += 500_000
    p = b.write(tmp_path / "kinds.sqlite")
    kinds = {k["layer_kind"]: k["kernel_us"] for k in json.loads(run("layers", p, "-f", "json").stdout)["layer_totals"]}
    assert kinds == pytest.approx({"dense": 120.0, "moe": 150.0})  # by construction
    out = tmp_path / "kinds.html"
    run("report", p, "-o", out)
    assert_stacks_match(drawn_bar_stacks(out, "fig-layers", tmp_path), {"dense": 120.0, "moe": 150.0})


def test_example_report_in_reports_is_current():
    """reports/ holds an example rendered from a fixture; it must come from the current templates."""
    example = ROOT / "reports" / "moe_decode_op.html"
    assert example.exists(), "run: bash reports/render.sh (see reports/README.md)"
    text = example.read_text(encoding="utf-8")
    css = (ROOT / "reports" / "templates" / "report.css").read_text(encoding="utf-8")
    assert css in text
    assert example.stat().st_size < 10_000_000
    assert 'id="simdiff"' in text and 'id="baseline"' in text and 'id="mfu"' in text


def test_report_never_contains_host_or_environment_fields(run, tmp_path):
    """The builder plants host names, users and environment variables in the metadata tables."""
    from conftest import SECRETS
    from nsysbuilder import TraceBuilder
    from test_compare import decode_trace  # a small NVTX decode trace from the builder

    class B:  # the builder fixture's factory, without the fixture
        def __call__(self, era="2024.5", **kw):
            return TraceBuilder(era, **kw)

    trace = decode_trace(B(), tmp_path / "t.sqlite")
    out = tmp_path / "r.html"
    run("report", trace, "-o", out)
    text = out.read_text(encoding="utf-8")
    for s in SECRETS:
        assert s not in text, s
    assert str(tmp_path) not in text  # only the file's name, never its directory
