"""Slot patterns: regexes over kernel classes, compiled to regexes over one character per kernel.

A pattern is written with class names and regex operators: `gemm splitk?`, `(ew|copy)+`, `ew{2}`,
`.` (any kernel, unclassified included). Each kernel of a sequence becomes one character (its class
code), so a whole layer is a short string and a template is an ordinary regex with one named group per
slot: matching is fast, exact, and maps spans straight back to kernel indices.
"""

from __future__ import annotations

import re
import string

PATTERN_TOKEN = re.compile(r"[a-z][a-z0-9_]*|\{\d+(?:,\d*)?\}|[()|?*+.]")
UNKNOWN_CODE = "#"
_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "!$%&',-/:;<=>@[]^_`~"


def class_codes(classes: list[str]) -> dict[str, str]:
    """One character per class, stable for a given class list."""
    names = sorted(classes)
    if len(names) > len(_ALPHABET):
        raise ValueError(f"too many kernel classes ({len(names)} > {len(_ALPHABET)})")
    return {c: _ALPHABET[i] for i, c in enumerate(names)}


def compile_pattern(pattern: str, codes: dict[str, str] | None = None) -> str:
    """Translate a class pattern to a regex over class codes (without compiling the whole template)."""
    tokens = PATTERN_TOKEN.findall(pattern)
    if "".join(tokens) != re.sub(r"\s+", "", pattern):
        raise ValueError("only class names, ( ) | ? * + . and {m,n} are allowed")
    out = []
    for tok in tokens:
        if tok[0].isalpha():
            out.append(re.escape(codes[tok]) if codes is not None else "x")
        elif tok == "(":
            out.append("(?:")
        else:
            out.append(tok)
    regex = "".join(out)
    re.compile(regex)
    return regex
