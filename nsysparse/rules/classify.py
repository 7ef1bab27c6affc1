"""Kernel names -> class, rule id and class-level op. Work is per unique name pair, not per kernel."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nsysparse.distinct import code_dtype, dense_codes
from nsysparse.rules.model import RuleSet


def classify_names(rules: RuleSet, short: pd.Series, name: pd.Series) -> pd.DataFrame:
    """For parallel short/demangled name columns: class, rule_id, class_op ("" when unclassified)."""
    sc, sv = dense_codes(short)
    nc, nv = dense_codes(name)
    pair = sc  # distinct (short, name) pairs as one integer, made in place
    pair *= len(nv) + 1
    pair += nc
    upair, codes = _distinct(pair, len(sv) * (len(nv) + 1))
    uniques = [(sv[p // (len(nv) + 1)], nv[p % (len(nv) + 1)]) for p in upair.tolist()]
    cls, rid, op = [], [], []
    for s, n in uniques:
        hit = next((r for r in rules.classes if r.matches(s, n)), None)
        if hit is None:
            cls.append("")
            rid.append("")
            op.append("")
        else:
            cls.append(hit.cls)
            rid.append(hit.id)
            op.append(hit.op or rules.class_ops.get(hit.cls, hit.cls))
    take = np.asarray(codes).ravel()
    return pd.DataFrame({"kernel_class": _expand(cls, take), "rule_id": _expand(rid, take), "class_op": _expand(op, take)}, index=short.index)


def _distinct(codes: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(codes, return_inverse=True) for non-negative codes below `bound`: by counting when the range is
    small next to the rows (no sort of the rows), else by np.unique."""
    if bound > max(4 * len(codes), 1 << 16):
        uniq, inv = np.unique(codes, return_inverse=True)
        return uniq, inv.ravel()
    present = np.bincount(codes, minlength=bound) > 0
    return np.flatnonzero(present), (np.cumsum(present) - 1)[codes]


def _expand(values: list[str], take: np.ndarray) -> pd.Categorical:
    """A categorical of values[take] built from codes (no per-row string hashing)."""
    cats = sorted(set(values))
    pos = {v: i for i, v in enumerate(cats)}
    code = np.array([pos[v] for v in values], dtype=code_dtype(len(cats)))  # the codes' final type: taken once
    return pd.Categorical.from_codes(code[take] if len(take) else np.zeros(0, dtype=np.int32), dtype=pd.CategoricalDtype(cats), validate=False)
