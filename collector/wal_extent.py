"""What of the WAL is durable, and how much of that is not stored yet.

The appender extends it after each fsync; the reader reads up to its end; the writer releases
what it has stored. ``cond`` guards it and is notified whenever more becomes durable.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from .wal_format import Pos

__all__ = ["Extent"]


class Extent:
    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.sizes: dict[int, int] = {}  # segment → durable size
        self.current = 0  # the segment appended to
        self.digests: dict[int, list[bytes]] = {}  # segment → digests of its records
        self.released = Pos(0, 0)
        self.ages: deque[list] = deque()  # [end pos, monotonic time of the first record up to it]

    @property
    def end(self) -> Pos:
        return Pos(self.current, self.sizes.get(self.current, 0))

    def extend(self, seg: int, off: int, digests: list[bytes], now: float) -> None:
        """Segment ``seg`` is durable up to ``off`` (with these records' digests)."""
        with self.cond:
            self.sizes[seg] = off
            if digests:
                self.digests.setdefault(seg, []).extend(digests)
            if self.ages and now - self.ages[-1][1] < 0.1:
                self.ages[-1][0] = Pos(seg, off)
            else:
                self.ages.append([Pos(seg, off), now])
            self.cond.notify_all()

    def all_digests(self) -> list[bytes]:
        with self.cond:
            return [d for seg in sorted(self.digests) for d in self.digests[seg]]

    def release(self, upto: Pos) -> None:
        with self.cond:
            self.released = upto
            while self.ages and self.ages[0][0] <= upto:
                self.ages.popleft()

    def unreleased_bytes(self) -> int:
        seg, off = self.released
        total = sum(size for s, size in list(self.sizes.items()) if s >= seg)
        if seg in self.sizes:
            total -= min(off, self.sizes[seg])
        return total

    def oldest_age(self) -> float:
        ages = self.ages
        try:
            return max(0.0, time.monotonic() - ages[0][1]) if ages else 0.0
        except IndexError:
            return 0.0
