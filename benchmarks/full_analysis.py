"""Full analysis in one process: load, map, then ops + steps + layers + gaps (what a user's session does)."""

import sys

from nsysparse import allocator
from nsysparse.analyses.gaps import gap_report
from nsysparse.analyses.layers import layer_report
from nsysparse.analyses.ops import op_summary
from nsysparse.analyses.steps import step_table
from nsysparse.cli.structure import analysis_context
from nsysparse.structure.mapping import DEFAULT_LAYER_PATTERN
from nsysparse.structure.steps import DEFAULT_STEP_PATTERN
from nsysparse.trace import open_trace

allocator.tune()  # as the CLI does for its process
with open_trace(sys.argv[1]) as t:
    ctx = analysis_context(t, (), DEFAULT_STEP_PATTERN, DEFAULT_LAYER_PATTERN, "auto", None)
    ops = op_summary(ctx, by_kind=True)
    steps = step_table(ctx)
    layers = layer_report(ctx)
    gaps = gap_report(ctx)
print(len(ops), len(steps), len(layers.ops), len(gaps.gaps))
