"""Value formatting shared by every output: terminal tables, Markdown, JSON, the HTML report and prediction files.

`fmt_value` turns one cell into display text (units follow from the column name); `jsonable` turns numpy and
pandas values into plain JSON values. Neither knows about the CLI, so the library layers use them too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

NAME_WIDTH = 90
"""Longest text shown in one table cell; longer kernel names end in an ellipsis."""


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN/inf -> null, frames -> record lists."""
    if isinstance(value, pd.DataFrame):
        return [jsonable(r) for r in value.to_dict("records")]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def fmt_value(col: str, v: Any, width: int = NAME_WIDTH) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}" if not col.endswith("_id") and col not in ("pid", "tid", "step", "layer") else str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if col.endswith("_pct"):
            return f"{v:.1f}"
        a = abs(v)
        if a >= 1e7 and ("flops" in col or "bytes" in col):
            return f"{v:.4g}"
        if a >= 1000:
            return f"{v:,.1f}"
        if a >= 1 or a == 0:
            return f"{v:.2f}"
        return f"{v:.3g}"
    text = str(v)
    return text if len(text) <= width else text[: width - 1] + "…"
