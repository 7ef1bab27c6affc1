"""Small helpers over op instances (the frame `Mapping.op_instances`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nsysparse import intervals


def dominant(values: pd.Series, weights: pd.Series) -> str:
    """The value carrying the most weight (e.g. the naming source covering most of an op's time)."""
    if len(values) == 0:
        return ""
    w = pd.Series(np.asarray(weights, dtype=float), index=np.asarray(values, dtype=object))
    return str(w.groupby(level=0).sum().idxmax())


def dominant_per_group(groups: intervals.Groups, values: pd.Series, weights: np.ndarray) -> np.ndarray:
    """`dominant` of every group at once: per group, the value carrying the most weight (ties: the first value in
    sort order), as an object array."""
    codes, uniq = pd.factorize(values, sort=True)
    ids = groups.ids
    pairs = intervals.Groups(ids, codes)
    pf = pairs.first
    w = pairs.sum(weights)
    of_group = intervals.Groups(ids[pf])  # numbered as `groups`: a group's first pair is at its first row
    best = w == of_group.max(w)[ids[pf]]
    chosen = of_group.min(np.where(best, codes[pf], len(uniq)))
    return np.asarray(uniq, dtype=object)[chosen]
