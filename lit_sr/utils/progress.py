"""Progress for long loops that also works without a terminal (SLURM logs, CI, ``| tee``).

On a TTY a rich progress bar is drawn; otherwise (a rich bar prints nothing there until it ends)
plain log lines report count, rate and ETA every ``every_fraction`` of the total or every
``every_seconds``, whichever comes first.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

log = logging.getLogger("lit_sr")


def is_terminal() -> bool:
    """True when stdout is an interactive terminal (a progress bar can be redrawn in place)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # closed or replaced stdout
        return False


def format_seconds(seconds: float) -> str:
    """``3725`` -> ``'1:02:05'``; ``59`` -> ``'59 s'``."""
    if seconds != seconds or seconds == float("inf"):  # NaN or inf: unknown
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressLog:
    """Plain-text progress: ``update(n)`` logs ``description: done/total unit (pct), rate, ETA`` now and then."""

    def __init__(
        self,
        total: int | None,
        description: str,
        unit: str = "items",
        every_fraction: float = 0.1,
        every_seconds: float = 60.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.total = total
        self.description = description
        self.unit = unit
        self.every_fraction = every_fraction
        self.every_seconds = every_seconds
        self.log = logger or log
        self.done = 0
        self.start = time.perf_counter()
        self._last_time = self.start
        self._last_done = 0

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else float("nan")
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            return (
                f"{self.description}: {self.done}/{self.total} {self.unit} ({100.0 * self.done / self.total:.0f} %), "
                f"{rate:.3g} {self.unit}/s, elapsed {format_seconds(elapsed)}, ETA {format_seconds(eta)}"
            )
        return (
            f"{self.description}: {self.done} {self.unit}, {rate:.3g} {self.unit}/s, elapsed {format_seconds(elapsed)}"
        )

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        step = max(1, int(self.total * self.every_fraction)) if self.total else None
        finished = self.total is not None and self.done >= self.total
        due_count = step is not None and self.done - self._last_done >= step
        if finished or due_count or now - self._last_time >= self.every_seconds:
            self.log.info(self.line())
            self._last_time, self._last_done = now, self.done


def track(
    iterable: Iterable[T], total: int | None, description: str, unit: str = "items", enabled: bool = True, weight=None
) -> Iterator[T]:
    """Iterate with progress: a rich bar on a terminal, periodic log lines otherwise.

    ``weight(item) -> int`` counts how many units one item represents (e.g. events in a block); default 1.
    """
    if not enabled:
        yield from iterable
        return
    count = weight or (lambda _item: 1)
    if is_terminal():
        from rich.progress import Progress

        with Progress(transient=False) as bar:
            task = bar.add_task(description, total=total)
            for item in iterable:
                yield item
                bar.advance(task, count(item))
        return
    progress = ProgressLog(total, description, unit)
    progress.log.info("%s: started (%s %s)", description, total if total is not None else "?", unit)
    for item in iterable:
        yield item
        progress.update(count(item))
