"""Test rule packs against lists of real kernel names: every name gets its expected class, every class
rule fires on at least one real name (no dead rules), every rule's examples classify as the rule says.

Kernel-name lists are TSV files `<pack>.tsv`: expected class, short name, demangled name, source.
Lines starting with # are comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from nsysparse.errors import RuleError
from nsysparse.rules.classify import classify_names
from nsysparse.rules.model import RuleSet


@dataclass
class PackTest:
    pack: str
    rules: int
    templates: int
    names: int
    failures: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)


def read_names(path: Path) -> pd.DataFrame:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 3:
            raise RuleError(f"{path}:{n}: expected class<TAB>short<TAB>demangled[<TAB>source]")
        rows.append({"expected": parts[0].strip(), "short": parts[1], "name": parts[2], "line": n})
    return pd.DataFrame(rows, columns=["expected", "short", "name", "line"])


def test_packs(rules: RuleSet, names_dir: Path) -> list[PackTest]:
    lists = {p.stem: read_names(p) for p in sorted(names_dir.glob("*.tsv"))}
    everything = pd.concat(list(lists.values()), ignore_index=True) if lists else pd.DataFrame(columns=["short", "name"])
    results = []
    for pack in rules.packs:
        res = PackTest(pack, sum(r.pack == pack for r in rules.classes), sum(t.pack == pack for t in rules.templates), 0)
        names = lists.get(pack)
        if names is None:
            res.failures.append(f"no kernel-name list {pack}.tsv in {names_dir}")
        else:
            res.names = len(names)
            got = classify_names(rules, names["short"], names["name"])
            for row, cls, rid in zip(names.itertuples(), got["kernel_class"].astype(str), got["rule_id"].astype(str)):
                if row.expected not in rules.class_ops and row.expected != "":
                    res.failures.append(f"{pack}.tsv:{row.line}: unknown class {row.expected!r}")
                elif cls != row.expected:
                    res.failures.append(
                        f"{pack}.tsv:{row.line}: {row.short!r} is {cls or 'unclassified'} (rule {rid or '-'}), expected {row.expected or 'unclassified'}"
                    )
        for r in (r for r in rules.classes if r.pack == pack):
            if not any(r.matches(s, n) for s, n in zip(everything["short"], everything["name"])):
                res.dead.append(r.id)
            for ex in r.examples:
                got = classify_names(rules, pd.Series([ex]), pd.Series([ex]))
                if str(got["kernel_class"].iloc[0]) != r.cls:
                    res.failures.append(f"{r.id}: example {ex[:60]!r} classifies as {got['kernel_class'].iloc[0] or 'unclassified'}")
        results.append(res)
    return results
