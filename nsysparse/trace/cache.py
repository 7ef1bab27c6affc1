"""A columnar cache of the canonical frames, so that a second command on the same trace skips reading it.

Where: the user's cache directory (`$XDG_CACHE_HOME`, else `~/.cache`)/nsysparse/frames/KEY/, never beside
the input (which may be read-only; nothing is ever written there). KEY is the export's resolved path, size
and modification time (`source.cache_key`) and the cache format: another file, or this one touched, is
another key, and an entry nobody uses any more is evicted by the size cap.

What: one file per frame (kernels with a given column set, CUDA API calls, NVTX, memcpy, memset, the
kernels' launch columns, and the frames of results kept by `Trace.keep_result`, such as the mapping and the `ops`, `layers` and `gaps` results)
holding its columns' raw arrays one after the other (each 64-byte aligned; numbers in their own dtype,
categorical and text columns as codes in the smallest type that holds them), and one JSON file beside it naming its columns,
their dtypes and offsets, the row count, the categories of its categorical and text columns, a CRC-32 of
the data file and the notes its loading produced (so that a cached frame tells the user the same things).
Reading is one copy-on-write mapping and a view per column: no decoding and no copy, which is what makes a second command cheap
(a Parquet file read through DuckDB cost about 1.5 s at 2.3 M kernels, this a few tenths). Both files are
written under temporary names and renamed, the JSON last: an entry is complete when its JSON exists. An
entry that does not read back exactly as its JSON says (truncated, corrupt, another format, codes outside
its categories) is deleted and rebuilt. Small JSON records (`*.record.json`: the `info` summary, table
row counts, a kept result's index) sit beside them.

Options: `NSYSPARSE_NO_CACHE=1` (the CLI's `--no-cache`) neither reads nor writes anything;
`NSYSPARSE_CACHE_MAX_MB` caps the cache's size (default 4096): after each write, the least recently used
traces' entries are removed until the cache fits, the current trace's last. Traces smaller than
`NSYSPARSE_CACHE_MIN_MB` (default 8) are not cached: reading them costs less than a cache would save.

Writes happen on a background thread (file writes and the checksum release the GIL) while the analysis goes on; closing
the trace waits for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import shutil
import threading
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nsysparse.errors import reraise_interrupt
from nsysparse.trace.source import cache_key, user_cache_root

log = logging.getLogger("nsysparse.trace")

FORMAT = 3
"""Bumped whenever what a frame holds changes: older entries then have another key and are never read."""
SUFFIX = ".cols"
ALIGN = 64
"""Each column starts at a multiple of this many bytes of its file."""
DEFAULT_MAX_MB = 4096.0  # (an entry takes about twice its trace's size: a 482 MB trace, 1.0 GB)
DEFAULT_MIN_MB = 8.0
"""Smaller traces are read directly (sqlite3 reads them in well under a second): NSYSPARSE_CACHE_MIN_MB."""


def enabled() -> bool:
    """Whether the cache is in use ($NSYSPARSE_NO_CACHE unset, empty or 0)."""
    return os.environ.get("NSYSPARSE_NO_CACHE", "").strip().lower() in ("", "0", "false", "no")


def root() -> Path:
    """The cache's folder: $XDG_CACHE_HOME (or ~/.cache)/nsysparse/frames."""
    return user_cache_root() / "frames"


def _megabytes(name: str, default: float) -> int:
    raw = os.environ.get(name, "")
    try:
        mb = float(raw) if raw else default
    except ValueError:
        mb = default
    return int(max(mb, 0.0) * 1e6)


def max_bytes() -> int:
    """The cache's size cap in bytes ($NSYSPARSE_CACHE_MAX_MB, 4096 by default)."""
    return _megabytes("NSYSPARSE_CACHE_MAX_MB", DEFAULT_MAX_MB)


def min_bytes() -> int:
    """Traces smaller than this are not cached ($NSYSPARSE_CACHE_MIN_MB, 8 by default)."""
    return _megabytes("NSYSPARSE_CACHE_MIN_MB", DEFAULT_MIN_MB)


def entry_key(path: Path) -> str:
    from nsysparse import __version__

    return hashlib.sha256(f"{cache_key(path)}\0{FORMAT}\0{__version__}".encode()).hexdigest()[:40]


def frame_name(kind: str, columns: tuple[str, ...]) -> str:
    """The file stem of a frame: its kind and a digest of its column set."""
    return f"{kind}-{hashlib.sha1(','.join(columns).encode()).hexdigest()[:10]}"


class FrameCache:
    """The cache entry of one trace file. Every failure of the cache only disables it (logged at debug
    level): the trace is then read as if there were no cache."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dir: Path | None = None
        self._pending: list[threading.Thread] = []
        if not enabled():
            return
        try:
            if path.stat().st_size < min_bytes():
                return
            folder = root() / entry_key(path)
            if _beside(folder, path):
                return
        except OSError as err:
            log.debug("no frame cache (%s)", err)
            return
        self.dir = folder

    @property
    def active(self) -> bool:
        return self.dir is not None

    # -- reading ------------------------------------------------------------------------------------
    def get(self, kind: str, columns: tuple[str, ...]) -> tuple[pd.DataFrame, list[str]] | None:
        """The cached frame of `kind` holding at least `columns` (with every column it was stored with), and
        the notes its loading produced; None when there is none or it does not read back cleanly."""
        if self.dir is None or not self.dir.is_dir():
            return None
        try:
            meta = self._find(kind, columns)
        except OSError as err:  # the entry evicted meanwhile (another write over the size cap)
            log.debug("frame cache entry unreadable (%s)", err)
            return None
        if meta is None:
            return None
        stem, info = meta
        try:
            frame = self._read(stem, info)
        except Exception as err:  # a damaged entry: forget it, the caller rebuilds it from the trace
            reraise_interrupt(err)
            log.debug("frame cache entry %s unreadable (%s); rebuilding it", stem, err)
            self._drop(stem)
            return None
        self._touch()
        return frame, [str(n) for n in info.get("notes", [])]

    def holds(self, kind: str, columns: tuple[str, ...]) -> bool:
        """Whether an entry of `kind` with at least `columns` is stored (its index read, not its data)."""
        if self.dir is None or not self.dir.is_dir():
            return False
        try:
            return self._find(kind, columns) is not None
        except OSError:
            return False

    def _find(self, kind: str, columns: tuple[str, ...]) -> tuple[str, dict[str, Any]] | None:
        assert self.dir is not None
        exact = frame_name(kind, columns)
        candidates = [exact] + sorted(p.stem for p in self.dir.glob(f"{kind}-*.json") if p.stem != exact)
        for stem in candidates:
            meta = self.dir / f"{stem}.json"
            try:
                info = json.loads(meta.read_text(encoding="utf-8"))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as err:
                log.debug("frame cache entry %s unreadable (%s); rebuilding it", stem, err)
                self._drop(stem)
                continue
            if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("kind") != kind:
                self._drop(stem)
                continue
            stored = info.get("columns", [])
            if isinstance(stored, list) and all(c in stored for c in columns):
                return stem, info
        return None

    def _read(self, stem: str, info: dict[str, Any]) -> pd.DataFrame:
        assert self.dir is not None
        file = self.dir / f"{stem}{SUFFIX}"
        size = int(info["bytes"])
        if file.stat().st_size != size:
            raise ValueError("size differs from its record")
        buf = _mapped(file, size)
        if zlib.crc32(_bytes(buf)) != int(info["crc32"]):
            raise ValueError("checksum differs from its record")
        types: dict[str, Any] = info["types"]
        layout: dict[str, Any] = info["layout"]
        stored = [str(c) for c in info["columns"]]
        rows = int(info["rows"])
        out: dict[str, Any] = {}
        for c in stored:
            dtype = np.dtype(layout[c]["dtype"])
            offset = int(layout[c]["offset"])
            if offset < 0 or offset + rows * dtype.itemsize > size:
                raise ValueError(f"column {c} lies outside the file")
            values = np.frombuffer(buf, dtype=dtype, count=rows, offset=offset)  # a view: no copy
            out[c] = _decode(c, values, types[c], rows)
        return pd.DataFrame(out, copy=False)

    def get_record(self, name: str) -> tuple[Any, list[str]] | None:
        """A small JSON record of this trace (e.g. the `info` summary) and the notes its making produced;
        None when there is none or it does not read back."""
        if self.dir is None:
            return None
        file = self.dir / f"{name}.record.json"
        try:
            info = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.debug("frame cache record %s unreadable (%s); rebuilding it", name, err)
            with contextlib.suppress(OSError):
                file.unlink()
            return None
        if not isinstance(info, dict) or info.get("format") != FORMAT or "data" not in info:
            return None
        self._touch()
        return info["data"], [str(n) for n in info.get("notes", [])]

    def put_record(self, name: str, data: Any, notes: list[str]) -> None:
        """Store a small JSON record (written at once, under a temporary name, then renamed)."""
        if self.dir is None:
            return
        try:
            text = json.dumps({"format": FORMAT, "data": data, "notes": list(notes)})
        except (TypeError, ValueError) as err:
            log.debug("frame cache record %s not stored (%s)", name, err)
            return
        tmp = self.dir / f".{name}.{os.getpid()}.{threading.get_ident()}.record.tmp"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.dir / f"{name}.record.json")
            self._touch()
            evict(max_bytes(), keep=self.dir)
        except OSError as err:
            log.debug("frame cache record %s not stored (%s)", name, err)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    # -- writing ------------------------------------------------------------------------------------
    def put(self, kind: str, columns: tuple[str, ...], frame: pd.DataFrame, notes: list[str]) -> bool:
        """Store `frame` (its columns are `columns`, in order) on a background thread. False (nothing stored)
        when a column is of a type the cache does not keep exactly (see `_encode`). Numeric columns are
        written from the frame's own arrays, without a copy: frames handed here (the loaded tables, kept
        results) are never changed in place, as everywhere in nsysparse (new columns, new frames)."""
        if self.dir is None:
            return False
        arrays: dict[str, np.ndarray] = {}
        types: dict[str, Any] = {}
        for c in columns:
            got = _encode(frame[c])
            if got is None:
                return False
            arrays[c], types[c] = got
        info = {"format": FORMAT, "kind": kind, "columns": list(columns), "rows": len(frame), "types": types, "notes": list(notes)}
        job = threading.Thread(target=self._write, args=(frame_name(kind, columns), arrays, info), daemon=False)
        self._pending.append(job)
        job.start()
        return True

    def _write(self, stem: str, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        assert self.dir is not None
        tmp_cols = self.dir / f".{stem}.{os.getpid()}.{threading.get_ident()}{SUFFIX}.tmp"
        tmp_js = self.dir / f".{stem}.{os.getpid()}.{threading.get_ident()}.json.tmp"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            layout: dict[str, dict[str, Any]] = {}
            crc, offset = 0, 0
            with open(tmp_cols, "wb") as fh:
                for c, values in arrays.items():
                    pad = -offset % ALIGN
                    if pad:
                        fh.write(bytes(pad))
                        crc = zlib.crc32(bytes(pad), crc)
                        offset += pad
                    data = _bytes(np.ascontiguousarray(values))
                    fh.write(data)
                    crc = zlib.crc32(data, crc)
                    layout[c] = {"dtype": values.dtype.str, "offset": offset}
                    offset += len(data)
            info |= {"bytes": offset, "crc32": crc, "layout": layout}
            os.replace(tmp_cols, self.dir / f"{stem}{SUFFIX}")
            tmp_js.write_text(json.dumps(info), encoding="utf-8")
            os.replace(tmp_js, self.dir / f"{stem}.json")
            self._touch()
            evict(max_bytes(), keep=self.dir)
        except Exception as err:  # a full disk, a read-only cache: the analysis goes on without it
            reraise_interrupt(err)
            log.debug("frame cache write of %s failed (%s)", stem, err)
        finally:
            for tmp in (tmp_cols, tmp_js):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def wait(self) -> None:
        """Wait for the background writes (called when the trace is closed)."""
        for job in self._pending:
            job.join()
        self._pending.clear()

    # -- housekeeping -------------------------------------------------------------------------------
    def _drop(self, stem: str) -> None:
        assert self.dir is not None
        for suffix in (".json", SUFFIX):
            with contextlib.suppress(OSError):
                (self.dir / f"{stem}{suffix}").unlink()

    def _touch(self) -> None:
        """Mark the entry as used now (its folder's mtime orders eviction)."""
        if self.dir is not None:
            with contextlib.suppress(OSError):
                os.utime(self.dir)


def _encode(s: pd.Series) -> tuple[np.ndarray, Any] | None:
    """A column as (array to store, its type record), or None when it cannot be restored exactly: numbers
    and booleans as they are; categoricals of text as int32 codes and their categories; text columns (the
    `str` dtype, or objects that are all text but for one kind of missing value) the same way."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = s.cat.categories
        if cats.dtype.kind not in "OU" and str(cats.dtype) not in ("str", "string"):
            return None  # only text categories are stored
        if not all(isinstance(v, str) for v in cats):
            return None
        record = {"dtype": str(cats.dtype), "categories": [str(v) for v in cats], "ordered": bool(s.cat.ordered)}
        return _narrow(np.asarray(s.cat.codes.to_numpy())), record
    if str(s.dtype) == "str" or s.dtype == object:
        codes, uniques = pd.factorize(s, sort=False, use_na_sentinel=True)
        if not all(isinstance(v, str) for v in uniques):
            return None
        missing: str | None = None
        if s.dtype == object:
            holes = s.to_numpy()[np.asarray(codes) < 0]
            kinds = {type(v) for v in holes}  # (object columns are the small frames': steps, layers)
            if kinds == {type(None)}:
                missing = "None"
            elif kinds == {float}:
                missing = "nan"
            elif kinds:
                return None
        elif pd.api.types.pandas_dtype("str") != s.dtype:
            return None  # a `str` dtype other than the default one
        return _narrow(np.asarray(codes)), {"text": str(s.dtype), "categories": [str(v) for v in uniques], "missing": missing}
    v = s.to_numpy()
    if v.dtype.kind not in "iubf" or v.dtype != s.dtype:
        return None
    return v, v.dtype.str  # as they are: a mapped column is then a view, not a widened copy


def _narrow(values: np.ndarray) -> np.ndarray:
    """Category codes in the smallest signed type that holds them (one or two bytes, as a rule; the
    Categorical keeps them in that type, so the mapped codes are used as they are)."""
    if not len(values):
        return values
    lo, hi = int(values.min()), int(values.max())
    for t in (np.int8, np.int16, np.int32):
        if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
            return values.astype(t)
    return values.astype(np.int64, copy=False)


def _decode(name: str, values: np.ndarray, t: Any, rows: int) -> Any:
    """The column stored by `_encode`, from its array and type record."""
    if isinstance(t, dict):
        ncat = len(t["categories"])
        if rows and (int(values.min()) < -1 or int(values.max()) >= ncat):
            raise ValueError(f"column {name} has codes outside its categories")
        if "text" not in t:  # categorical: codes here, categories in the record
            cats = pd.Index(t["categories"], dtype=t["dtype"])
            return pd.Categorical.from_codes(values, dtype=pd.CategoricalDtype(cats, ordered=bool(t.get("ordered", False))), validate=False)
        texts = np.asarray(t["categories"] + [None], dtype=object)[np.where(values < 0, ncat, values)]
        if t["text"] == "str":
            return pd.array(texts, dtype="str")
        if t["missing"] == "nan":
            texts[values < 0] = np.nan
        return pd.Series(texts, dtype=object)  # (a bare object array would be inferred as `str`)
    return values.astype(t, copy=False)


def entries() -> list[tuple[Path, int, float]]:
    """Every trace's entry: folder, bytes, last use (the folder's mtime)."""
    out: list[tuple[Path, int, float]] = []
    base = root()
    if not base.is_dir():
        return out
    for d in base.iterdir():
        if not d.is_dir():
            continue
        try:
            size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
            out.append((d, size, d.stat().st_mtime))
        except OSError:
            continue
    return out


def evict(limit: int, keep: Path | None = None) -> None:
    """Remove the least recently used entries until the cache holds at most `limit` bytes; `keep` goes last."""
    found = entries()
    total = sum(size for _, size, _ in found)
    for d, size, _ in sorted(found, key=lambda e: (e[0] == keep, e[2])):
        if total <= limit:
            break
        shutil.rmtree(d, ignore_errors=True)
        total -= size


def _beside(folder: Path, trace: Path) -> bool:
    """Whether writing the entry `folder` would put anything in the trace's own folder: the entry, the
    frames folder or the nsysparse folder would be that folder or a new folder in it (a cache directory set
    to where the traces are). The cache is then off: nothing is ever written beside the input."""
    here = trace.resolve().parent
    target = folder.resolve()
    made = (target, target.parent, target.parent.parent)
    return any(p == here or p.parent == here for p in made)


def _mapped(file: Path, size: int) -> np.ndarray:
    """The file's bytes, mapped copy-on-write (columns are views of the page cache: nothing is copied
    or allocated until a column is written to, which then changes only this process's copy). Entries
    are written under other names and renamed, and removed by unlinking, so a mapped file never changes."""
    if size == 0:
        return np.zeros(0, dtype=np.uint8)
    with open(file, "rb") as fh:
        mapping = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)
    return np.frombuffer(mapping, dtype=np.uint8)


def _bytes(values: np.ndarray) -> memoryview:
    """The bytes of a contiguous array, without a copy."""
    view: Any = values
    return memoryview(view).cast("B")
