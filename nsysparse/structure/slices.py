"""A kernel sequence cut into slices (steps, layer instances), the slices grouped by content so that each distinct
one is parsed once, and the per-position results of those parses written back to every kernel in one pass.

`order` lists kernel rows; slice i is order[starts[i]:starts[i+1]] (the slices cover `order` end to end). A
group's values (one per position of its sequence) go to all its slices through one flat index into the groups'
values laid end to end, so the write costs a gather from a small table, not an index array per slice."""

from __future__ import annotations

from functools import cached_property

import numpy as np

I64 = np.int64


class Slices:
    """Slices of an encoded kernel sequence (`text`, one character per row of `order`) grouped by content and tag.
    Groups are numbered in order of first appearance (the order parsing visits them)."""

    def __init__(self, order: np.ndarray | None, starts: np.ndarray, text: str, tags: list[str] | None = None) -> None:
        self.order = order  # None: every row, in row order
        self.size = len(text)
        self.starts = starts
        self.lengths = np.diff(np.append(starts, self.size)).astype(I64)
        index: dict[tuple[str, str], int] = {}
        group = np.empty(len(starts), dtype=I64)
        ends = np.append(starts[1:], self.size).tolist()
        for i, (a, b) in enumerate(zip(starts.tolist(), ends)):
            group[i] = index.setdefault((text[a:b], tags[i] if tags else ""), len(index))
        self.group = group
        self.keys = list(index)  # (sequence, tag) per group
        self.first = np.unique(group, return_index=True)[1].astype(I64)  # each group's first slice
        self.count = np.bincount(group, minlength=len(index)).astype(I64)

    def __len__(self) -> int:
        return len(self.keys)

    @cached_property
    def _flat(self) -> np.ndarray:
        """For each position of `order`: where its value lies in the groups' values laid end to end."""
        size = np.array([len(seq) for seq, _ in self.keys], dtype=I64)
        offset = np.concatenate(([0], np.cumsum(size)[:-1])).astype(I64)
        flat = np.repeat(offset[self.group] - self.starts, self.lengths)
        flat += np.arange(self.size, dtype=I64)
        return flat

    def spread(self, values: list[np.ndarray]) -> np.ndarray:
        """Per position of `order`, the value at its place in its group's `values` (one array per group)."""
        if self.size == 0:
            return np.zeros(0, dtype=values[0].dtype if values else I64)
        return np.concatenate(values)[self._flat]

    def per_position(self, per_slice: np.ndarray) -> np.ndarray:
        """A per-slice value repeated over the slice's positions."""
        return np.repeat(per_slice, self.lengths)

    def write(self, target: np.ndarray, values: np.ndarray, keep: np.ndarray | None = None) -> None:
        """target[order[j]] = values[j] for every position j (where `keep` holds, when given)."""
        if self.order is None:
            np.copyto(target, values, casting="same_kind", where=True if keep is None else keep)
        elif keep is None:
            target[self.order] = values
        elif keep.any():
            target[self.order[keep]] = values[keep]
