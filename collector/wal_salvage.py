"""Corruption in the middle of a WAL segment, found when the segment is opened.

A crash can only cut the end of a segment (a torn tail: never acknowledged, truncated away). Bytes
changed further in (a bad sector, a stray write) break one record, and the acknowledged records
after it are intact. Before, the first bad record was taken for a torn tail: it and everything
after it were truncated away. Now each damaged range followed by valid records is copied to
``<buffer dir>/corrupt/<segment>-<offset>.bin`` for the operator, and replaced in the segment by
a filler record of the same size (kind 0, no items: the writer skips it), so every position (the
checkpoint's among them) stays where it was; only what is left after the last valid record is a
torn tail. A valid record is one whose CRC matches from the directory's seed (``wal_format.py``):
bytes shaped as a record inside a client's request do not, as no client knows the seed.
"""

from __future__ import annotations

import logging
import os
import re

from .wal_format import HEADER, crc, encode, scan

__all__ = ["FILLER", "salvage"]

log = logging.getLogger("tracehouse.collector.wal")

#: The kind of a record that replaces a damaged range (no signal has it: the writer skips it).
FILLER = 0

# where a record may start: a length under 64 MiB (the fourth byte 0-3) and a signal's kind byte
# (1-3, with or without the digest bit); each candidate is then checked in full, CRC included
_CANDIDATE = re.compile(rb"(?=[\x00-\xff]{3}[\x00-\x03][\x00-\xff]{4}[\x01-\x03\x81-\x83])", re.S)


def _resync(data: bytearray, start: int, seed: int) -> int | None:
    """The first offset past ``start`` (at least a header further) where a valid record starts."""
    n, hs = len(data), HEADER.size
    length = HEADER.unpack_from(data, start)[0] if start + hs <= n else n
    # a record whose payload alone is damaged: the next one starts where its header says
    end = start + hs + length
    if end + hs <= n and _valid_at(data, end, seed):
        return end
    for m in _CANDIDATE.finditer(data, start + hs):
        if _valid_at(data, m.start(), seed):
            return m.start()
    return None


def _valid_at(data: bytearray, p: int, seed: int) -> bool:
    hs = HEADER.size
    if p + hs > len(data):
        return False
    length, c, kind, items = HEADER.unpack_from(data, p)
    end = p + hs + length
    return end <= len(data) and crc(kind, items, bytes(data[p + hs:end]), seed) == c


def salvage(path: str, data: bytearray, seed: int = 0) -> int:
    """Replace the damaged ranges of segment ``path`` (read into ``data``, its records' CRCs
    seeded with ``seed``) that valid records follow, in ``data`` and in the file, keeping a copy
    of each; returns the valid size."""
    _, valid = scan(data, seed)
    while valid < len(data):
        nxt = _resync(data, valid, seed)
        if nxt is None:
            break
        keep = os.path.join(os.path.dirname(path), "corrupt",
                            f"{os.path.basename(path).removesuffix('.wal')}-{valid}.bin")
        os.makedirs(os.path.dirname(keep), exist_ok=True)
        with open(keep, "wb") as f:
            f.write(data[valid:nxt])
            f.flush()
            os.fsync(f.fileno())
        filler = encode(FILLER, 0, bytes(nxt - valid - HEADER.size), seed)
        with open(path, "r+b") as f:
            f.seek(valid)
            f.write(filler)
            f.flush()
            os.fsync(f.fileno())
        data[valid:nxt] = filler
        log.error("WAL segment %s: %d damaged bytes at offset %d, followed by valid records; the bytes are kept "
                  "in %s and the records after them stored", path, nxt - valid, valid, keep)
        _, valid = scan(data, seed)
    return valid
