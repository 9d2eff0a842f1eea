"""The buffer directory's key: the seed of its records' CRCs (``wal_format.py``), in ``DIR/wal.key``.

``<32 hex digits> <first segment>``: 16 random bytes, created with the directory (or by the first
run of a version that has them, on a directory of an earlier one), and the first segment whose
records are seeded. Segments before it were written before the key existed (CRC from 0): they are
read as they were written, so a buffer left by an earlier version is still stored after an upgrade.
The key is never sent anywhere: a client that does not know it cannot make the CRC of bytes shaped
as a record inside its request match, so salvage never takes them for a record. A damaged key file
stops the collector with a clear error rather than reading the log without it (every seeded record
would then fail its CRC and be cut away as a torn tail).
"""

from __future__ import annotations

import errno
import os
import zlib

__all__ = ["load_or_create"]

_NAME = "wal.key"


def load_or_create(directory: str, segments: list[int]) -> tuple[int, int]:
    """(seed, first seeded segment) of the directory; ``segments``: those it holds now (a key
    created now seeds only the segments after them: the log continues in a new one at open)."""
    path = os.path.join(directory, _NAME)
    try:
        with open(path, "rb") as f:
            raw = f.read(200)
    except FileNotFoundError:
        seeded = _written_with_a_key(directory, segments)
        if seeded is not None:
            raise OSError(errno.ENOENT, f"the WAL key is missing, but segment {seeded} was written with one (or its "
                          "first record is damaged): without the key its records cannot be checked and would be "
                          "cut away, so the buffer is not read (restore the key, or move the segments away to start "
                          "empty)", path) from None
        return _create(path, max(segments, default=0) + 1)
    try:
        salt_hex, first = raw.decode("ascii").split()
        salt = bytes.fromhex(salt_hex)
        if len(salt) != 16:
            raise ValueError(f"{len(salt)} bytes of key")
        return _seed(salt), int(first)
    except ValueError as e:
        raise OSError(errno.EINVAL, f"the WAL key is damaged ({e}); without it the buffer's records cannot "
                      "be checked, so it is not read", path) from None


def _written_with_a_key(directory: str, segments: list[int]) -> int | None:
    """The first of ``segments`` whose first record does not check from seed 0: written with a key
    that is gone (deleted by hand, lost in a copy), whose records would all be taken for a torn tail
    and cut away if a new key were made; None when every segment is empty or from before keys."""
    from .wal_format import HEADER, crc

    for seq in segments:
        with open(os.path.join(directory, f"{seq:016d}.wal"), "rb") as f:
            head = f.read(HEADER.size)
            if len(head) < HEADER.size:
                continue  # empty, or a header cut short: a torn tail either way
            length, c, kind, items = HEADER.unpack(head)
            payload = f.read(min(length, 1 << 30))
        if len(payload) == length and crc(kind, items, payload) != c:
            return seq
    return None


def _create(path: str, first: int) -> tuple[int, int]:
    salt = os.urandom(16)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{salt.hex()} {first}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return _seed(salt), first


def _seed(salt: bytes) -> int:
    return zlib.crc32(salt) or 1  # 0 is the seed of records written before the key
