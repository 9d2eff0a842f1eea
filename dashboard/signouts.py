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
next reads of the list, and by a background thread every ``retry_s`` seconds (while any is kept),
until it is written or its session expires, so other replicas refuse it once the store is back.

With a ``path`` (a file in the dashboard's data directory), the sign-outs kept are on local disk too,
before the sign-out is answered (replaced atomically, at most :data:`MAX_FILE_BYTES`, removed once the
store took them all): a restart while the store is down or hung refuses them still, and writes them
to the store later, instead of accepting a signed-out cookie again. A file that cannot be read, or
entries of the wrong shape, are ignored with a log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from tracehouse.storage import statefile
from tracehouse.storage.errors import StorageError
from tracehouse.storage.queries_sessions import ended_sessions, prune_ended_sessions, record_ended_session

__all__ = ["SignOuts", "session_digest"]

log = logging.getLogger("tracehouse.dashboard")

#: sign-outs the store did not take, kept to be written again (the oldest dropped past this)
MAX_PENDING = 10_000
#: the file of kept sign-outs: ~60 bytes each, MAX_PENDING of them fit
MAX_FILE_BYTES = 1 << 20
_FORMAT = 1
_DIGEST = re.compile(r"[0-9a-f]{32}")
#: seconds between two background attempts to write the kept sign-outs
RETRY_S = 5.0
#: seconds between two deletions of expired sign-outs from the store (each replica; one is enough)
PRUNE_EVERY_S = 3600.0


def session_digest(sid: str) -> str:
    """What the store keeps of a session id: a digest, so its table holds nothing a cookie needs."""
    return hashlib.sha256(b"tracehouse ended session\0" + sid.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class SignOuts:
    def __init__(self, store: Any, interval: float = 2.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, wait_s: float = 1.0,
                 record_wait_s: float = 2.0, on_unrecorded: Callable[[], None] | None = None,
                 path: str = "", retry_s: float = RETRY_S):
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
        #: where the kept sign-outs are on disk ('' = nowhere), and one writer of it at a time
        self.path = path
        self._file_lock = threading.Lock()
        self._changes = self._synced = 0
        self.retry_s = retry_s
        self._retrier: threading.Thread | None = None
        self._stop = threading.Event()
        self._load_file()
        self.sync_file()  # entries left out of it (expired, of the wrong shape) are gone from it too
        if self._pending:
            self._start_retrier()

    def ended(self, sid: str) -> bool:
        """Whether another process (or this one before a restart) signed this session out: read from
        the store, or kept to be written to it (from the file, after a restart)."""
        if not self._ended and not self._pending:
            return False
        digest = session_digest(sid)
        return digest in self._ended or digest in self._pending

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
            self._changes += 1
        if self.path:  # on disk before the answer: a restart refuses it still
            await run_in_threadpool(self.sync_file)
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
        self._start_retrier()
        return False

    def _write_pending(self, digest: str, sync: bool = True) -> None:
        """Write one kept sign-out (blocking); it is no longer kept once the store took it (and the
        file says so, with ``sync``)."""
        with self._pending_lock:
            expires = self._pending.get(digest)
        if expires is None:
            return
        record_ended_session(self.store, digest, expires)
        with self._pending_lock:
            if self._pending.get(digest) == expires:
                del self._pending[digest]
                self._changes += 1
        if sync:
            self.sync_file()

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
                self._changes += 1
            kept = list(self._pending)
        try:
            for digest in kept:
                self._write_pending(digest, sync=False)  # raises the store's errors: the rest waits
                log.info("a sign-out the store did not take before is recorded now")
        finally:
            self.sync_file()

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

    # -- retries in the background -----------------------------------------------------------------
    def _start_retrier(self) -> None:
        """One thread at most, while sign-outs are kept: writes them every ``retry_s`` seconds (each
        write within the store's time limit for small writes), so they reach the store even when no
        request with a session cookie comes to read the list."""
        with self._pending_lock:
            if self._stop.is_set() or (self._retrier is not None and self._retrier.is_alive()):
                return
            self._retrier = threading.Thread(target=self._retry_loop, name="tracehouse-signouts", daemon=True)
            self._retrier.start()

    def _retry_loop(self) -> None:
        failing = False
        while not self._stop.wait(self.retry_s):
            try:
                self._write_kept()
            except StorageError as e:
                if not failing:
                    log.warning("kept sign-outs not written to the store yet (%s); tried again every %g s", e,
                                self.retry_s)
                failing = True
            except Exception:  # noqa: BLE001 - the thread must go on: the next attempt may succeed
                log.exception("writing the kept sign-outs failed")
            with self._pending_lock:
                if not self._pending:
                    self._retrier = None
                    return

    def close(self) -> None:
        """Stop the background writes (the kept sign-outs stay in the file for the next start)."""
        self._stop.set()

    # -- the file ----------------------------------------------------------------------------------
    def sync_file(self) -> None:
        """Make the file hold the sign-outs kept now (none: no file). Errors are logged, never raised."""
        if not self.path:
            return
        with self._file_lock:
            with self._pending_lock:
                if self._changes == self._synced:
                    return
                changes, kept = self._changes, dict(self._pending)
            try:
                statefile.put(self.path, {"format": _FORMAT, "signouts": kept} if kept else None, MAX_FILE_BYTES)
            except (OSError, ValueError) as e:
                log.error("sign-outs the store did not take: could not write %s: %s (a restart would accept "
                          "them again)", self.path, e)
                return
            self._synced = changes

    def _load_file(self) -> None:
        """Take the sign-outs a previous run kept in the file: entries of the wrong shape and expired
        ones are left out; a file that cannot be read is ignored (logged, left for inspection)."""
        if not self.path:
            return
        try:
            doc = statefile.read_json(self.path, MAX_FILE_BYTES)
            if doc is None:
                return
            if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(doc.get("signouts"), dict):
                raise ValueError("not a file of sign-outs this version writes")
        except (OSError, ValueError) as e:
            log.error("sign-outs the store did not take: %s is unreadable and ignored: %s", self.path, e)
            return
        now, bad = int(self.clock()), 0
        taken: dict[str, int] = {}
        for digest, expires in doc["signouts"].items():
            if not (isinstance(digest, str) and _DIGEST.fullmatch(digest) and type(expires) is int
                    and 0 <= expires <= 0xFFFFFFFF):
                bad += 1
                continue
            if expires >= now and len(taken) < MAX_PENDING:
                taken[digest] = expires
        if bad:
            log.error("sign-outs the store did not take: %d entries of %s of the wrong shape ignored", bad, self.path)
        with self._pending_lock:
            for digest, expires in taken.items():
                self._pending.setdefault(digest, expires)
            self._changes += 1
        if taken:
            log.warning("%d sign-outs the store did not take before the restart are taken from %s (refused, and "
                        "written to the store when it answers)", len(taken), self.path)
