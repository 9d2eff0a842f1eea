"""Sign-outs shared through the store: a session signed out on one dashboard process is refused by
every other one (replicas behind a load balancer) and by this one after a restart.

Each process keeps the digests of signed-out sessions that have not expired, and reads them again
from ``ended_sessions`` at most every ``interval`` seconds: the first request with a session cookie
after that waits for the read (one small query) up to ``wait_s`` seconds, requests meanwhile use
what was read last. So
another replica refuses a signed-out session within ``interval`` seconds of the sign-out (plus the
read). When the store cannot be read, the last list read stays in force and the read is tried
again after ``interval``; the process that signed a session out refuses it at once in any case
(``Auth`` remembers its own sign-outs).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from tracehouse.storage.errors import StorageError
from tracehouse.storage.queries_sessions import ended_sessions, record_ended_session

__all__ = ["SignOuts", "session_digest"]

log = logging.getLogger("tracehouse.dashboard")


def session_digest(sid: str) -> str:
    """What the store keeps of a session id: a digest, so its table holds nothing a cookie needs."""
    return hashlib.sha256(b"tracehouse ended session\0" + sid.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class SignOuts:
    def __init__(self, store: Any, interval: float = 2.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, wait_s: float = 1.0):
        self.store = store
        self.interval = interval
        self.clock = clock
        self.monotonic = monotonic
        self._ended: dict[str, int] = {}
        self._read_at: float | None = None
        self._reading = False
        self._failing = False
        #: seconds a request waits for a due read of the list before going on with the last one
        self.wait_s = wait_s

    def ended(self, sid: str) -> bool:
        """Whether another process (or this one before a restart) signed this session out."""
        return bool(self._ended) and session_digest(sid) in self._ended

    def record(self, sid: str, expires: int) -> None:
        """Blocking (a store insert): run it in a worker thread. Raises the store's errors. This
        process refuses the session already (``Auth.end``); the others read it from the store."""
        record_ended_session(self.store, session_digest(sid), expires)

    async def refresh_if_due(self) -> None:
        """Read the list again if it is due, waiting for the read at most ``wait_s`` seconds: a
        store that hangs must not hold every signed-in request (the read goes on in its thread, one
        at a time, within its own time limit, and the last list read stays in force meanwhile)."""
        now = self.monotonic()
        if self._reading or (self._read_at is not None and now - self._read_at < self.interval):
            return
        self._reading = True
        read = asyncio.ensure_future(run_in_threadpool(self._read))
        read.add_done_callback(lambda f: f.cancelled() or f.exception())  # _read logs its own errors
        await asyncio.wait({read}, timeout=self.wait_s)

    def _read(self) -> None:
        try:
            self._read_once()
        finally:
            self._reading = False

    def _read_once(self) -> None:
        try:
            self._ended = ended_sessions(self.store, int(self.clock()))
            if self._failing:
                log.info("signed-out sessions are read from the store again")
            self._failing = False
        except StorageError as e:
            if not self._failing:
                log.warning("cannot read signed-out sessions from the store (%s); the last list read stays in "
                            "force", e)
            self._failing = True
        finally:
            self._read_at = self.monotonic()
