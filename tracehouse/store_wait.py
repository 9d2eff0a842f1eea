"""A collector that starts while its store cannot be reached.

``tracehouse collector`` in front of a ClickHouse server that is down at start (not started yet,
restarting, out of reach) receives and buffers all the same: the WAL takes what arrives within its
cap (past it, 503 with Retry-After, as during any outage). ``StoreWait`` connects again, with waits
doubling up to ``retry_policy.MAX_DELAY``, runs the migrations once the server answers, and only
then starts the work that needs the store (``then``: the writer, which drains the buffer, and the
retention job). Meanwhile ``/readyz`` answers 200 ``ready, buffering: …`` with the reason (it takes data) and
``tracehouse_collector_store_waiting`` is 1. Each retry's error is logged at most once a minute, or
when it changes (a server that answers but refuses the migrations says why).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from tracehouse.collector.retry_policy import Backoff
from tracehouse.storage import StorageError
from tracehouse.storage.errors import one_line

from .sparse import Sparse

__all__ = ["StoreWait"]

log = logging.getLogger("tracehouse.server")


class StoreWait:
    """``prepare()`` (open, migrate: raises ``StorageError`` while it cannot) is retried on a thread
    until it succeeds; then every object of ``then`` is started (and stopped by :meth:`stop`)."""

    def __init__(self, prepare: Callable[[], None], error: str, where: str, first_delay: float = 0.5):
        self.prepare = prepare
        self.where = where
        self.then: list[Any] = []
        self.ready = threading.Event()
        self.error = error  # why the last attempt failed
        self.attempts = 1  # the one made at start
        self._first = first_delay
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started: list[Any] = []
        self._thread: threading.Thread | None = None
        self._sparse = Sparse(60.0)

    @property
    def waiting(self) -> bool:
        return not self.ready.is_set()

    def reason(self) -> str:
        return f"store unreachable ({self.attempts} attempts since start): {self.error}"

    def start(self) -> None:
        self._sparse.due()  # the start's own warning was the first report
        self._thread = threading.Thread(target=self._run, name="tracehouse-store-wait", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = Backoff(self._first)
        while not self._stop.wait(backoff.next()):
            self.attempts += 1
            try:
                self.prepare()
            except StorageError as e:
                self._failed(e)
                continue
            except Exception as e:  # a bug must not end the wait for good: the buffer would only grow
                log.exception("preparing the store at %s failed", self.where)
                self._failed(e)
                continue
            with self._lock:
                if self._stop.is_set():
                    return
                for b in self.then:
                    b.start()
                    self._started.append(b)
                self.ready.set()
            log.info("the store at %s answers and its schema is current (after %d attempts): writing what "
                     "was buffered", self.where, self.attempts)
            return

    def _failed(self, e: BaseException) -> None:
        error = one_line(e)
        changed = error != self.error
        self.error = error
        left_out = self._sparse.due()
        if changed or left_out is not None:
            log.warning("the store at %s still cannot be used (%d attempts): %s; what arrives is buffered",
                        self.where, self.attempts, error)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)  # an attempt under way ends within its connect timeout
        with self._lock:
            started, self._started = self._started, []
        for b in reversed(started):
            b.stop()
