"""The rule engine: kernel classes and layer templates loaded from rule packs (top-level `rules/`)."""

from nsysparse.rules.classify import classify_names
from nsysparse.rules.load import load_rules
from nsysparse.rules.model import ClassRule, RuleSet, Slot, Template

__all__ = ["ClassRule", "RuleSet", "Slot", "Template", "classify_names", "load_rules"]
