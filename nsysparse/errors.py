"""The one error family of nsysparse.

The library raises these; the CLI turns them into a one-line message and an exit code in one place
(`nsysparse.cli.app.NsysparseGroup`). Exit codes: 0 ok, 1 error, 2 usage, 3 regression found, 130 interrupted.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REGRESSION = 3


class NsysparseError(Exception):
    """Base class: a problem the user can act on. `str(err)` is the whole one-line message."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message.rstrip(". ")
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message
        if self.hint:
            hint = self.hint.rstrip(".")
            text = f"{text}. {hint[:1].upper()}{hint[1:]}"  # a new sentence starts with a capital
        return " ".join(text.split()) + ("" if text.endswith((".", "?", "!")) else ".")


class TraceError(NsysparseError):
    """The input file is missing, unreadable, not an nsys export, or damaged."""


class MissingDataError(TraceError):
    """The export lacks a table or column an analysis needs (the capture did not record it)."""


class RuleError(NsysparseError):
    """A rule file is malformed (bad TOML, unknown key, invalid regex, duplicate id)."""


class ConfigError(NsysparseError):
    """A model config, prediction file or option value cannot be used."""


class UsageError(NsysparseError):
    """Options that do not fit together."""

    exit_code = EXIT_USAGE


class RegressionFound(NsysparseError):
    """A CI diff found a regression beyond the threshold (exit code 3)."""

    exit_code = EXIT_REGRESSION


_QUOTED = re.compile(r"""'[^']*'|"[^"]*"|with text .*""")


def redact(message: str) -> str:
    """A library's error message without the text it quotes (sqlite3 and DuckDB quote the offending
    value, which may be a trace's environment variable or user name): quoted parts become '…', and
    anything after a stray quote is cut."""
    text = _QUOTED.sub("'…'", message.strip().splitlines()[0] if message.strip() else "")
    for q in ("'", '"'):
        if text.count(q) % 2:
            text = text[: text.rfind(q)] + "…"
    return text[:200]


def reraise_interrupt(err: BaseException) -> None:
    """DuckDB turns Ctrl-C into its own InterruptException (an Exception): re-raise it as the
    KeyboardInterrupt it is, so that no caller mistakes it for a reason to retry another way."""
    if type(err).__name__ == "InterruptException":
        raise KeyboardInterrupt from None
