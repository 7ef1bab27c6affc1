"""Progress on stderr for long commands: a rich progress bar that appears only when work has taken
more than about a second, only on a terminal, and never in piped or captured output.

    with Progress(total=3) as p:
        with p.stage("loading 2,328,000 kernels and 5,506,400 API calls"):
            ...

Set NSYSPARSE_PROGRESS=0 to switch it off (1 forces it on, for demonstrations).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

DELAY_S = 1.0


def enabled() -> bool:
    flag = os.environ.get("NSYSPARSE_PROGRESS", "")
    if flag in ("0", "false", "no"):
        return False
    return flag in ("1", "true", "yes") or sys.stderr.isatty()


class Progress:
    """A transient bar of `total` stages; shown once the first second has passed."""

    def __init__(self, total: int, title: str = "nsysparse") -> None:
        self.total = total
        self.title = title
        self.done = 0
        self.label = ""
        self._bar: Any = None
        self._task: Any = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()

    def __enter__(self) -> Progress:
        if enabled():
            self._timer = threading.Timer(DELAY_S, self._show)
            self._timer.daemon = True
            self._timer.start()
        return self

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        with self._lock:
            bar = RichProgress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = bar.add_task(self.label or self.title, total=self.total, completed=self.done)
            bar.start()
            self._bar = bar

    def _update(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.update(self._task, description=self.label, completed=self.done)

    @contextmanager
    def stage(self, label: str) -> Iterator[None]:
        self.label = label
        self._update()
        try:
            yield
        finally:
            self.done += 1
            self._update()

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            if self._bar is not None:
                self._bar.stop()
                self._bar = None
