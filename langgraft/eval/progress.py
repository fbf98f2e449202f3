"""Progress off a terminal: how far a long evaluation is and how long it will take, as log lines
every PROGRESS_EVERY_S seconds when stderr is not a terminal (a tqdm bar covers a terminal; off
one, tqdm is silent and a run of half an hour would give no sign of life)."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 30.0


class Progress:
    """`unit`s done of `total`, elapsed time and the time left. The first line, after the first
    step, gives the whole run's expected duration."""

    def __init__(self, name: str, total: int, unit: str = "questions") -> None:
        self.name, self.total, self.unit, self.done = name, total, unit, 0
        self.start = time.monotonic()
        self.last: float | None = None
        self.quiet = sys.stderr.isatty()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.quiet or self.done >= self.total:
            return
        if self.last is not None and now - self.last < PROGRESS_EVERY_S:
            return
        elapsed = now - self.start
        left = elapsed / max(1, self.done) * (self.total - self.done)
        what = "expected total" if self.last is None else "elapsed"
        shown = elapsed + left if self.last is None else elapsed
        log.info(
            "%s: %s/%s %s (%.0f%%), %s %s, about %s left",
            self.name,
            f"{self.done:,}",
            f"{self.total:,}",
            self.unit,
            100 * self.done / self.total,
            what,
            duration(shown),
            duration(left),
        )
        self.last = now


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
