"""Appending to the WAL with group commit.

``append`` queues an encoded record and returns at once; one flusher thread writes everything
queued, calls ``fdatasync`` once for the lot (group commit) and then reports each record's
position to its callback. Nothing is acknowledged before that fsync. A new segment starts when
the current one passes ``segment_bytes``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from .errors import CollectorError
from .wal_dir import SegmentDir
from .wal_extent import Extent
from .wal_format import DIGEST_BYTES, DIGESTED, HEADER, KIND_AT, Pos

__all__ = ["Appender", "Callback", "WalClosed"]

log = logging.getLogger("tracehouse.collector.wal")

Callback = Callable[[Pos | None, BaseException | None], None]


class WalClosed(CollectorError):
    """The WAL is closed (shutting down); the record was not written."""


class Appender:
    def __init__(self, files: SegmentDir, extent: Extent, segment_bytes: int):
        self.files = files
        self.extent = extent
        self.segment_bytes = segment_bytes
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[tuple[bytes, Callback]] = []
        self.queued_bytes = 0
        self._fd = -1
        self._thread: threading.Thread | None = None
        self._closing = False
        self.closed = True
        self.fsyncs = 0
        self.records = 0

    # -- lifecycle ----------------------------------------------------------------------------
    def opened(self) -> None:
        """The log is open (a fresh segment rolled): appends are accepted."""
        self.closed = False
        self._closing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tracehouse-wal-flusher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Write and fsync everything queued, then close the segment."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self.extent.cond:
            self.extent.cond.notify_all()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.closed = True

    # -- appending ----------------------------------------------------------------------------
    def append(self, rec: bytes, callback: Callback) -> None:
        with self._cond:
            if self._closing or self.closed:
                raise WalClosed("the buffer is closed")
            self._queue.append((rec, callback))
            self.queued_bytes += len(rec)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                batch, self._queue = self._queue, []
                self.queued_bytes = 0
                closing = self._closing
            if batch:
                self._commit(batch)
            if closing and not batch:
                return

    def _commit(self, batch: list[tuple[bytes, Callback]]) -> None:
        ext = self.extent
        positions: list[Pos] = []
        try:
            if ext.sizes[ext.current] >= self.segment_bytes:
                self.roll()
            seg, off = ext.current, ext.sizes[ext.current]
            for rec, _ in batch:
                positions.append(Pos(seg, off))
                off += len(rec)
            data = b"".join(rec for rec, _ in batch)
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            os.fdatasync(self._fd)
        except OSError as e:
            log.error("WAL write failed: %s", e)
            self._recover_after_error()
            for _, cb in batch:
                cb(None, e)
            return
        self.fsyncs += 1
        self.records += len(batch)
        now = time.monotonic()
        hs = HEADER.size
        digests = [rec[hs:hs + DIGEST_BYTES] for rec, _ in batch if rec[KIND_AT] & DIGESTED]
        ext.extend(seg, off, digests, now)
        for (_, cb), pos in zip(batch, positions, strict=True):
            cb(pos, None)

    def _recover_after_error(self) -> None:
        # A failed write may have left part of a record: cut the file back to its durable size.
        ext = self.extent
        try:
            os.ftruncate(self._fd, ext.sizes[ext.current])
        except OSError as e:  # the torn tail is cut again by the CRC check when the segment is read
            log.error("cannot cut segment %d back to %d bytes after a failed write: %s",
                      ext.current, ext.sizes[ext.current], e)

    def roll(self) -> None:
        """Continue in a new segment. The new file is created first: when that fails (no inode or
        file descriptor left), nothing has changed and appends go on in the current segment once
        the error passes. (Closing the old segment first, as before, left the appender with a closed
        descriptor and a segment of no size: the flusher thread ended on a KeyError, and every
        request after it waited for ever for its fsync.)"""
        ext = self.extent
        fd = self.files.create(ext.current + 1)
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            except OSError:
                os.close(fd)
                raise
            os.close(self._fd)
        self._fd = fd
        with ext.cond:
            ext.current += 1
            ext.sizes[ext.current] = 0
        self.files.sync()
