"""Bytes changed in the middle of a WAL segment between two runs (a bad sector, a stray write): a
``tracehouse collector`` killed before storing what it acknowledged restarts on the damaged
segment, keeps the damaged bytes aside, and stores every acknowledged request but the damaged
one, once; before, the first bad record was taken for a torn tail and the intact records after
it were truncated away."""

from __future__ import annotations

import glob
import os

import pytest

from tests.collector.harness import start_collector_process
from tests.collector.load import stored_span_counts
from tests.collector.payloads import traces
from tests.support import oneshot
from tests.support.waiting import wait_for
from tracehouse.collector.wal_format import scan
from tracehouse.collector.wal_key import load_or_create


@pytest.mark.parametrize("where", ["payload", "length"])
def test_damage_in_the_middle_of_a_segment_loses_only_the_damaged_record(tmp_path, where):
    storage, buf = f"chdb://{tmp_path}/data", str(tmp_path / "buffer")
    env = {"TRACEHOUSE_OTLP_GRPC_PORT": "0"}
    requests = [traces(50) for _ in range(4)]
    acked = [ids for _, ids in requests]
    seg, data = acknowledged_then_killed(storage, buf, env, [req for req, _ in requests])
    found, valid = scan(bytes(data), load_or_create(buf, [])[0])  # the directory's key exists: read
    assert len(found) == 4 and valid == len(data)
    start, end = found[1][0], found[1][1]
    if where == "payload":
        data[start + 40] ^= 0xFF
    else:
        data[start + 3] = 0x7F  # the length now runs past the end of the segment
    counts = restart_on(seg, data, storage, buf, env, 150)
    assert set(counts) == {i.hex() for ids in (acked[0], acked[2], acked[3]) for i in ids}
    assert set(counts.values()) == {1}
    (kept,) = glob.glob(os.path.join(buf, "corrupt", "*.bin"))
    assert os.path.getsize(kept) == end - start


def restart_on(seg: str, data: bytes | bytearray, storage: str, buf: str, env: dict, spans: int) -> dict[str, int]:
    """Write ``data`` (damaged) as segment ``seg``, start the collector again until it has stored
    ``spans`` spans, stop it: the span counts of the store (``stored_span_counts``)."""
    with open(seg, "wb") as f:
        f.write(data)
    p = start_collector_process(storage, buf, env=env)
    try:
        wait_for(lambda: p.stored() >= spans, 30, every=0.2, what="the intact requests stored")
    finally:
        assert p.terminate() == 0
    return stored_span_counts(storage)


def acknowledged_then_killed(storage: str, buf: str, env: dict, requests: list) -> tuple[str, bytearray]:
    """Send ``requests`` to a new collector, each acknowledged, kill it before it stores them: its
    WAL segment that holds them, and its bytes."""
    p = start_collector_process(storage, buf, env=env)
    try:
        for req in requests:
            r = oneshot.post(p.url + "/v1/traces", content=req.SerializeToString(),
                           headers={"content-type": "application/x-protobuf"}, timeout=30)
            assert r.status_code == 200, r.text
        assert p.stored() == 0  # the batch closes a second after its first record: not yet
    finally:
        p.kill()
    (seg,) = [s for s in glob.glob(os.path.join(buf, "*.wal")) if os.path.getsize(s)]
    with open(seg, "rb") as f:
        return seg, bytearray(f.read())
