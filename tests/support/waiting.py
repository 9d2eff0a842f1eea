"""Waiting on a condition instead of sleeping a fixed time."""

from __future__ import annotations

import time


def wait_for(fn, timeout: float, every: float = 0.3, what: str = "condition", tolerate: tuple = ()):
    """Call ``fn`` until it returns something truthy (returned) or ``timeout`` seconds pass
    (AssertionError, with the last result). Exceptions of the ``tolerate`` types count as not yet;
    the last one is reported on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except tolerate as e:
            last = e
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {str(last)[:2000]}")
