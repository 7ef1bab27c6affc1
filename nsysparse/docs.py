"""Generate docs/columns.md from the column declarations (run: python -m nsysparse.docs > docs/columns.md).

tests/test_docs.py fails when the committed file differs from what this prints.
"""

from __future__ import annotations

from nsysparse.analyses import compare, coverage, gaps, kernel_summary, layers, mfu, ops, serving, simdiff, steps
from nsysparse.columns import Column, describe
from nsysparse.models import predict

SECTIONS: list[tuple[str, str, tuple[Column, ...]]] = [
    ("kernels", "`nsysparse kernels`: one row per kernel name (nsys stats' numbers, in µs)", kernel_summary.COLUMNS),
    ("ops", "`nsysparse ops`: one row per logical op (`--by-kind`: per layer kind and op)", ops.COLUMNS),
    ("layers", "`nsysparse layers`: layer kind × op, per instance (CSV/Parquet output)", layers.OP_COLUMNS),
    ("layers-kinds", "`nsysparse layers`: one layer of each kind", layers.KIND_COLUMNS),
    ("layers-reconciliation", "`nsysparse layers`: reconciliation of the mean step", layers.RECON_COLUMNS),
    ("layers-unmapped", "`nsysparse layers`: top unmapped kernels", layers.UNMAPPED_COLUMNS),
    ("steps", "`nsysparse steps`: one row per step", steps.COLUMNS),
    ("gaps", "`nsysparse gaps`: one row per inter-step gap (CSV output)", gaps.GAP_COLUMNS),
    ("gaps-bubbles", "`nsysparse gaps`: the largest bubbles inside steps", gaps.BUBBLE_COLUMNS),
    ("gaps-causes", "`nsysparse gaps`: idle time per cause", gaps.CAUSE_COLUMNS),
    ("gaps-devices", "`nsysparse gaps`: per device", gaps.DEVICE_COLUMNS),
    ("serving", "`nsysparse gaps --accept-rate/--batch`: serving numbers", serving.COLUMNS),
    ("mfu", "`nsysparse mfu`: the summary (CSV output; the table view shows it as metric/value)", mfu.SUMMARY_COLUMNS),
    ("mfu-steps", "`nsysparse mfu`: per step", mfu.STEP_COLUMNS),
    ("predict", "`nsysparse predict`: one row per (layer kind, op); the prediction file format is in docs/predictions.md", predict.COLUMNS),
    ("simdiff", "`nsysparse simdiff`: one row per op (`--by-kind`: per layer kind and op)", simdiff.COLUMNS),
    ("simdiff-reconciliation", "`nsysparse simdiff`: reconciliation of the totals", simdiff.RECON_COLUMNS),
    ("compare", "`nsysparse compare`: one row per key (section, key)", compare.COLUMNS),
    ("rules-check", "`nsysparse rules check`: unclassified kernels", coverage.COLUMNS),
]

JSON_NOTES = """
## JSON outputs

`-f json` prints one object. `layers`: `steps`, `step_time_us` (median wall), `step_busy_us`, `layer_kinds`
({kind: layers per step}), `ops` ([{layer_kind, op, count_per_step, mean_us, median_us, total_us_per_step,
source}]), `layer_totals`, `reconciliation`, `unmapped_share` (0..1), `top_unmapped`, `step_source`,
`step_confidence`, `layer_source`. `gaps`: `devices`, `gaps`, `causes`, `largest_bubbles`,
`bubbles_per_step`, `serving` (when asked for), `worst_device`, `min_bubble_us`, `notes`. `mfu`: the
summary columns plus `per_step` and `notes`. `predict`: `meta` (the prediction file's meta block) and `ops`.
`simdiff`: `measured_total_ms`, `predicted_total_ms`, `matched_total_diff_ms`, `ops`, `reconciliation`,
`notes`. `compare`: `verdict` (the step time's), `comparable`, `reasons`, `step_time` (the step period
or wall row the verdict follows: key, base_us, new_us, delta_us, delta_pct, noise_us, verdict), `causes`
(the other keys that changed significantly), `regressions`, `improvements`, `base`/`new` (gpu, steps,
layers_per_step, step_source), `rows`, `notes`. Other commands:
`meta`, one list per table (named as in the table view), `notes`.
"""


def render() -> str:
    parts = [
        "# Output columns",
        "",
        "Generated from the declarations in `nsysparse/analyses/` by `python -m nsysparse.docs`.",
        "Units are in the names: `_ns`, `_us`, `_ms`, `_pct`.",
        "",
    ]
    for anchor, title, cols in SECTIONS:
        parts += [f'<a id="{anchor}"></a>', f"## {title}", "", describe(cols), ""]
    parts.append(JSON_NOTES.strip())
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
