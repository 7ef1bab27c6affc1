"""Where outputs are written: never over an input of the same command, and atomically.

Every file a command reads (a trace, its `.nsys-rep` and the export made from it, a baseline, a
prediction file, a model manifest, a measured table) is recorded with `note_input`. Every output goes
through `write_text` / `write_with`, which refuse a path that is the same file (same device and
inode, so symlinks and hard links count too) as a recorded input, and which write to a temporary file
in the output's folder that replaces the target only once it is complete: a failed or interrupted write
leaves no partial file and the old content, if any, untouched.

The CLI clears the record at the start of each command (`reset_inputs`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from nsysparse.errors import NsysparseError


class OutputError(NsysparseError):
    """An output path that cannot be written (it is an input of the command, or the folder refuses it)."""


_inputs: dict[tuple[int, int], str] = {}


def _key(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def note_input(path: str | os.PathLike[str]) -> None:
    """Record a file this command reads (missing files are ignored)."""
    key = _key(path)
    if key is not None:
        _inputs.setdefault(key, str(path))


def reset_inputs() -> None:
    _inputs.clear()


def check_output(path: str | os.PathLike[str]) -> None:
    """Raise OutputError when `path` is the same file as an input of this command."""
    key = _key(path)
    if key is not None and key in _inputs:
        same = _inputs[key]
        which = "" if os.path.abspath(same) == os.path.abspath(path) else f" (the same file as {same})"
        raise OutputError(
            f"{path}: is an input of this command{which}; nsysparse never overwrites its input",
            "Choose another -o/--output path",
        )


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], object]) -> None:
    """Check `path`, let `writer` fill a temporary file beside it, then move it into place."""
    target = Path(path)
    check_output(target)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".partial")
    except OSError as err:
        raise OutputError(f"{target}: cannot be written ({err.strerror})", "Check that the folder exists and is writable") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{target}: cannot be written ({err.strerror or err})", "Check the folder and the free space") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# C0 controls (but tab and newline), DEL and C1 controls: escape sequences in a kernel or NVTX name
# would otherwise drive the user's terminal (colours, titles, cursor moves, OSC 52 clipboard writes).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LAYOUT = re.compile("[\t\n]")


def terminal_text(text: str, keep_layout: bool = True) -> str:
    """`text` without control characters; `keep_layout=False` also turns tabs and newlines into spaces
    (for one table cell or one line)."""
    text = _CONTROL.sub("", text)
    return text if keep_layout else _LAYOUT.sub(" ", text)
