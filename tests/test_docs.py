"""Docs are generated from code and must not go stale; outputs match their declared columns."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import fixture_trace

from nsysparse.analyses import gaps, kernel_summary, layers, ops, steps
from nsysparse.cli import cli
from nsysparse.columns import validate_frame
from nsysparse.docs import render
from nsysparse.structure.mapping import map_trace
from nsysparse.trace import open_trace

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
    with open_trace(fixture_trace(fixture)) as t:
        m = map_trace(t)
        validate_frame(kernel_summary.kernel_summary(t).assign(), kernel_summary.COLUMNS)
        validate_frame(ops.op_summary(m), ops.COLUMNS)
        r = layers.layer_report(m)
        validate_frame(r.ops, layers.OP_COLUMNS)
        validate_frame(r.kinds, layers.KIND_COLUMNS)
        validate_frame(r.reconciliation, layers.RECON_COLUMNS)
        validate_frame(steps.step_table(m), steps.COLUMNS)
        g = gaps.gap_report(t, m)
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
