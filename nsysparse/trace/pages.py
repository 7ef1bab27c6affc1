"""Columns of one table read straight from the SQLite file's b-tree pages, vectorised in numpy.

Why: SQLite decodes a record value by value (about 90 ns a value through DuckDB's scanner on 2 cores),
which made reading the columns an analysis needs 3.5x DuckDB's own group-by over the kernel table. The
records nsys writes are small rows of integers; their layout (https://www.sqlite.org/fileformat.html) is
simple enough to decode for millions of rows at once: walk the table's b-tree level by level from its
root page, gather every leaf cell's offset, read each record's header (one serial-type byte per column),
and group the rows by layout (rows whose serial types agree hold each value at the same offset), so that
a value is a strided view of one gather per row. Integer columns and short texts (UTF-8, up to 57
bytes) are read.

It reads only what it can prove it reads right, and says None otherwise (the caller then asks SQLite,
whose answer and errors are the reference). Refused: a file that is not a plain SQLite 3 database in
rollback-journal mode, a WITHOUT ROWID table, any page of an unexpected kind or out of the file, a
record spilling onto overflow pages or past its page, a record whose header is not one single-byte
serial type per column (a long text or blob), a record whose payload length disagrees with its header,
a record lacking a column read (added by ALTER TABLE: its default is SQLite's), and any value of
another storage class than the one read (a real or text where an integer is read is SQLite's to report
as damage). The file is mapped read-only and never written; the mapped pages are dropped from the
process after each chunk.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HEADER = b"SQLite format 3\x00"
LEAF_TABLE, INTERIOR_TABLE = 13, 5
MAX_DEPTH = 32  # a b-tree of 4 KiB pages this deep would hold more rows than any file can
# Records decoded per step: temporaries of a few hundred KiB, which any allocator reuses (under glibc's
# defaults, blocks above its adaptive limit of up to 32 MiB come as fresh pages each time, and their page
# faults cost more than the decoding).
CHUNK_CELLS = 1 << 15
MAX_LAYOUTS = 256  # distinct record layouts in a chunk decoded by group (more: each value gathered)
# An integer column read after this many unread columns is gathered on its own from each row's offset:
# the layouts of the columns in between (a kernel's grid, block and memory sizes before its graphNodeId)
# would otherwise split the rows into tens of groups (measured: 21 layouts a chunk instead of 1).
FAR_GAP = 4
_PREAMBLE = 8  # payload length (<= 2 bytes) and rowid (<= 6 bytes) varints


@dataclass(frozen=True)
class Layout:
    """Where a table lives in the file: its root page, its declared columns in order, and which (if any)
    is an alias of the rowid (an INTEGER PRIMARY KEY, stored as NULL in the record)."""

    root: int
    columns: tuple[str, ...]
    rowid_alias: str | None
    real: frozenset[str] = frozenset()  # columns of REAL affinity (SQLite hands back their integers as reals)


@dataclass(frozen=True)
class Request:
    """What one `read` decodes of a table: integer columns and text columns."""

    table: Layout
    ints: tuple[str, ...]
    texts: tuple[str, ...]


@dataclass
class Decoded:
    """Decoded rows: per integer column its int64 values and NULL mask; per text column its values."""

    ints: dict[str, tuple[np.ndarray, np.ndarray]]
    texts: dict[str, np.ndarray]


def _texts(dense: np.ndarray, lo: int, hi: int, width: int, offset: int, nbytes: int) -> np.ndarray:
    """Rows lo..hi of `dense` hold a UTF-8 text of `nbytes` at `offset`: decoded once per distinct
    value (invalid bytes as U+FFFD, as the sqlite3 reader decodes them). The texts are told apart by
    hashing them as 8-byte words (a sort of the byte strings costs three times as much)."""
    import pandas as pd

    if nbytes == 0:
        return np.full(hi - lo, "", dtype=object)
    n, words = hi - lo, -(-nbytes // 8)
    padded = np.zeros((n, words * 8), dtype=np.uint8)
    padded[:, :nbytes] = np.ndarray(shape=(n, nbytes), dtype=np.uint8, buffer=dense, offset=lo * width + offset, strides=(width, 1))
    word = padded.view(np.uint64)
    codes, _ = pd.factorize(word[:, 0])
    for k in range(1, words):
        more, seen = pd.factorize(word[:, k])
        codes, _ = pd.factorize(codes * len(seen) + more)
    # codes number the texts in order of first appearance: a text's first row is where their maximum rises
    rising = np.maximum.accumulate(codes)
    first = np.flatnonzero(np.concatenate([[True], rising[1:] > rising[:-1]]))
    uniques = np.ascontiguousarray(padded[first, :nbytes])
    if (uniques[:, -1] == 0).any():  # 'S' would drop a trailing NUL byte
        decoded = np.array([bytes(u).decode("utf-8", "replace") for u in uniques], dtype=object)
    else:
        decoded = np.char.decode(uniques.view(f"S{nbytes}").ravel(), "utf-8", "replace").astype(object)
    return decoded[codes]


def _far_columns(columns: dict[str, int], req: Request) -> dict[str, int]:
    """The integer columns of `columns` (name: position) that come after `FAR_GAP` or more unread
    columns (counting from the last text: texts are read by layout), with their positions."""
    positions = sorted(set(columns.values()))
    texts = [columns[w] for w in req.texts if w in columns]
    cut = None
    for a, b in itertools.pairwise(positions):
        if b - a > FAR_GAP and b > max(texts, default=-1):
            cut = b
            break
    return {} if cut is None else {w: j for w, j in columns.items() if j >= cut and w in req.ints}


def _int_at(reader: PageFile, body: np.ndarray, st: np.ndarray, end: np.ndarray, nbytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One integer column gathered per row: its serial types `st`, the offset in each body where its
    value ends, and its content sizes; the values (0 for NULL, the constants 0 and 1) and the NULL mask."""
    shift = 64 - (nbytes.astype(np.int64) << 3)  # 64 where there is no content (set below)
    values = reader._be(body - 8 + end)
    values <<= np.minimum(shift, 63)
    values >>= np.minimum(shift, 63)
    null = st == 0
    special = null | (st >= 8)
    if special.any():
        values[special] = 0
        values[st == 9] = 1
    return values, null


def _content_sizes(m: np.ndarray) -> np.ndarray:
    """The content size in bytes of each one-byte serial type in `m` below 12 (a contiguous uint8
    matrix: uint8 compares viewed as 0/1 bytes and no table lookup, which would index through 8-byte
    integers); blobs and texts (12 and up) are the caller's."""
    out = m + (m >= 5).view(np.uint8)  # 0 1 2 3 4 6 8 8 for serial types 0..7
    out += (m >= 6).view(np.uint8)
    out -= (m >= 7).view(np.uint8)
    out *= (m < 8).view(np.uint8)  # constants 0 and 1 (types 8, 9) have no content; 10, 11 are refused
    return out


def _preamble(block: np.ndarray, rowids: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray] | None:
    """From each cell's first bytes: its payload length, its rowid (when `rowids`), and the offset of its
    first serial type (after the two varints and the record's header-length byte). None when the
    payload length takes more than 2 bytes (16 KiB or more) or the rowid more than 6 bytes (a rowid of
    2^42 or more, or a negative one)."""
    b0 = block[:, 0].astype(np.int64)
    long_payload = b0 >= 0x80
    payload = b0
    lp = np.ones(len(block), dtype=np.int64)
    if long_payload.any():
        b1 = block[:, 1].astype(np.int64)
        if (long_payload & (b1 >= 0x80)).any():
            return None
        payload = np.where(long_payload, ((b0 & 0x7F) << 7) | b1, b0)
        lp += long_payload
        rows = np.arange(len(block))
        rowid_bytes = [block[rows, lp + k] for k in range(_PREAMBLE - 2)]
    else:
        rowid_bytes = [block[:, 1 + k] for k in range(_PREAMBLE - 2)]
    going = rowid_bytes[0] >= 0x80
    length = 1 + going.astype(np.int64)
    for byte in rowid_bytes[1:]:
        going &= byte >= 0x80
        if not going.any():
            break
        length += going
    else:
        return None
    rowid = None
    if rowids:
        rowid = np.zeros(len(block), dtype=np.int64)
        for k, byte in enumerate(rowid_bytes):
            inside = k < length
            rowid = np.where(inside, (rowid << 7) | (byte & 0x7F), rowid)
    return payload, rowid, lp + length + 1


def _layout_codes(padded: np.ndarray, k: int) -> np.ndarray:
    """Per row, a small integer naming its first `k` serial types (rows alike get the same code; one
    layout: all 0). `padded`: the serial types, contiguous and zero-padded to whole 8-byte words, each
    word of 8 types read as one integer (the bytes of types from `k` on masked off)."""
    import pandas as pd

    n, used = len(padded), -(-k // 8)
    words = padded.view("<u8")[:, :used]
    if k % 8:
        words = words.copy()
        words[:, -1] &= np.uint64((1 << (8 * (k % 8))) - 1)
    if used == 2 and not (words & np.uint64(0xF0F0F0F0F0F0F0F0)).any():  # 16 types of 4 bits: one word
        words = (words[:, 0] | (words[:, 1] << np.uint64(4)))[:, None]
    if n == 0 or bool((words == words[0]).all()):  # one layout (a run of rows alike): nothing to hash
        return np.zeros(n, dtype=np.int64)
    codes = np.zeros(n, dtype=np.int64)
    for j in range(words.shape[1]):
        word_codes, uniques = pd.factorize(words[:, j])
        codes = codes * len(uniques) + word_codes
        if j + 1 < words.shape[1]:
            codes, _ = pd.factorize(codes)
    if words.shape[1] > 1:
        codes, _ = pd.factorize(codes)
    return np.asarray(codes, dtype=np.int64)


def layout(rows: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]], table: str) -> Layout | None:
    """The table's layout from sqlite_master and PRAGMA table_info; None for a WITHOUT ROWID table or a view."""
    found = rows("SELECT rootpage, sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    if not found or not found[0][0]:
        return None
    root, sql = found[0]
    if re.search(r"\)\s*WITHOUT\s+ROWID\s*;?\s*$", str(sql or ""), re.IGNORECASE):
        return None
    info = rows(f'PRAGMA table_info("{table}")', ())
    columns = tuple(str(r[1]) for r in info)
    keys = [r for r in info if r[5]]
    # (INTEGER PRIMARY KEY DESC is not an alias: its values are stored, which `_decode` checks)
    alias = str(keys[0][1]) if len(keys) == 1 and str(keys[0][2]).upper() == "INTEGER" else None
    real = frozenset(str(r[1]) for r in info if any(t in str(r[2]).upper() for t in ("REAL", "FLOA", "DOUB")) and "INT" not in str(r[2]).upper())
    return Layout(int(root), columns, alias, real)


class PageFile:
    """One SQLite file mapped read-only; `read` decodes columns of a table (or says None)."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as fh:  # the mapping outlives the descriptor
            self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        head = self._mm[:100]
        self.ok = len(head) == 100 and head[:16] == HEADER and head[18] == 1 and head[19] == 1
        self.utf8 = self.ok and int.from_bytes(head[56:60], "big") in (0, 1)  # text encoding (0: not yet set)
        size = int.from_bytes(head[16:18], "big") if self.ok else 0
        self.page_size = 65536 if size == 1 else size
        self.usable = self.page_size - (head[20] if self.ok else 0)
        self.ok = self.ok and self.page_size >= 512 and self.page_size & (self.page_size - 1) == 0 and self.usable >= 480
        self.size = len(self._mm)
        self.pages = self.size // self.page_size if self.ok else 0
        self._u8 = np.frombuffer(self._mm, dtype=np.uint8)
        # every byte offset seen as the start of a `width`-byte element (views: nothing is copied)
        self._blocks: dict[int, np.ndarray] = {}
        self._rows: dict[int, int] = {}  # rows of each table (by root page) counted so far

    def close(self) -> None:
        self._u8 = np.zeros(0, dtype=np.uint8)
        self._blocks.clear()
        self._mm.close()

    # -- loads ----------------------------------------------------------------------------------------
    def _gather(self, pos: np.ndarray, width: int) -> np.ndarray:
        """The `width` bytes at each of `pos`, as an (n, width) uint8 matrix: one gather of width-byte
        elements from a strided view of the mapping (a gather costs per element, not per byte). Bytes
        past the end of the file read 0."""
        view = self._blocks.get(width)
        if view is None:
            view = np.ndarray(shape=(max(self.size - width + 1, 0),), dtype=f"V{width}", buffer=self._mm, strides=(1,))
            self._blocks[width] = view
        limit = self.size - width
        if len(pos) and int(pos.max()) > limit:
            out = np.zeros((len(pos), width), dtype=np.uint8)
            inside = pos <= limit
            out[inside] = view[pos[inside]].view(np.uint8).reshape(-1, width)
            for i in np.flatnonzero(~inside):  # the few records ending within `width` bytes of the end
                tail = self._u8[int(pos[i]) :]
                out[i, : len(tail)] = tail
            return out
        return view[pos].view(np.uint8).reshape(len(pos), width)

    def _be(self, pos: np.ndarray) -> np.ndarray:
        """The 8 bytes at each of `pos` as a big-endian int64 (the first byte most significant)."""
        return self._gather(pos, 8).view(">i8").ravel().astype(np.int64)

    def _be16(self, pos: np.ndarray) -> np.ndarray:
        return self._gather(pos, 2).view(">u2").ravel().astype(np.int64)

    def _be32(self, pos: np.ndarray) -> np.ndarray:
        return self._gather(pos, 4).view(">u4").ravel().astype(np.int64)

    # -- the b-tree -----------------------------------------------------------------------------------
    def _page_base(self, pages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        base = (pages - 1) * self.page_size
        return base, base + np.where(pages == 1, 100, 0)

    def _cells(self, pages: np.ndarray, header: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Absolute offsets of every cell of `pages` (cell pointers start `first` bytes into the page
        header), in page then pointer order, and each page's cell count; None when a pointer leaves its page."""
        if len(pages) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        count = self._be16(header + 3)
        total = int(count.sum())
        starts = np.cumsum(count) - count
        index = np.arange(total, dtype=np.int64) - np.repeat(starts, count)
        ptr = self._be16(np.repeat(header + first, count) + 2 * index)
        base = np.repeat((pages - 1) * self.page_size, count)
        if total and (int(ptr.min()) < first or int(ptr.max()) >= self.usable):
            return None
        return base + ptr, count

    def leaves(self, root: int) -> np.ndarray | None:
        """The table's leaf pages in key (rowid) order; None on a page of another kind or out of the file."""
        pages = np.array([root], dtype=np.int64)
        visited = 0
        for _ in range(MAX_DEPTH):
            visited += len(pages)
            if int(pages.min()) < 1 or int(pages.max()) > self.pages or visited > self.pages:
                return None  # out of the file, or a page reached twice (a cycle): damage
            if len(pages) > 1 and len(np.unique(pages)) < len(pages):
                return None
            _, header = self._page_base(pages)
            kind = self._u8[header]
            if (kind == LEAF_TABLE).all():
                return pages
            if not (kind == INTERIOR_TABLE).all():
                return None
            found = self._cells(pages, header, 12)
            if found is None:
                return None
            cells, count = found
            left = self._be32(cells)
            right = self._be32(header + 8)
            # each page's children in key order: its cells' left children, then its right-most child
            ends = np.cumsum(count + 1) - 1
            children = np.empty(len(left) + len(pages), dtype=np.int64)
            is_right = np.zeros(len(children), dtype=bool)
            is_right[ends] = True
            children[is_right] = right
            children[~is_right] = left
            pages = children
        return None

    def count(self, table: Layout) -> int | None:
        """The table's rows (its leaf cells), or None (as `leaves`). Known without a walk once `read` has
        read the table; otherwise the walk's pages (every leaf page's header) leave the process after it."""
        if not self.ok:
            return None
        if table.root in self._rows:
            return self._rows[table.root]
        leaves = self.leaves(table.root)
        if leaves is None:
            return None
        _, header = self._page_base(leaves)
        count = int(self._be16(header + 3).sum())
        if len(header):
            self._release(header)
        self._rows[table.root] = count
        return count

    # -- records --------------------------------------------------------------------------------------
    def read(self, table: Layout, wanted: Sequence[str], texts: Sequence[str] = (), workers: int = 2) -> dict[str, np.ndarray] | None:
        """The `wanted` integer columns of every row in rowid order, as int64 arrays (a masked array
        where a column holds NULLs), and the `texts` columns as object arrays (str, None for NULL). A text or blob longer than 57 bytes in any column of a row makes the answer None (its serial
        type takes two header bytes), whether or not that column is read.
        None when anything is outside what this reader proves it reads right."""
        if not self.ok or any(w not in table.columns for w in (*wanted, *texts)) or (texts and not self.utf8):
            return None
        if set(texts) & set(wanted) or table.rowid_alias in texts:
            return None
        if set(wanted) & table.real:  # a real column's integers are reals to SQLite
            return None
        leaves = self.leaves(table.root)
        if leaves is None:
            return None
        _, header = self._page_base(leaves)
        count = self._be16(header + 3)
        bounds = np.concatenate([[0], np.cumsum(count)])
        n = self._rows[table.root] = int(bounds[-1])
        request = Request(table, tuple(dict.fromkeys(wanted)), tuple(dict.fromkeys(t for t in texts if t not in wanted)))
        out = {w: np.empty(n, dtype=np.int64) for w in request.ints}
        nulls = {w: np.zeros(n, dtype=bool) for w in request.ints}
        text_out = {w: np.empty(n, dtype=object) for w in request.texts}
        # steps of whole leaf pages, about CHUNK_CELLS records each (cell offsets are found per step too)
        cuts = np.unique(np.searchsorted(bounds, np.arange(0, n, CHUNK_CELLS), side="right") - 1)
        spans = list(itertools.pairwise([*cuts.tolist(), len(leaves)]))

        def step(span: tuple[int, int]) -> bool:
            first_page, end_page = span
            found = self._cells(leaves[first_page:end_page], header[first_page:end_page], 8)
            if found is None:
                return False
            cells = found[0]
            got = self._records(cells, request)
            if got is None:
                return False
            lo, hi = int(bounds[first_page]), int(bounds[end_page])
            for w, (values, null) in got.ints.items():
                out[w][lo:hi] = values
                nulls[w][lo:hi] = null
            for w, strings in got.texts.items():
                text_out[w][lo:hi] = strings
            if len(cells):
                self._release(cells)
            return True

        if workers > 1 and len(spans) > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                ok = all(pool.map(step, spans))
        else:
            ok = all(step(s) for s in spans)
        if not ok:
            return None
        result: dict[str, np.ndarray] = {w: np.ma.MaskedArray(v, mask=nulls[w]) if nulls[w].any() else v for w, v in out.items()}
        return result | text_out

    def _records(self, cells: np.ndarray, req: Request) -> Decoded | None:
        """Decode the records at `cells` (absolute offsets of leaf cells), or None when one is outside
        what this reader handles.

        A cell is: payload length (varint), rowid (varint), then the record: header length (one byte
        here), one serial-type byte per column, the values. One gather fetches each cell's first bytes
        up to the last serial type; the values of rows laid out alike come from one more gather."""
        ncols = len(req.table.columns)
        n = len(cells)
        if n == 0:
            return Decoded(
                {w: (np.zeros(0, np.int64), np.zeros(0, bool)) for w in req.ints},
                {w: np.zeros(0, object) for w in req.texts},
            )
        block = self._gather(cells, -(-(_PREAMBLE + 1 + ncols) // 8) * 8)
        got = _preamble(block, rowids=req.table.rowid_alias in req.ints)
        if got is None:
            return None
        payload, rowid, types_at = got
        if int(payload.max()) > self.usable - 35:  # spills onto overflow pages
            return None
        if int((cells % self.page_size + (types_at - 1) + payload).max()) > self.usable:
            return None  # a record running past the end of its page: damage, SQLite's to report
        # The record's column count (its header length less one): fewer than declared after ALTER TABLE
        # ADD COLUMN. Rows whose varints differ in length, or whose column counts differ, have their
        # serial types elsewhere: each run of rows alike is decoded on its own (rowids grow, so their
        # varints lengthen a few times a table).
        uniform = bool((types_at == types_at[0]).all())
        header = block[:, int(types_at[0]) - 1] if uniform else block[np.arange(n), types_at - 1]
        if (header >= 0x80).any():  # a header longer than 127 bytes (127 columns or more): not read here
            return None
        held = header.astype(np.int64) - 1
        key = types_at * 256 + held
        change = np.flatnonzero(key[1:] != key[:-1]) + 1
        if len(change) == 0:
            return self._decode(cells, block, payload, rowid, int(types_at[0]), int(held[0]), req)
        if len(change) <= 64:
            groups: list[slice | np.ndarray] = [slice(lo, hi) for lo, hi in itertools.pairwise([0, *change.tolist(), n])]
        else:
            groups = [np.flatnonzero(key == k) for k in np.unique(key)]
        result = Decoded(
            {w: (np.empty(n, dtype=np.int64), np.zeros(n, dtype=bool)) for w in req.ints},
            {w: np.empty(n, dtype=object) for w in req.texts},
        )
        for rows in groups:
            at = int(types_at[rows][0])
            part = self._decode(cells[rows], block[rows], payload[rows], None if rowid is None else rowid[rows], at, int(held[rows][0]), req)
            if part is None:
                return None
            for w, (values, null) in part.ints.items():
                result.ints[w][0][rows] = values
                result.ints[w][1][rows] = null
            for w, strings in part.texts.items():
                result.texts[w][rows] = strings
        return result

    def _decode(
        self, cells: np.ndarray, block: np.ndarray, payload: np.ndarray, rowid: np.ndarray | None, first: int, held: int, req: Request
    ) -> Decoded | None:
        """`_records` for cells whose `held` serial types (one byte each) all start `first` bytes in
        (`block`: their first bytes)."""
        table = req.table
        if held < 1 or held > len(table.columns) or any(table.columns.index(w) >= held for w in (*req.ints, *req.texts) if w != table.rowid_alias):
            return None  # a wanted column missing from the record takes its declared default: SQLite's to say
        n = len(cells)
        # the serial types, contiguous and padded with zeros (NULL: no content) to whole 8-byte words
        compact = np.zeros((n, -(-held // 8) * 8), dtype=np.uint8)
        compact[:, :held] = block[:, first : first + held]
        types = compact[:, :held]
        if (compact >= 0x80).any():  # a serial type of two or more bytes: a text or blob longer than 57 bytes
            return None
        if (types >= 10).any() and ((types == 10) | (types == 11)).any():  # reserved serial types
            return None
        for w in req.ints:
            st = types[:, table.columns.index(w)]
            if w == table.rowid_alias:
                if (st != 0).any():  # an alias of the rowid stores NULL; a stored value means it is none
                    return None
            elif ((st == 7) | (st >= 10)).any():
                return None  # a real, a text or a blob where an integer is read
        for w in req.texts:
            st = types[:, table.columns.index(w)]
            if ((st != 0) & ((st < 13) | (st % 2 == 0))).any():
                return None  # an integer, a real or a blob where a text is read (CAST AS TEXT: SQLite's)
        # Content sizes of the serial types (zero in the padding); then the payload must be exactly the
        # header and the contents (within one word of 8 sizes, each < 32, multiplying by 0x0101...01
        # leaves in byte k the sum of bytes 0..k).
        size = _content_sizes(compact)
        text = types >= 12
        if text.any():  # blob and text: (N - 12) / 2 bytes
            np.copyto(size[:, :held], (types - 12) >> 1, where=text)
        if int(size.max()) >= 32:
            total = size.sum(axis=1, dtype=np.int64)
        else:
            prefix = (size.view(np.uint64) * np.uint64(0x0101010101010101)).view(np.uint8)
            total = prefix[:, 7].astype(np.int64)
            for k in range(15, prefix.shape[1], 8):
                total += prefix[:, k]
        if not (total + (held + 1) == payload).all():
            return None
        body = cells + (first + held)
        decoded = self._by_layout(body, compact, size[:, :held], req)
        if decoded is None:
            if req.texts:
                return None
            decoded = self._one_by_one(body, types, size[:, :held], req)
        if rowid is not None and table.rowid_alias in req.ints:
            decoded.ints[table.rowid_alias] = (rowid, np.zeros(n, dtype=bool))
        return decoded

    def _by_layout(self, body: np.ndarray, padded: np.ndarray, size: np.ndarray, req: Request) -> Decoded | None:
        """The values of records grouped by layout: rows whose serial types agree up to the last column
        read hold each value at the same offset (and each text at the same length), so after one gather
        of those bytes per row (in group order) a value is a strided view, not a gather of its own.
        Flags come from the serial types alone; an integer column far after the others (`_far_columns`)
        is gathered on its own. None when there are more than `MAX_LAYOUTS` layouts. `padded`: the
        serial types, zero-padded to whole words (see `_layout_codes`); `size`: their content sizes."""
        n = len(body)
        types = padded[:, : size.shape[1]]
        index = req.table.columns.index
        columns = {w: index(w) for w in (*req.ints, *req.texts) if w != req.table.rowid_alias}
        far = _far_columns(columns, req)
        ints = {w: _int_at(self, body, types[:, j], size[:, : j + 1].sum(axis=1, dtype=np.int64), size[:, j]) for w, j in far.items()}
        columns = {w: j for w, j in columns.items() if w not in far}
        if not columns:
            return Decoded(ints, {})
        last = max(columns.values()) + 1
        codes = _layout_codes(padded, last)
        count = int(codes.max()) + 1
        if count > MAX_LAYOUTS:
            return None
        if count == 1:
            order = None
            starts = np.array([0, n])
        else:
            order = np.argsort(codes.astype(np.int16), kind="stable")
            starts = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=count))])
        first_rows = starts[:-1] if order is None else order[starts[:-1]]
        ends = np.cumsum(size[first_rows, :last].astype(np.int64), axis=1)  # per layout: each column's end offset
        # 8 bytes before the body: every integer is read as the 8 bytes ending where it ends
        width = -(-(int(ends[:, -1].max()) + 8) // 8) * 8
        dense = self._gather(body - 8 if order is None else body[order] - 8, width).reshape(-1)
        # each group's values go straight to their rows (in row order: no reordering after)
        grouped = {w: (np.empty(n, dtype=np.int64), np.zeros(n, dtype=bool)) for w in req.ints if w in columns}
        texts = {w: np.empty(n, dtype=object) for w in req.texts}
        for g in range(count):
            lo, hi = int(starts[g]), int(starts[g + 1])
            at: slice | np.ndarray = slice(lo, hi) if order is None else order[lo:hi]
            row = int(first_rows[g])
            for w, j in columns.items():
                st, nbytes, end = int(types[row, j]), int(size[row, j]), int(ends[g, j]) + 8
                if w in texts:
                    texts[w][at] = _texts(dense, lo, hi, width, end - nbytes, nbytes) if st else None
                    continue
                values, null = grouped[w]
                if nbytes == 0:  # NULL, or the constants 0 and 1
                    values[at] = 1 if st == 9 else 0
                    null[at] = st == 0
                    continue
                view = np.ndarray(shape=(hi - lo,), dtype=">i8", buffer=dense, offset=lo * width + end - 8, strides=(width,))
                got = view.astype(np.int64)
                if nbytes < 8:
                    got <<= 64 - 8 * nbytes
                    got >>= 64 - 8 * nbytes  # arithmetic: sign-extends the value's top byte
                values[at] = got
        return Decoded(ints | grouped, texts)

    def _one_by_one(self, body: np.ndarray, types: np.ndarray, size: np.ndarray, req: Request) -> Decoded:
        """Integer values gathered one column at a time from each row's own offsets (many layouts)."""
        ends = np.cumsum(size, axis=1, dtype=np.int64)
        out = Decoded({}, {})
        for w in req.ints:
            if w == req.table.rowid_alias:
                continue
            j = req.table.columns.index(w)
            out.ints[w] = _int_at(self, body, types[:, j], ends[:, j], size[:, j])
        return out

    def _release(self, cells: np.ndarray) -> None:
        """Drop the mapped pages of a decoded chunk from this process (they stay in the page cache)."""
        lo = int(cells.min()) // mmap.PAGESIZE * mmap.PAGESIZE
        hi = int(cells.max()) + self.page_size
        with contextlib.suppress(AttributeError, OSError, ValueError):
            self._mm.madvise(mmap.MADV_DONTNEED, lo, min(hi, self.size) - lo)
