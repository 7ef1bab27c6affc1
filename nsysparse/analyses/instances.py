"""Small helpers over op instances (the frame `Mapping.op_instances`)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def dominant(values: pd.Series, weights: pd.Series) -> str:
    """The value carrying the most weight (e.g. the naming source covering most of an op's time)."""
    if len(values) == 0:
        return ""
    w = pd.Series(np.asarray(weights, dtype=float), index=np.asarray(values, dtype=object))
    return str(w.groupby(level=0).sum().idxmax())
