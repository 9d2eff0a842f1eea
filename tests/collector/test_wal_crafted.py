"""A client's request that carries bytes shaped as a WAL record (header, payload, a CRC of its own)
must not become a record of its own when the record around it is damaged: salvage looks for the
next valid record inside the damaged range, and before, it found the crafted one there and stored
it (spans the client never sent as such, here under another service name). Now a record's CRC is
seeded with a random key of the buffer directory, which no client knows."""

from __future__ import annotations

import os
import struct
import threading

import pytest

from tests.collector.payloads import traces
from tests.collector.test_wal_damage import acknowledged_then_killed, restart_on
from tracehouse.collector.wal import Wal, WalUnusable
from tracehouse.collector.wal_format import HEADER, Pos, encode, scan
from tracehouse.storage import Store


def _boundaries(data: bytes) -> list[int]:
    """Where the records of a segment start, by their length fields alone (no CRC: the test does
    not need the buffer's key to find them)."""
    out, off = [], 0
    while off + HEADER.size <= len(data):
        out.append(off)
        off += HEADER.size + struct.unpack_from("<I", data, off)[0]
    assert off == len(data)
    return out


def _services(storage: str) -> set[str]:
    store = Store.open(storage)
    try:
        return {r[0] for r in store.query(f"SELECT DISTINCT service FROM {store.db}.spans").rows}
    finally:
        store.close()


def test_a_record_crafted_inside_a_request_is_not_salvaged_as_a_record(tmp_path):
    storage, buf = f"chdb://{tmp_path}/data", str(tmp_path / "buffer")
    env = {"TRACEHOUSE_OTLP_GRPC_PORT": "0"}
    inner, inner_ids = traces(3, service="victim")
    crafted = encode(1, 3, inner.SerializeToString())  # kind 1: traces, three items, a valid CRC
    carrier, carrier_ids = traces(20, service="attacker")
    carrier.resource_spans[0].scope_spans[0].spans[5].attributes.add(key="blob").value.bytes_value = crafted
    before, before_ids = traces(20, service="honest")
    after, after_ids = traces(20, service="honest")
    seg, data = acknowledged_then_killed(storage, buf, env, [before, carrier, after])
    starts = _boundaries(bytes(data))
    assert len(starts) == 3
    assert data.find(crafted) > starts[1]  # the crafted record lies whole inside the carrier's record
    data[starts[1] + 3] = 0x7F  # the carrier's length damaged: it now runs past the end of the segment
    counts = restart_on(seg, data, storage, buf, env, 40)
    assert not {i.hex() for i in inner_ids} & set(counts), "the crafted record was stored"
    assert _services(storage) == {"honest"}
    assert set(counts) == {i.hex() for i in before_ids + after_ids}
    assert set(counts.values()) == {1}
    assert not {i.hex() for i in carrier_ids} & set(counts)


def _append(wal, n: int, tag: bytes) -> None:
    done, errs = threading.Semaphore(0), []
    for i in range(n):
        wal.append(1, 1, tag + bytes([i]), lambda _pos, err: (errs.append(err), done.release()))
    for _ in range(n):
        assert done.acquire(timeout=10)
    assert errs == [None] * n


def test_a_buffer_written_before_the_key_is_read_after_an_upgrade(tmp_path):
    """Segments written before the key existed (no ``wal.key``, CRCs from 0) are read as they
    were, damage in them salvaged as before; records appended after the upgrade are seeded."""
    d = str(tmp_path)
    old = b"".join(encode(1, 1, b"old" + bytes([i])) for i in range(3))
    with open(os.path.join(d, f"{1:016d}.wal"), "wb") as f:
        f.write(old + b"\x07\x00")  # and a torn tail
    wal = Wal(d)
    wal.start()
    try:
        _append(wal, 2, b"new")
        assert [r.payload for r in wal.read(Pos(0, 0), 100, 1 << 20)] == [b"old\0", b"old\1", b"old\2",
                                                                         b"new\0", b"new\1"]
    finally:
        wal.stop()
    (new,) = [s for s in wal.segments() if s > 1]
    with open(os.path.join(d, f"{new:016d}.wal"), "rb") as f:
        assert scan(f.read()) == ([], 0)  # seeded: no record of it checks from 0
    with open(os.path.join(d, f"{1:016d}.wal"), "r+b") as f:  # damage the old segment's first record
        f.seek(HEADER.size)
        f.write(b"X")
    wal = Wal(d)
    wal.start()
    try:
        assert [r.payload for r in wal.read(Pos(0, 0), 100, 1 << 20) if r.kind] == [b"old\1", b"old\2",
                                                                                  b"new\0", b"new\1"]
    finally:
        wal.stop()


def test_a_damaged_key_stops_the_buffer_with_a_clear_error(tmp_path):
    d = str(tmp_path)
    wal = Wal(d)
    wal.start()
    _append(wal, 1, b"x")
    wal.stop()
    with open(os.path.join(d, "wal.key"), "wb") as f:
        f.write(b"\0" * 40)
    with pytest.raises(WalUnusable, match="WAL key is damaged"):
        Wal(d).open()
    assert os.path.getsize(os.path.join(d, f"{max(wal.segments()):016d}.wal")) > 0  # nothing cut away


def test_a_missing_key_beside_segments_written_with_one_stops_the_buffer_and_cuts_nothing(tmp_path):
    """A key deleted by hand (or left behind by a copy of the segments alone) made a new key, under
    which every record of the segments written with the old one failed its CRC and was cut away as
    a torn tail: the buffered data was lost without a word."""
    d = str(tmp_path)
    wal = Wal(d)
    wal.start()
    _append(wal, 3, b"x")
    wal.stop()
    sizes = {s: os.path.getsize(os.path.join(d, f"{s:016d}.wal")) for s in wal.segments()}
    assert sum(sizes.values()) > 0
    os.remove(os.path.join(d, "wal.key"))
    with pytest.raises(WalUnusable, match="WAL key is missing"):
        Wal(d).open()
    assert {s: os.path.getsize(os.path.join(d, f"{s:016d}.wal")) for s in sizes} == sizes  # nothing cut away
    assert not os.path.exists(os.path.join(d, "wal.key"))
