"""At most one report of a recurring condition per interval (a log line for accept errors, refused
connections, a store still away), with the count of reports left out since the last one."""

from __future__ import annotations

import time

__all__ = ["Sparse"]


class Sparse:
    """At most one report of a condition per ``every`` seconds: ``due()`` is the number of reports
    left out since the last one when a report is due now, else None (this one is left out)."""

    def __init__(self, every: float):
        self.every = every
        self._last = float("-inf")
        self.left_out = 0

    def due(self) -> int | None:
        now = time.monotonic()
        if now - self._last < self.every:
            self.left_out += 1
            return None
        n, self._last, self.left_out = self.left_out, now, 0
        return n
