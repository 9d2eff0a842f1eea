"""What the writer does after a failed insert: wait and retry, fall back, or give the part up.

An unavailable store is waited out, with waits doubling from the first delay up to 5 s. A part
the store *rejects* ``MAX_REJECTIONS`` times in a row goes to the dead letters (``deadletter.py``),
never away; the native decoder's part is converted in Python instead after ``NATIVE_REJECTIONS``
(when none of its attempts landed: the writer checks that).
"""

from __future__ import annotations

from tracehouse.storage import StorageUnavailable

__all__ = ["Backoff", "Retries", "MAX_REJECTIONS", "NATIVE_REJECTIONS", "MAX_DELAY"]

#: Rejections of one part before it goes to the dead letters (unavailability is waited out).
MAX_REJECTIONS = 8
#: Rejections of the native decoder before a batch takes the Python path instead.
NATIVE_REJECTIONS = 3
#: The longest wait between two attempts, in seconds.
MAX_DELAY = 5.0


class Backoff:
    """Waits that double from ``first`` up to ``MAX_DELAY``."""

    def __init__(self, first: float):
        self.delay = first

    def next(self) -> float:
        """The wait before the next attempt (and the following one doubles)."""
        delay = self.delay
        self.delay = min(delay * 2, MAX_DELAY)
        return delay


class Retries:
    """The failures of one batch's parts: each part counts its own rejections in a row; the wait
    keeps growing over the batch."""

    def __init__(self, first_delay: float):
        self.backoff = Backoff(first_delay)
        self.failures = 0

    def failed(self, e: BaseException) -> str:
        """Count a failed attempt at the current part; returns its kind (the errors metric's)."""
        self.failures += 1
        return "unavailable" if isinstance(e, StorageUnavailable) else "rejected"

    def python_instead(self, kind: str) -> bool:
        """Whether a part of the native decoder's should be converted in Python now."""
        return kind == "rejected" and self.failures >= NATIVE_REJECTIONS

    def give_up(self, kind: str) -> bool:
        """The drop rule: whether the current part goes to the dead letters now."""
        return kind == "rejected" and self.failures >= MAX_REJECTIONS

    def next_part(self) -> None:
        """The current part is done with (stored or dead-lettered)."""
        self.failures = 0
