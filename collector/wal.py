"""The durable buffer: an append-only, segmented write-ahead log with group commit.

A record is ``<u32 length><u32 crc32><u8 kind><u32 items>`` followed by ``length`` payload bytes;
the CRC covers kind, items and payload. Segments are files named by a sequence number; a new
segment starts when the current one passes ``segment_bytes``. A position is ``(segment, offset)``.

``append`` queues a record and returns at once; one flusher thread writes everything queued,
calls ``fdatasync`` once for the lot (group commit) and then reports each record's position to
its callback. Nothing is acknowledged before that fsync. On open, a torn tail (a record cut by a
crash, never acknowledged) is truncated away and appends continue in a fresh segment.

The writer reads records back with ``read`` (only up to the durable end), and ``release``-s
what it has stored; ``delete_before`` removes fully-written segments.

One process at a time: ``open`` takes an exclusive lock on ``DIR/lock`` (``flock``, released when
the process ends, however it ends) and raises :class:`WalLocked` if another process holds it. Two
collectors on one directory would delete each other's segments and store batches twice.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable

from .errors import CollectorError

__all__ = ["Wal", "Record", "WalClosed", "WalLocked", "DIGESTED", "DIGEST_BYTES"]

log = logging.getLogger("tracehouse.collector.wal")

_HEADER = struct.Struct("<IIBI")
_READ_CHUNK = 4 << 20
_SUFFIX = ".wal"
Pos = tuple[int, int]
Callback = Callable[[Pos | None, BaseException | None], None]


class WalClosed(CollectorError):
    """The WAL is closed (shutting down); the record was not written."""


#: A record kind with this bit set carries the digest of its request (``DIGEST_BYTES``) before the
#: message; the receiver uses it to recognise a retried request (``dedup.py``).
DIGESTED = 0x80
DIGEST_BYTES = 16
class WalLocked(CollectorError, RuntimeError):
    """Another process is using this buffer directory."""


class Record:
    __slots__ = ("pos", "end", "kind", "items", "payload")

    def __init__(self, pos: Pos, end: Pos, kind: int, items: int, payload: bytes):
        self.pos, self.end, self.kind, self.items, self.payload = pos, end, kind, items, payload

    @property
    def signal(self) -> int:
        """The signal code (``decode.SIGNALS``)."""
        return self.kind & ~DIGESTED

    @property
    def message(self) -> bytes:
        """The serialized OTLP request."""
        return self.payload[DIGEST_BYTES:] if self.kind & DIGESTED else self.payload

    @property
    def digest(self) -> bytes | None:
        return self.payload[:DIGEST_BYTES] if self.kind & DIGESTED else None


def _crc(kind: int, items: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<BI", kind, items)))


def encode(kind: int, items: int, payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), _crc(kind, items, payload), kind, items) + payload


def scan(data: bytes) -> tuple[list[tuple[int, int, int, int, int]], int]:
    """Valid records at the start of ``data``: (offset, end, kind, items, payload offset); and the
    offset of the end of the last valid record."""
    out = []
    off, n = 0, len(data)
    hs = _HEADER.size
    while off + hs <= n:
        length, crc, kind, items = _HEADER.unpack_from(data, off)
        end = off + hs + length
        if end > n or _crc(kind, items, data[off + hs:end]) != crc:
            break
        out.append((off, end, kind, items, off + hs))
        off = end
    return out, off


class Wal:
    def __init__(self, directory: str, segment_bytes: int = 64 << 20):
        self.dir = directory
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._durable = threading.Condition(threading.Lock())
        self._queue: list[tuple[bytes, Callback]] = []
        self._queued_bytes = 0
        self._sizes: dict[int, int] = {}  # segment → durable size
        self._seg = 0
        self._fd = -1
        self._lock_fd = -1
        self._released: Pos = (0, 0)
        self._ages: deque[list] = deque()  # [end pos, monotonic time of the first record up to it]
        self._thread: threading.Thread | None = None
        self._closing = False
        self.closed = True
        self.ident = ""  # random, created with the directory: part of every batch id
        self.fsyncs = 0
        self.records = 0
        self._digests: dict[int, list[bytes]] = {}  # segment → digests of its records
        #: called with a segment's digests before the segment is deleted (see ``dedup.py``)
        self.on_delete: Callable[[list[bytes]], None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        self._lock_dir()
        self.ident = self._identity()
        for seq in self.segments():
            path = self._path(seq)
            with open(path, "rb") as f:
                data = f.read()
            found, valid = scan(data)
            self._digests[seq] = [data[at:at + DIGEST_BYTES] for _, _, kind, _, at in found if kind & DIGESTED]
            if valid < len(data):
                log.warning("WAL segment %s: truncating a torn tail of %d bytes", path, len(data) - valid)
                with open(path, "r+b") as f:
                    f.truncate(valid)
                    os.fsync(f.fileno())
            self._sizes[seq] = valid
        self._seg = max(self._sizes, default=0)
        self._roll()
        if self._sizes and sum(self._sizes.values()):
            self._ages.append([self.durable_end, time.monotonic()])
        self.closed = False
        self._closing = False

    def start(self) -> None:
        if self.closed:
            self.open()
        self._thread = threading.Thread(target=self._run, name="tracehouse-wal-flusher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write and fsync everything queued, then close."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._durable:
            self._durable.notify_all()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.closed = True
        self._unlock_dir()

    def _lock_dir(self) -> None:
        if self._lock_fd >= 0:
            return
        path = os.path.join(self.dir, "lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise WalLocked(f"the buffer directory {self.dir} is in use by another process (pid {holder}); "
                            "every collector needs a directory of its own (TRACEHOUSE_BUFFER_DIR)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._lock_fd = fd

    def _unlock_dir(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    # -- appending ----------------------------------------------------------------------------
    def digests(self) -> list[bytes]:
        """The digests of every record in the log (read at open, added by appends)."""
        with self._durable:
            return [d for seg in sorted(self._digests) for d in self._digests[seg]]

    def append(self, kind: int, items: int, payload: bytes, callback: Callback, digest: bytes | None = None) -> None:
        """Queue a record; ``callback(pos, err)`` once it is durable (or failed). With ``digest``
        (``DIGEST_BYTES`` long), the record carries it before the payload."""
        if digest is not None:
            if len(digest) != DIGEST_BYTES:
                raise ValueError("bad digest length")
            rec = encode(kind | DIGESTED, items, digest + payload)
        else:
            rec = encode(kind, items, payload)
        with self._cond:
            if self._closing or self.closed:
                raise WalClosed("the buffer is closed")
            self._queue.append((rec, callback))
            self._queued_bytes += len(rec)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                batch, self._queue = self._queue, []
                self._queued_bytes = 0
                closing = self._closing
            if batch:
                self._commit(batch)
            if closing and not batch:
                return

    def _commit(self, batch: list[tuple[bytes, Callback]]) -> None:
        positions: list[Pos] = []
        try:
            if self._sizes[self._seg] >= self.segment_bytes:
                self._roll()
            seg, off = self._seg, self._sizes[self._seg]
            for rec, _ in batch:
                positions.append((seg, off))
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
        hs = _HEADER.size
        digests = [rec[hs:hs + DIGEST_BYTES] for rec, _ in batch if rec[8] & DIGESTED]
        with self._durable:
            self._sizes[seg] = off
            if digests:
                self._digests.setdefault(seg, []).extend(digests)
            if self._ages and now - self._ages[-1][1] < 0.1:
                self._ages[-1][0] = (seg, off)
            else:
                self._ages.append([(seg, off), now])
            self._durable.notify_all()
        for (_, cb), pos in zip(batch, positions, strict=True):
            cb(pos, None)

    def _recover_after_error(self) -> None:
        # A failed write may have left part of a record: cut the file back to its durable size.
        try:
            os.ftruncate(self._fd, self._sizes[self._seg])
        except OSError as e:  # the torn tail is cut again by the CRC check when the segment is read
            log.error("cannot cut segment %d back to %d bytes after a failed write: %s",
                      self._seg, self._sizes[self._seg], e)

    def _roll(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
        self._seg += 1
        self._fd = os.open(self._path(self._seg), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._sizes[self._seg] = 0
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # -- reading ------------------------------------------------------------------------------
    @property
    def durable_end(self) -> Pos:
        return (self._seg, self._sizes.get(self._seg, 0))

    def normalize(self, pos: Pos) -> Pos:
        """The same place in the log, moved past segments read to their end: the end of a full
        segment and the start of the next (empty) one compare equal to ``durable_end`` only
        this way. A reader that compared the old form would see data that is not there."""
        seg, off = pos
        with self._durable:
            while seg < self._seg:
                size = self._sizes.get(seg)
                if size is not None and off < size:
                    break
                later = [s for s in self._sizes if s > seg]
                if not later:
                    break
                seg, off = min(later), 0
        return (seg, off)

    def wait_durable(self, beyond: Pos, timeout: float) -> bool:
        """Wait until there is durable data past ``beyond``."""
        with self._durable:
            if self.durable_end > beyond or self.closed:
                return self.durable_end > beyond
            self._durable.wait(timeout)
            return self.durable_end > beyond

    def read(self, start: Pos, max_items: int, max_bytes: int) -> list[Record]:
        """Durable records from ``start`` on, up to roughly ``max_items`` items and ``max_bytes``."""
        out: list[Record] = []
        seg, off = start
        items = size = 0
        while items < max_items and size < max_bytes:
            sizes = dict(self._sizes)
            if seg not in sizes:
                later = [s for s in sizes if s > seg]
                if not later:
                    break
                seg, off = min(later), 0
                continue
            limit = sizes[seg]
            if off >= limit:
                if seg >= self._seg:
                    break
                later = [s for s in sizes if s > seg]
                if not later:
                    break
                seg, off = min(later), 0
                continue
            with open(self._path(seg), "rb") as f:
                f.seek(off)
                data = f.read(min(limit - off, _READ_CHUNK))
                length = _HEADER.unpack_from(data, 0)[0] if len(data) >= _HEADER.size else 0
                if _HEADER.size + length > len(data):  # one record bigger than the chunk
                    data += f.read(_HEADER.size + length - len(data))
            # Parse only as many records as asked for: the CRC is the cost, not the read.
            p, n = 0, len(data)
            hs = _HEADER.size
            while p + hs <= n and items < max_items and size < max_bytes:
                length, crc, kind, k = _HEADER.unpack_from(data, p)
                e = p + hs + length
                if e > n:
                    break
                payload = data[p + hs:e]
                if _crc(kind, k, payload) != crc:
                    raise OSError(f"WAL segment {seg} is corrupt at offset {off + p}")
                out.append(Record((seg, off + p), (seg, off + e), kind, k, payload))
                items += k
                size += e - p
                p = e
            if p == 0:
                raise OSError(f"WAL segment {seg} is corrupt at offset {off}")
            off += p
        return out

    def release(self, upto: Pos) -> None:
        """Everything before ``upto`` is stored; it no longer counts against the cap."""
        with self._durable:
            self._released = upto
            while self._ages and self._ages[0][0] <= upto:
                self._ages.popleft()

    def delete_before(self, upto: Pos) -> int:
        """Delete segments wholly before ``upto`` (never the one being appended to)."""
        n = 0
        for seq in self.segments():
            if seq < upto[0] and seq < self._seg:
                with self._durable:
                    digests = self._digests.pop(seq, [])
                if digests and self.on_delete is not None:
                    try:
                        self.on_delete(digests)  # durable elsewhere before the segment goes
                    except OSError as e:  # keep the segment (and its digests) for the next attempt
                        log.error("cannot journal the digests of WAL segment %d, keeping it: %s", seq, e)
                        with self._durable:
                            self._digests[seq] = digests
                        continue
                try:
                    os.unlink(self._path(seq))
                except FileNotFoundError:
                    pass
                with self._durable:
                    self._sizes.pop(seq, None)
                n += 1
        return n

    # -- accounting ---------------------------------------------------------------------------
    def pending_bytes(self) -> int:
        """Bytes not yet stored: durable but unreleased, plus queued for the next fsync."""
        seg, off = self._released
        total = sum(size for s, size in list(self._sizes.items()) if s >= seg)
        if seg in self._sizes:
            total -= min(off, self._sizes[seg])
        return total + self._queued_bytes

    def oldest_age(self) -> float:
        ages = self._ages
        try:
            return max(0.0, time.monotonic() - ages[0][1]) if ages else 0.0
        except IndexError:
            return 0.0

    def _identity(self) -> str:
        path = os.path.join(self.dir, "wal.id")
        try:
            with open(path, encoding="ascii") as f:
                ident = f.read().strip()
            if ident:
                return ident
        except FileNotFoundError:
            pass
        ident = os.urandom(12).hex()
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(ident)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return ident

    def segments(self) -> list[int]:
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(_SUFFIX) and name[: -len(_SUFFIX)].isdigit():
                out.append(int(name[: -len(_SUFFIX)]))
        return sorted(out)

    def _path(self, seq: int) -> str:
        return os.path.join(self.dir, f"{seq:016d}{_SUFFIX}")
