"""The durable buffer: an append-only, segmented write-ahead log with group commit.

This is the façade the collector uses; each concern reads on its own in a module of its own:

- ``wal_format.py``: the record format (``<u32 length><u32 crc32><u8 kind><u32 items>`` + payload,
  the CRC over kind, items and payload) and positions, ``Pos(segment, offset)``;
- ``wal_dir.py``: the segment files (named by a sequence number), the one-process lock, the identity,
  the key (the seed of the records' CRCs);
- ``wal_append.py``: group commit: ``append`` queues a record and returns at once; one flusher
  thread writes everything queued, calls ``fdatasync`` once for the lot and then reports each
  record's position to its callback. Nothing is acknowledged before that fsync;
- ``wal_extent.py``: what is durable, and what of it the writer has not stored (the cap's figures);
- ``wal_read.py``: reading durable records back from a position.

On open, a torn tail (a record cut by a crash, never acknowledged) is truncated away and appends
continue in a fresh segment; damage in the middle of a segment is set aside and the records after
it kept (``wal_salvage.py``). The writer reads records back with ``read`` (only up to the durable
end), and ``release``-s what it has stored; ``delete_before`` removes fully-written segments.

One process at a time: ``open`` takes an exclusive lock on ``DIR/lock`` and raises
:class:`WalLocked` if another process holds it (``wal_dir.py``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from .wal_append import Appender, Callback, WalClosed
from .wal_dir import SegmentDir, WalLocked, WalUnusable
from .wal_extent import Extent
from .wal_format import DIGEST_BYTES, DIGESTED, Pos, Record, encode, scan
from .wal_read import Reader

__all__ = ["Wal", "Record", "WalClosed", "WalLocked", "WalUnusable", "DIGESTED", "DIGEST_BYTES"]
# also importable from here, as before the split: the format (deadletter.py) and the position type
__all__ += ["Pos", "Callback", "encode", "scan"]

log = logging.getLogger("tracehouse.collector.wal")


class Wal:
    def __init__(self, directory: str, segment_bytes: int = 64 << 20):
        self.dir = directory
        self.segment_bytes = segment_bytes
        self._files = SegmentDir(directory)
        self._extent = Extent()
        self._appender = Appender(self._files, self._extent, segment_bytes)
        self._reader = Reader(self._files, self._extent)
        self.ident = ""  # random, created with the directory: part of every batch id
        #: the end of the log when it was opened, until a writer has checked its checkpoint against it
        self.opened_end: Pos | None = None
        #: called with a segment's digests before the segment is deleted (see ``dedup.py``)
        self.on_delete: Callable[[list[bytes]], None] | None = None

    @property
    def closed(self) -> bool:
        return self._appender.closed

    @property
    def fsyncs(self) -> int:
        return self._appender.fsyncs

    @property
    def records(self) -> int:
        return self._appender.records

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> None:
        try:
            self._open()
        except OSError as e:
            self._files.unlock()
            raise WalUnusable(f"the buffer directory {self.dir} cannot be used (TRACEHOUSE_BUFFER_DIR): "
                              f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}") from e

    def _open(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        self._files.lock()
        self.ident = self._files.identity()
        self._files.load_key()
        ext = self._extent
        for seq in self.segments():
            ext.sizes[seq], ext.digests[seq] = self._files.recover(seq)
        ext.current = max(ext.sizes, default=0)
        self._appender.roll()
        self.opened_end = ext.end  # a checkpoint past this refers to segments that are gone
        if ext.sizes and sum(ext.sizes.values()):
            ext.ages.append([self.durable_end, time.monotonic()])
        self._appender.opened()

    def start(self) -> None:
        if self.closed:
            self.open()
        self._appender.start()

    def renew_identity(self) -> None:
        """A new identity, so that batch ids of records at positions the log used before differ."""
        self.ident = self._files.identity(renew=True)

    def stop(self, timeout: float = 10.0) -> None:
        """Write and fsync everything queued, then close."""
        self._appender.stop(timeout)
        self._files.unlock()

    # -- appending ----------------------------------------------------------------------------
    def digests(self) -> list[bytes]:
        """The digests of every record in the log (read at open, added by appends)."""
        return self._extent.all_digests()

    def append(self, kind: int, items: int, payload: bytes, callback: Callback, digest: bytes | None = None) -> None:
        """Queue a record; ``callback(pos, err)`` once it is durable (or failed). With ``digest``
        (``DIGEST_BYTES`` long), the record carries it before the payload."""
        if digest is not None:
            if len(digest) != DIGEST_BYTES:
                raise ValueError("bad digest length")
            rec = encode(kind | DIGESTED, items, digest + payload, self._files.seed)
        else:
            rec = encode(kind, items, payload, self._files.seed)
        self._appender.append(rec, callback)

    # -- reading ------------------------------------------------------------------------------
    @property
    def durable_end(self) -> Pos:
        return self._extent.end

    def normalize(self, pos: Pos) -> Pos:
        """The same place in the log, moved past segments read to their end (``wal_read.py``)."""
        return self._reader.normalize(pos)

    def wait_durable(self, beyond: Pos, timeout: float) -> bool:
        """Wait until there is durable data past ``beyond``."""
        return self._reader.wait(beyond, timeout, lambda: self.closed)

    def read(self, start: Pos, max_items: int, max_bytes: int) -> list[Record]:
        """Durable records from ``start`` on, up to roughly ``max_items`` items and ``max_bytes``."""
        return self._reader.read(start, max_items, max_bytes)

    def release(self, upto: Pos) -> None:
        """Everything before ``upto`` is stored; it no longer counts against the cap."""
        self._extent.release(upto)

    def delete_before(self, upto: Pos) -> int:
        """Delete segments wholly before ``upto`` (never the one being appended to)."""
        ext = self._extent
        n = 0
        for seq in self.segments():
            if seq < upto[0] and seq < ext.current:
                with ext.cond:
                    digests = ext.digests.pop(seq, [])
                if digests and self.on_delete is not None:
                    try:
                        self.on_delete(digests)  # durable elsewhere before the segment goes
                    except OSError as e:  # keep the segment (and its digests) for the next attempt
                        log.error("cannot journal the digests of WAL segment %d, keeping it: %s", seq, e)
                        with ext.cond:
                            ext.digests[seq] = digests
                        continue
                self._files.remove(seq)
                with ext.cond:
                    ext.sizes.pop(seq, None)
                n += 1
        return n

    # -- accounting ---------------------------------------------------------------------------
    def pending_bytes(self) -> int:
        """Bytes not yet stored: durable but unreleased, plus queued for the next fsync."""
        return self._extent.unreleased_bytes() + self._appender.queued_bytes

    def oldest_age(self) -> float:
        return self._extent.oldest_age()

    def segments(self) -> list[int]:
        return self._files.segments()

    def _path(self, seq: int) -> str:
        return self._files.path(seq)
