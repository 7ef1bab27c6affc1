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
import sys
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
    try:
        special = target.exists() and not target.is_file() and not target.is_dir()
    except OSError as err:  # a name too long, a loop of links
        raise OutputError(f"{target}: cannot be written ({err.strerror})", "Choose another -o/--output path") from None
    if special:  # /dev/null, /dev/full, a FIFO, /proc/...: written in place, never replaced by a file
        _write_special(target, writer)
        return
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".partial")
    except OSError as err:
        if not folder.is_dir():
            raise OutputError(f"{target}: cannot be written: the folder {folder} does not exist", "Create it, or choose another -o/--output path") from None
        raise OutputError(f"{target}: cannot be written: the folder {folder} accepts no new file ({err.strerror})", "Choose a writable folder") from None
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


def _write_special(target: Path, writer: Callable[[Path], object]) -> None:
    """A device or pipe named as the output: the writer fills a private temporary file, which is then
    copied into the target (so a failure, such as ENOSPC from /dev/full, is one error and no partial
    regular file is ever left behind)."""
    with tempfile.TemporaryDirectory(prefix="nsysparse-") as tmpdir:
        tmp = Path(tmpdir) / "out"
        writer(tmp)
        try:
            with open(tmp, "rb") as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        except OSError as err:
            raise OutputError(f"{target}: cannot be written ({err.strerror or err})", "Choose another -o/--output path") from None


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# C0 controls (but tab and newline), DEL and C1 controls: escape sequences in a kernel or NVTX name
# would otherwise drive the user's terminal (colours, titles, cursor moves, OSC 52 clipboard writes).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LAYOUT = re.compile("[\t\n]")


def terminal_text(text: str, keep_layout: bool = True) -> str:
    """`text` without control characters; `keep_layout=False` also turns tabs and newlines into spaces
    (for one table cell or one line)."""
    text = _CONTROL.sub("", _valid_unicode(text))
    return text if keep_layout else _LAYOUT.sub(" ", text)


def _valid_unicode(text: str) -> str:
    """A non-UTF-8 file name reaches us with surrogate escapes, which no terminal can print: U+FFFD instead."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's own final flush cannot fail a second time (after an output
    error or an interrupt has been reported on stderr)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
