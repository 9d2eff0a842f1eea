"""A deadline on a whole call, for the probes' checks.

A client library's ``timeout`` bounds one socket read (and a DNS lookup has none): a peer that
answers a byte at a time keeps a call going for as long as it likes. So each call runs in its own
short-lived daemon thread and the caller waits for it only until the deadline. At the deadline the
thread is abandoned, not stopped (Python cannot stop a thread): it ends when the peer or the
library's own socket timeout ends the call, and its result is dropped. The caller must start no
second call for the same target while one is in flight (``Call.running``), which bounds abandoned
threads by the number of targets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Call(Generic[T]):
    """``fn()`` in a daemon thread named ``name``; ``wake`` is set when it returns.
    Starting raises ``RuntimeError`` when no thread can be started."""

    def __init__(self, fn: Callable[[], T], name: str, wake: threading.Event | None = None):
        self.result: T | None = None
        self.done = threading.Event()
        self._fn, self._wake = fn, wake
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        finally:
            self.done.set()
            if self._wake is not None:
                self._wake.set()

    @property
    def running(self) -> bool:
        # after a fork, the parent's thread is gone from the child: done is never set, is_alive is False
        return not self.done.is_set() and self.thread.is_alive()


def wait_all(calls: Iterable[Call], deadline: float, wake: threading.Event, stop: threading.Event) -> None:
    """Return when every call is done, ``time.monotonic()`` reaches ``deadline`` or ``stop`` is set.
    ``wake`` is the event the calls set when they return (and whoever sets ``stop`` sets too)."""
    pending = list(calls)
    while True:
        wake.clear()
        pending = [c for c in pending if not c.done.is_set()]
        remaining = deadline - time.monotonic()
        if not pending or remaining <= 0 or stop.is_set():
            return
        wake.wait(remaining)
