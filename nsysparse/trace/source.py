"""Turn what the user passed into a readable SQLite export, or a clear one-line error.

Checks, in order: exists, is a file, not empty, is SQLite (not text, not a renamed report), not
truncated (the header's page count against the file size). `.nsys-rep`/`.qdrep` reports are exported
with `nsys export` when nsys is on PATH: beside the report (an existing export is reused only when it is
newer than the report, and never overwritten), or in the user cache, keyed on the report's resolved
path, size and mtime, when the report's folder is read-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

from nsysparse.errors import TraceError

SQLITE_MAGIC = b"SQLite format 3\x00"
REPORT_SUFFIXES = (".nsys-rep", ".qdrep")
EXPORT_TIMEOUT_S = 1800.0  # a hung nsys must not hang us (NSYSPARSE_EXPORT_TIMEOUT overrides)
_EXPORT_HINT = "export it first: nsys export --type sqlite -o {out} {rep}"


def resolve_input(path: str | os.PathLike[str]) -> Path:
    """Return the SQLite file to read for `path` (exporting a report if needed)."""
    p = Path(path)
    try:
        st = os.stat(p)  # never open() first: opening a FIFO blocks until someone writes to it
    except FileNotFoundError:
        raise TraceError(f"{p}: no such file", "Check the path") from None
    except OSError as err:
        raise TraceError(f"{p}: cannot be opened ({err.strerror})", "Check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise TraceError(f"{p}: is a directory, not a trace file", "Pass the .sqlite export (or .nsys-rep report) itself")
    if not stat.S_ISREG(st.st_mode):
        raise TraceError(f"{p}: is {_kind_of(st.st_mode)}, not a regular file", "Pass the .sqlite export (or .nsys-rep report) itself, not a pipe or device")
    if p.suffix.lower() in REPORT_SUFFIXES:
        return export_report(p)
    check_sqlite_file(p)
    return p


def _kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _run(cmd: list[str], limit: float) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in its own process group; on a timeout or an interrupt the whole group is killed (nsys
    starts helpers that would otherwise keep running, and keep our pipes open)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except BaseException:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def export_timeout_s() -> float:
    """How long `nsys export` may run: $NSYSPARSE_EXPORT_TIMEOUT seconds, 1800 by default."""
    raw = os.environ.get("NSYSPARSE_EXPORT_TIMEOUT", "")
    try:
        value = float(raw) if raw else EXPORT_TIMEOUT_S
    except ValueError:
        value = EXPORT_TIMEOUT_S
    return value if value > 0 else EXPORT_TIMEOUT_S


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(b >= 9 for b in head)


def check_sqlite_file(p: Path) -> None:
    """Raise TraceError unless `p` starts like a complete SQLite database."""
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(100)
    except OSError as err:
        raise TraceError(f"{p}: cannot read ({err.strerror})", "Check the file permissions") from None
    if size == 0:
        raise TraceError(f"{p}: is an empty file", "Re-export the trace with: nsys export --type sqlite -o OUT.sqlite REPORT.nsys-rep")
    if not head.startswith(SQLITE_MAGIC):
        if _looks_like_text(head):
            raise TraceError(f"{p}: is a text file, not an Nsight Systems SQLite export", "Pass the .sqlite file written by nsys export")
        raise TraceError(
            f"{p}: is not an SQLite database (it may be an .nsys-rep report under another name)",
            f"If it is a report, give it the .nsys-rep suffix and export it: nsys export --type sqlite -o {p.stem}.sqlite {p.stem}.nsys-rep",
        )
    if size < 100:
        raise TraceError(f"{p}: is truncated ({size} bytes, shorter than an SQLite header)", "Copy or export the file again")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    page_count = int.from_bytes(head[28:32], "big")
    header_count_valid = head[24:28] == head[92:96] and page_count > 0
    if page_size and size % page_size:
        raise TraceError(f"{p}: is truncated ({size} bytes is not a whole number of {page_size}-byte pages)", "Copy or export the file again")
    if header_count_valid and size < page_size * page_count:
        raise TraceError(
            f"{p}: is truncated ({size} bytes, the header says {page_size * page_count})",
            "Copy or export the file again",
        )


def user_cache_root() -> Path:
    """nsysparse's folder in the user's cache: $XDG_CACHE_HOME (or ~/.cache)/nsysparse; without a home, a per-user
    folder in the temporary directory."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):  # no HOME and no passwd entry
            base = os.path.join(tempfile.gettempdir(), f"nsysparse-{os.getuid()}")
    return Path(base) / "nsysparse"


def cache_dir() -> Path:
    """Where exports of reports in read-only folders go: <user cache>/nsysparse/exports."""
    return user_cache_root() / "exports"


def cache_key(rep: Path) -> str:
    """The report's identity: resolved path, size and mtime (ns). Another file, or this one changed, is another key."""
    st = rep.stat()
    text = f"{rep.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def export_report(rep: Path) -> Path:
    """Export an .nsys-rep/.qdrep to SQLite beside it, or, when that folder is read-only, to the user
    cache under a key of the report's resolved path, size and mtime. The export is written under a
    temporary name and renamed only once nsys succeeded and the file checks out, so a failed export
    leaves nothing that a later run would reuse."""
    if os.access(rep.parent, os.W_OK):
        target = rep.with_suffix(".sqlite")
        if target.exists():
            if target.stat().st_mtime >= rep.stat().st_mtime:
                check_sqlite_file(target)
                return target
            raise TraceError(
                f"{target}: an older export of {rep.name} is already there and nsysparse will not overwrite it",
                f"Delete it, or re-export: nsys export --type sqlite --force-overwrite true -o {target} {rep}",
            )
    else:
        folder = cache_dir()
        target = folder / f"{rep.stem}-{cache_key(rep)[:32]}.sqlite"
        if target.exists():
            check_sqlite_file(target)
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TraceError(
                f"{rep}: its folder is read-only and the export cache {folder} cannot be created ({err.strerror})",
                _EXPORT_HINT.format(out="OUT.sqlite", rep=rep),
            ) from None
    nsys = shutil.which("nsys")
    if nsys is None:
        raise TraceError(
            f"{rep}: is an Nsight Systems report; nsysparse reads its SQLite export and no nsys is on PATH",
            _EXPORT_HINT.format(out=target, rep=rep),
        )
    partial = target.with_name(f".{target.stem}.{os.getpid()}.partial.sqlite")
    partial.unlink(missing_ok=True)
    cmd = [nsys, "export", "--type", "sqlite", "-o", str(partial), str(rep)]
    limit = export_timeout_s()
    try:
        try:
            proc = _run(cmd, limit)
        except subprocess.TimeoutExpired:
            raise TraceError(
                f"{rep}: nsys export did not finish within {limit:g} s and was stopped",
                "Run the export by hand (" + " ".join([*cmd[1:5], str(target), str(rep)]) + "), or raise NSYSPARSE_EXPORT_TIMEOUT",
            ) from None
        if proc.returncode != 0 or not partial.exists():
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            shown = "".join(ch for ch in last[0] if ch.isprintable())[:200]
            raise TraceError(
                f"{rep}: nsys export failed (exit {proc.returncode}: {shown})",
                "Run the export by hand: " + " ".join([*cmd[1:5], str(target), str(rep)]),
            )
        try:
            check_sqlite_file(partial)
        except TraceError as err:
            raise TraceError(f"{rep}: nsys export wrote an unusable file ({err.message.split(': ', 1)[-1]})", "Run the export by hand") from None
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
