"""Load and validate rule packs (TOML, schema_version 1; format in rules/README.md).

Every problem is a RuleError naming the file, the line and the rule id: unknown keys, bad regexes,
unknown classes or ops, duplicate ids, wrong schema version.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nsysparse.errors import RuleError
from nsysparse.resources import data_dir
from nsysparse.rules.model import SCHEMA_VERSION, TEMPLATE_ROLES, ClassRule, RuleSet, Slot, Template, normalise
from nsysparse.rules.pattern import PATTERN_TOKEN, compile_pattern

VOCABULARY = "vocabulary.toml"
_PACK_KEYS = {"schema_version", "pack", "title", "order", "applies_to", "classes", "templates", "blocks"}
_CLASS_KEYS = {"id", "class", "short", "name", "priority", "op", "examples", "note"}
_TEMPLATE_KEYS = {"id", "role", "kind", "anchor", "slots", "description", "to_end"}
_SLOT_KEYS = {"op", "match", "optional"}


def default_rule_dir() -> Path:
    return data_dir("rules")


def _line_of(text: str, needle: str) -> int | None:
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    return None


def _entry_id(path: Path, text: str, spec: dict[str, Any], section: str, keys: frozenset[str] | set[str], seen_ids: set[str]) -> str:
    """The entry's id, checked: present, unique across the loaded packs, and no unknown keys."""
    rid = spec.get("id")
    if not isinstance(rid, str) or not rid:
        raise RuleError(f"{path}: every [[{section}]] entry needs an id")
    if rid in seen_ids:
        raise RuleError(f"{_where(path, text, rid)}: duplicate rule id")
    seen_ids.add(rid)
    extra = set(spec) - keys
    if extra:
        raise RuleError(f"{_where(path, text, rid)}: unknown key(s) {sorted(extra)}")
    return rid


def _where(path: Path, text: str, rid: str | None, field: str | None = None) -> str:
    """`file:line (id)`, the line being the rule's `field = ...` line when given, else its id line."""
    if rid is None:
        return str(path)
    line = _line_of(text, f'"{rid}"')
    if line and field:
        for i, ln in enumerate(text.splitlines()[line - 1 :], line):
            if ln.strip().startswith(f"{field} ") or ln.strip().startswith(f"{field}="):
                line = i
                break
            if i > line and ln.strip().startswith("id "):
                break
    return f"{path}:{line} ({rid})" if line else f"{path} ({rid})"


def _read(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as err:
        raise RuleError(f"{path}: invalid TOML ({err})") from None
    except OSError as err:
        raise RuleError(f"{path}: cannot read ({err.strerror})") from None


def load_vocabulary(path: Path) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    data, _ = _read(path)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise RuleError(f"{path}: schema_version must be {SCHEMA_VERSION}")
    ops = {str(k): str(v) for k, v in data.get("ops", {}).items()}
    class_ops: dict[str, str] = {}
    for cls, spec in data.get("classes", {}).items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", cls):
            raise RuleError(f"{path}: class name {cls!r} must be lower-case letters, digits and _")
        class_ops[cls] = str(spec.get("op", cls)) if isinstance(spec, dict) else str(spec)
    aliases = {}
    for alias, op in data.get("aliases", {}).items():
        if op not in ops:
            raise RuleError(f"{path}: alias {alias!r} points to {op!r}, which is not in [ops]")
        aliases[normalise(alias)] = op
    return ops, class_ops, aliases


def _compile(path: Path, text: str, rid: str, field: str, value: Any) -> re.Pattern[str] | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise RuleError(f"{_where(path, text, rid)}: {field} must be a non-empty regex string")
    try:
        return re.compile(value)
    except re.error as err:
        raise RuleError(f"{_where(path, text, rid, field)}: invalid {field} regex {value!r} ({err})") from None


def _slots(
    path: Path, text: str, tid: str, items: list[Any], blocks: dict[str, list[Any]], ops: dict[str, str], classes: set[str], depth: int = 0
) -> list[Slot]:
    out: list[Slot] = []
    for item in items:
        if isinstance(item, str) and item.startswith("@"):
            name = item[1:]
            if name not in blocks or depth > 4:
                raise RuleError(f"{_where(path, text, tid)}: unknown block {item!r}")
            out += _slots(path, text, tid, blocks[name], blocks, ops, classes, depth + 1)
            continue
        if not isinstance(item, dict):
            raise RuleError(f'{_where(path, text, tid)}: a slot must be {{op = ..., match = ...}} or "@block"')
        extra = set(item) - _SLOT_KEYS
        if extra:
            raise RuleError(f"{_where(path, text, tid)}: unknown slot key(s) {sorted(extra)}")
        op, pat = item.get("op"), item.get("match")
        if op not in ops:
            raise RuleError(f"{_where(path, text, tid)}: slot op {op!r} is not in the vocabulary")
        if not isinstance(pat, str) or not pat.strip():
            raise RuleError(f"{_where(path, text, tid)}: slot {op!r} needs a match pattern")
        for tok in PATTERN_TOKEN.findall(pat):
            if tok[0].isalpha() and tok not in classes:
                raise RuleError(f"{_where(path, text, tid)}: slot {op!r} uses unknown class {tok!r}")
        try:
            compile_pattern(pat)
        except (re.error, ValueError) as err:
            raise RuleError(f"{_where(path, text, tid)}: slot {op!r} pattern {pat!r} is invalid ({err})") from None
        out.append(Slot(op=op, pattern=pat, optional=bool(item.get("optional", False))))
    return out


def load_pack(path: Path, rs: RuleSet, seen_ids: set[str]) -> None:
    data, text = _read(path)
    extra = set(data) - _PACK_KEYS
    if extra:
        raise RuleError(f"{path}: unknown top-level key(s) {sorted(extra)}")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise RuleError(f"{path}: schema_version must be {SCHEMA_VERSION} (found {data.get('schema_version')!r})")
    pack = data.get("pack")
    if not isinstance(pack, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", pack):
        raise RuleError(f"{path}: pack must be a lower-case name")
    if pack in rs.packs:
        raise RuleError(f"{path}: pack {pack!r} is already defined in {rs.packs[pack]}")
    rs.packs[pack] = str(path)
    classes = set(rs.class_ops)
    for spec in data.get("classes", []):
        rid = _entry_id(path, text, spec, "classes", _CLASS_KEYS, seen_ids)
        cls = spec.get("class")
        if cls not in classes:
            raise RuleError(f"{_where(path, text, rid)}: class {cls!r} is not declared in {VOCABULARY}")
        if spec.get("short") is None and spec.get("name") is None:
            raise RuleError(f"{_where(path, text, rid)}: needs a short and/or name regex")
        op = spec.get("op")
        if op is not None and op not in rs.ops:
            raise RuleError(f"{_where(path, text, rid)}: op {op!r} is not in the vocabulary")
        rs.classes.append(
            ClassRule(
                id=rid,
                cls=cls,
                pack=pack,
                short=_compile(path, text, rid, "short", spec.get("short")),
                name=_compile(path, text, rid, "name", spec.get("name")),
                priority=int(spec.get("priority", 50)),
                op=op,
                examples=tuple(spec.get("examples", ())),
            )
        )
    blocks = data.get("blocks", {})
    for spec in data.get("templates", []):
        tid = _entry_id(path, text, spec, "templates", _TEMPLATE_KEYS, seen_ids)
        role = spec.get("role", "layer")
        if role not in TEMPLATE_ROLES:
            raise RuleError(f"{_where(path, text, tid)}: role must be one of {', '.join(TEMPLATE_ROLES)}")
        kind = spec.get("kind", "other" if role != "layer" else None)
        if role == "layer" and kind not in ("dense", "moe", "mtp"):
            raise RuleError(f"{_where(path, text, tid)}: a layer template needs kind dense, moe or mtp")
        anchor = spec.get("anchor")
        if anchor is not None and anchor not in classes:
            raise RuleError(f"{_where(path, text, tid)}: anchor class {anchor!r} is not declared")
        slots = _slots(path, text, tid, spec.get("slots", []), blocks, rs.ops, classes)
        if not slots:
            raise RuleError(f"{_where(path, text, tid)}: a template needs slots")
        rs.templates.append(
            Template(
                id=tid,
                pack=pack,
                role=role,
                kind=str(kind),
                slots=tuple(slots),
                anchor=anchor,
                description=str(spec.get("description", "")),
                to_end=bool(spec.get("to_end", False)),
            )
        )


def pack_files(rule_dir: Path) -> list[Path]:
    files = sorted(p for p in rule_dir.glob("*.toml") if p.name != VOCABULARY)
    return files


def load_rules(paths: Iterable[str | Path] | None = None) -> RuleSet:
    """Load the vocabulary and rule packs. `paths` are pack files or folders; default: the bundled rules."""
    items = [Path(p) for p in paths] if paths else [default_rule_dir()]
    files: list[Path] = []
    vocab: Path | None = None
    for p in items:
        if p.is_dir():
            files += pack_files(p)
            if (p / VOCABULARY).exists() and vocab is None:
                vocab = p / VOCABULARY
        elif p.is_file():
            if p.name == VOCABULARY:
                vocab = p
            else:
                files.append(p)
        else:
            raise RuleError(f"{p}: no such rule file or folder")
    vocab = vocab or default_rule_dir() / VOCABULARY
    ops, class_ops, aliases = load_vocabulary(vocab)
    rs = RuleSet(class_ops=class_ops, ops=ops, aliases=aliases)
    # pack order: the `order` key, then file name
    ordered = sorted(files, key=lambda f: (int(_read(f)[0].get("order", 50)), f.name))
    seen: set[str] = set()
    digest = hashlib.sha256(vocab.read_bytes())
    for f in ordered:
        load_pack(f, rs, seen)
        digest.update(f.read_bytes())
    rs.classes.sort(key=lambda r: -r.priority)  # stable: equal priority keeps pack/file order
    rs.digest = digest.hexdigest()[:16]
    return rs
