"""Kernel names -> class, rule id and class-level op. Work is per unique name pair, not per kernel."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nsysparse.rules.model import RuleSet


def classify_names(rules: RuleSet, short: pd.Series, name: pd.Series) -> pd.DataFrame:
    """For parallel short/demangled name columns: class, rule_id, class_op ("" when unclassified)."""
    pairs = pd.DataFrame({"short": short.astype(object).fillna("").astype(str), "name": name.astype(object).fillna("").astype(str)})
    codes, uniques = pd.MultiIndex.from_frame(pairs).factorize()
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
    take = np.asarray(codes)
    return pd.DataFrame(
        {
            "kernel_class": pd.Categorical(np.array(cls, dtype=object)[take]) if len(take) else pd.Categorical([]),
            "rule_id": pd.Categorical(np.array(rid, dtype=object)[take]) if len(take) else pd.Categorical([]),
            "class_op": pd.Categorical(np.array(op, dtype=object)[take]) if len(take) else pd.Categorical([]),
        },
        index=short.index,
    )
