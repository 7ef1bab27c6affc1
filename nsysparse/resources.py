"""Where bundled data lives: `nsysparse/_data/<name>` in an installed wheel, the repository's top-level
folder (`rules/`, `reports/templates/`) in a source checkout or editable install."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_SOURCE = {"rules": _PACKAGE.parent / "rules", "templates": _PACKAGE.parent / "reports" / "templates"}


def data_dir(name: str) -> Path:
    packaged = _PACKAGE / "_data" / name
    if packaged.is_dir():
        return packaged
    return _SOURCE[name]
