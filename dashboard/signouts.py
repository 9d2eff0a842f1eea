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

A sign-out waits for its write at most ``record_wait_s`` seconds (``record_within``): one the store
did not take by then (it hangs, or is down) is counted and logged, kept, and written again with the
next reads of the list until it is written or its session expires, so other replicas refuse it once
the store is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from tracehouse.storage.errors import StorageError
from tracehouse.storage.queries_sessions import ended_sessions, prune_ended_sessions, record_ended_session

__all__ = ["SignOuts", "session_digest"]

log = logging.getLogger("tracehouse.dashboard")

#: sign-outs the store did not take, kept to be written again (the oldest dropped past this)
MAX_PENDING = 10_000
#: seconds between two deletions of expired sign-outs from the store (each replica; one is enough)
PRUNE_EVERY_S = 3600.0


def session_digest(sid: str) -> str:
    """What the store keeps of a session id: a digest, so its table holds nothing a cookie needs."""
    return hashlib.sha256(b"tracehouse ended session\0" + sid.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class SignOuts:
    def __init__(self, store: Any, interval: float = 2.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, wait_s: float = 1.0,
                 record_wait_s: float = 2.0, on_unrecorded: Callable[[], None] | None = None):
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
        #: seconds a sign-out waits for its write before answering (the write goes on, and is retried)
        self.record_wait_s = record_wait_s
        self.on_unrecorded = on_unrecorded
        #: digest → expiry of sign-outs not yet written to the store (written again by ``_read_once``)
        self._pending: dict[str, int] = {}
        self._pending_lock = threading.Lock()
        self._pruned_at: float | None = None

    def ended(self, sid: str) -> bool:
        """Whether another process (or this one before a restart) signed this session out."""
        return bool(self._ended) and session_digest(sid) in self._ended

    def record(self, sid: str, expires: int) -> None:
        """Blocking (a store insert): run it in a worker thread. Raises the store's errors. This
        process refuses the session already (``Auth.end``); the others read it from the store."""
        record_ended_session(self.store, session_digest(sid), expires)

    async def record_within(self, sid: str, expires: int) -> bool:
        """Write this sign-out, waiting at most ``record_wait_s`` seconds: whether the store took it.
        If not (an error, or no answer yet), it is counted, logged and kept to be written again until
        it is written or expires; the write under way goes on in its thread."""
        digest = session_digest(sid)
        with self._pending_lock:
            self._pending[digest] = int(expires)
            while len(self._pending) > MAX_PENDING:
                del self._pending[next(iter(self._pending))]
        write = asyncio.ensure_future(run_in_threadpool(self._write_pending, digest))
        write.add_done_callback(lambda f: f.cancelled() or f.exception())
        done, _ = await asyncio.wait({write}, timeout=self.record_wait_s)
        if done and not write.exception():
            return True
        reason = write.exception() if done else f"no answer within {self.record_wait_s:g} s"
        log.warning("sign-out not recorded in the store yet (%s): written again with the next reads of the "
                    "list; other replicas accept the session until then", reason)
        if self.on_unrecorded is not None:
            self.on_unrecorded()
        return False

    def _write_pending(self, digest: str) -> None:
        """Write one kept sign-out (blocking); it is no longer kept once the store took it."""
        with self._pending_lock:
            expires = self._pending.get(digest)
        if expires is None:
            return
        record_ended_session(self.store, digest, expires)
        with self._pending_lock:
            if self._pending.get(digest) == expires:
                del self._pending[digest]

    def pending(self) -> int:
        """Sign-outs not yet written to the store."""
        with self._pending_lock:
            return len(self._pending)

    def _prune_if_due(self) -> None:
        """Delete expired sign-outs from the store, at most every ``PRUNE_EVERY_S`` (the first read
        included): the table, and each read of it, stays the size of the sessions still alive."""
        now = self.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        try:
            n = prune_ended_sessions(self.store, int(self.clock()))
        except StorageError as e:  # the list was read: tried again in PRUNE_EVERY_S
            log.warning("cannot delete expired sign-outs from the store: %s", e)
            return
        if n:
            log.info("deleted %d expired sign-outs from the store", n)

    def _write_kept(self) -> None:
        now = int(self.clock())
        with self._pending_lock:
            for d in [d for d, exp in self._pending.items() if exp < now]:
                del self._pending[d]  # expired: the cookie is refused anyway
            kept = list(self._pending)
        for digest in kept:
            self._write_pending(digest)  # raises the store's errors: the rest waits for the next read
            log.info("a sign-out the store did not take before is recorded now")

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
            self._write_kept()
            self._ended = ended_sessions(self.store, int(self.clock()))
            self._prune_if_due()
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
