"""The WAL's record format and positions (what is on disk; no files, no threads).

A record is ``<u32 length><u32 crc32><u8 kind><u32 items>`` followed by ``length`` payload bytes;
the CRC covers kind, items and payload, and starts from the buffer directory's ``seed`` (random,
``wal_dir.py``; 0 in segments written before it existed, and in dead-letter files). A client's
request may contain bytes shaped as a record (its payload is the client's protobuf, bytes values
and all); when damage makes salvage look for the next record inside it (``wal_salvage.py``), such
bytes were taken for a record of their own and stored. Without the seed, no client can make their
CRC match. A position is ``Pos(segment, offset)``: a tuple, so it
orders, compares and serializes (checkpoint files) exactly as the ``(segment, offset)`` pair.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

__all__ = ["Pos", "Record", "DIGESTED", "DIGEST_BYTES", "HEADER", "KIND_AT", "crc", "encode", "scan"]

HEADER = struct.Struct("<IIBI")
#: where the kind byte is in an encoded record
KIND_AT = 8

#: A record kind with this bit set carries the digest of its request (``DIGEST_BYTES``) before the
#: message; the receiver uses it to recognise a retried request (``dedup.py``).
DIGESTED = 0x80
DIGEST_BYTES = 16


class Pos(NamedTuple):
    """A place in the log: a segment's sequence number and a byte offset in it."""

    segment: int
    offset: int

    def __str__(self) -> str:  # logs read as before: (segment, offset)
        return f"({self.segment}, {self.offset})"


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


def crc(kind: int, items: int, payload: bytes | bytearray, seed: int = 0) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<BI", kind, items), seed))


def encode(kind: int, items: int, payload: bytes, seed: int = 0) -> bytes:
    return HEADER.pack(len(payload), crc(kind, items, payload, seed), kind, items) + payload


def scan(data: bytes | bytearray, seed: int = 0) -> tuple[list[tuple[int, int, int, int, int]], int]:
    """Valid records at the start of ``data``: (offset, end, kind, items, payload offset); and the
    offset of the end of the last valid record."""
    out = []
    off, n = 0, len(data)
    hs = HEADER.size
    while off + hs <= n:
        length, c, kind, items = HEADER.unpack_from(data, off)
        end = off + hs + length
        if end > n or crc(kind, items, data[off + hs:end], seed) != c:
            break
        out.append((off, end, kind, items, off + hs))
        off = end
    return out, off
