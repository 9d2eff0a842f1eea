"""The WAL's directory: segment files named by sequence number, the one-process lock, the identity.

One process at a time: ``lock`` takes an exclusive lock on ``DIR/lock`` (``flock``, released when
the process ends, however it ends) and raises :class:`WalLocked` if another process holds it. Two
collectors on one directory would delete each other's segments and store batches twice.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os

from .errors import CollectorError
from .wal_format import DIGEST_BYTES, DIGESTED, scan
from .wal_key import load_or_create
from .wal_salvage import salvage

__all__ = ["SegmentDir", "WalLocked", "WalUnusable"]

log = logging.getLogger("tracehouse.collector.wal")

_SUFFIX = ".wal"


class WalLocked(CollectorError, RuntimeError):
    """Another process is using this buffer directory."""


class WalUnusable(CollectorError, RuntimeError):
    """The buffer directory cannot be created, locked or read at start (read-only, not a
    directory, no space): the collector stops with this one line instead of a traceback."""


class SegmentDir:
    def __init__(self, directory: str):
        self.dir = directory
        self._lock_fd = -1
        #: the seed of the CRCs of records written now, and the first segment written with it (``wal_key.py``)
        self.seed = 0
        self.first_seeded = 0

    def load_key(self) -> None:
        self.seed, self.first_seeded = load_or_create(self.dir, self.segments())

    def seed_of(self, seq: int) -> int:
        """The seed of the CRCs of segment ``seq``'s records (0: written before the key)."""
        return self.seed if seq >= self.first_seeded else 0

    def lock(self) -> None:
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

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def identity(self, renew: bool = False) -> str:
        """Random, created with the directory: part of every batch id. ``renew``: a new one (the
        segments the old one numbered are gone, and new records will take their positions)."""
        path = os.path.join(self.dir, "wal.id")
        try:
            with open(path, encoding="ascii") as f:
                ident = f.read().strip()
            if ident and not renew:
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

    def recover(self, seq: int) -> tuple[int, list[bytes]]:
        """Segment ``seq`` at open: its valid size, a torn tail (a record cut by a crash, never
        acknowledged) truncated away; and the digests of its records."""
        path = self.path(seq)
        with open(path, "rb") as f:
            data = f.read()
        seed = self.seed_of(seq)
        found, valid = scan(data, seed)
        if valid < len(data):  # damage in the middle (valid records after it) is not a torn tail
            repaired = bytearray(data)
            salvage(path, repaired, seed)
            data = bytes(repaired)
            found, valid = scan(data, seed)
        digests = [data[at:at + DIGEST_BYTES] for _, _, kind, _, at in found if kind & DIGESTED]
        if valid < len(data):
            log.warning("WAL segment %s: truncating a torn tail of %d bytes", path, len(data) - valid)
            with open(path, "r+b") as f:
                f.truncate(valid)
                os.fsync(f.fileno())
        return valid, digests

    def create(self, seq: int) -> int:
        """Segment ``seq`` opened for appending (created if new); returns the fd. Its directory
        entry is durable after ``sync``."""
        return os.open(self.path(seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def sync(self) -> None:
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def remove(self, seq: int) -> None:
        try:
            os.unlink(self.path(seq))
        except FileNotFoundError:
            pass

    def segments(self) -> list[int]:
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(_SUFFIX) and name[: -len(_SUFFIX)].isdigit():
                out.append(int(name[: -len(_SUFFIX)]))
        return sorted(out)

    def path(self, seq: int) -> str:
        return os.path.join(self.dir, f"{seq:016d}{_SUFFIX}")
