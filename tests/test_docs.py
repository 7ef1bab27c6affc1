"""Docs are generated from code and must not go stale; outputs match their declared columns."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import fixture_trace

from nsysparse.analyses import gaps, kernel_summary, layers, ops, steps
from nsysparse.analyses.context import AnalysisContext
from nsysparse.cli import cli
from nsysparse.columns import (
    MAPPED_GPU_OP_COLUMNS,
    MAPPED_KERNEL_COLUMNS,
    MAPPED_LAYER_COLUMNS,
    MAPPED_OP_INSTANCE_COLUMNS,
    MAPPED_STEP_COLUMNS,
    validate_frame,
)
from nsysparse.docs import render

ROOT = Path(__file__).resolve().parents[1]


def test_columns_doc_is_up_to_date():
    assert (ROOT / "docs" / "columns.md").read_text() == render(), "run: python -m nsysparse.docs > docs/columns.md"


def test_every_command_has_help_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name, cmd in cli.commands.items():
        assert cmd.help, name
        assert f"nsysparse {name}" in readme, name


@pytest.mark.parametrize("fixture", ["moe_decode_op", "moe_decode_nonvtx", "dense_train_step"])
def test_outputs_match_their_declared_columns(fixture):
    with AnalysisContext.open(fixture_trace(fixture)) as ctx:
        m = ctx.mapping
        for frame, declared in (
            (m.kernels, MAPPED_KERNEL_COLUMNS),
            (m.steps, MAPPED_STEP_COLUMNS),
            (m.layers, MAPPED_LAYER_COLUMNS),
            (m.gpu_ops, MAPPED_GPU_OP_COLUMNS),
            (m.op_instances, MAPPED_OP_INSTANCE_COLUMNS),
        ):
            validate_frame(frame, declared)
        validate_frame(kernel_summary.kernel_summary(ctx).assign(), kernel_summary.COLUMNS)
        validate_frame(ops.op_summary(ctx), ops.COLUMNS)
        r = layers.layer_report(ctx)
        validate_frame(r.ops, layers.OP_COLUMNS)
        validate_frame(r.kinds, layers.KIND_COLUMNS)
        validate_frame(r.reconciliation, layers.RECON_COLUMNS)
        validate_frame(steps.step_table(ctx), steps.COLUMNS)
        g = gaps.gap_report(ctx)
        validate_frame(g.gaps, gaps.GAP_COLUMNS)
        validate_frame(g.bubbles, gaps.BUBBLE_COLUMNS)
        validate_frame(g.devices, gaps.DEVICE_COLUMNS)
        validate_frame(g.causes, gaps.CAUSE_COLUMNS)


def test_prediction_doc_lists_every_alias():
    """docs/predictions.md's alias table must cover [aliases] of rules/vocabulary.toml."""
    import re
    import tomllib

    aliases = tomllib.loads((ROOT / "rules" / "vocabulary.toml").read_text())["aliases"]
    doc = (ROOT / "docs" / "predictions.md").read_text()
    table = doc.split("## Alias table", 1)[1]
    listed = {}
    for line in table.splitlines():
        m = re.match(r"\|\s*([^|]+?)\s*\|\s*([a-z_0-9]+)\s*\|$", line)
        if m and m.group(2) != "op":
            for name in m.group(1).split(","):
                listed[name.strip()] = m.group(2)
    assert listed == aliases


@pytest.mark.parametrize(
    ("doc", "module", "names"),
    [
        (
            "docs/structure.md",
            "nsysparse.structure.steps",
            (
                "MIN_STEP_GAP_NS",
                "MIN_JUMP",
                "MAX_GAPS_SCANNED",
                "MIN_AGREEMENT",
                "GAP_CONFIDENCE_FLOOR",
                "PERIOD_MIN_REPEATS",
                "PERIOD_MIN_MATCH",
                "PERIOD_CONFIDENCE_SCALE",
                "EDGE_FRAGMENT",
            ),
        ),
        (
            "docs/structure.md",
            "nsysparse.structure.loops",
            (
                "MIN_UNIT_KERNELS",
                "MAX_CANDIDATES",
                "MIN_STEP_COPIES",
                "MIN_BOUNDARY_RATIO",
                "MIN_BODY_SHARE",
                "NON_PRIMITIVE_OVERLAP",
                "PREFIX_KERNELS",
                "MIN_TEMPLATE_MATCH",
                "EMBED_SNAP_KERNELS",
                "WARMUP_FACTOR",
                "STEADY_RUN",
            ),
        ),
        ("docs/structure.md", "nsysparse.structure.layer_repeats", ("LAYER_PREFIX_KERNELS", "MAX_LAYER_PERIODS")),
        ("docs/structure.md", "nsysparse.structure.mapping", ("TEMPLATE_MISS_SHARE",)),
        ("docs/gaps.md", "nsysparse.analyses.gaps", ("DEFAULT_MIN_BUBBLE_US", "LAUNCH_LATENCY_NS", "TRICKLE_FREE_NS", "COLLECTIVE_SLACK_NS", "PROFILER_SHARE")),
    ],
)
def test_docs_state_every_threshold_with_its_value(doc, module, names):
    """Each named threshold appears in its doc's defaults table with the value the code uses, and has a docstring."""
    import importlib
    import re

    mod = importlib.import_module(module)
    text = (ROOT / doc).read_text()
    source = Path(mod.__file__).read_text()
    for name in names:
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}`")), None)
        assert row is not None, f"{doc} has no row for {name}"
        assert f"| {getattr(mod, name)!s} |" in row, f"{doc}: {name} is {getattr(mod, name)} in the code: {row}"
        assert re.search(rf"^{name} = .*\n\"\"\"", source, re.M), f"{name} has no docstring in {module}"
