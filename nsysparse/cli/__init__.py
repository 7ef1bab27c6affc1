"""Command-line adapters: options -> library call -> rendering. No analysis logic lives here.

`main` is the entry point. It imports the group itself (each command's module, and with it pandas and
DuckDB, is imported when that command is looked up: `nsysparse --help` imports none of them), so that a
Ctrl-C at any moment, start-up included, ends in one line and exit code 130, and it checks that
standard output could be written (`info T > /dev/full` is one error line and exit code 1). It sets the
allocator for arrays of millions of rows first (`nsysparse.allocator`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from nsysparse import allocator
from nsysparse.outputs import quiet_stdout

if TYPE_CHECKING:
    from nsysparse.cli.app import cli

EXIT_INTERRUPTED = 130


def _commands() -> Any:
    from nsysparse.cli.app import cli  # the commands' modules are imported when a command is looked up

    return cli


def __getattr__(name: str) -> Any:
    if name == "cli":
        return _commands()
    raise AttributeError(f"module 'nsysparse.cli' has no attribute {name!r}")


def main() -> None:
    code: Any = 0
    allocator.tune()  # this process is ours: one heap, freed memory kept for the next array (see `allocator`)
    try:
        group = _commands()
        group(prog_name="nsysparse")
    except SystemExit as done:
        code = done.code
    except KeyboardInterrupt:  # during start-up (the commands handle their own)
        quiet_stdout()
        sys.stderr.write("Interrupted.\n")
        code = EXIT_INTERRUPTED
    try:
        sys.stdout.flush()
    except OSError as err:
        quiet_stdout()
        sys.stderr.write(f"Error: standard output cannot be written ({err.strerror or err}).\n")
        code = code or 1
    except KeyboardInterrupt:
        quiet_stdout()
        code = EXIT_INTERRUPTED
    sys.exit(code)


__all__ = ["cli", "main"]
