"""A buffer directory whose checkpoint points past the end of its WAL (the segments deleted by hand,
or a checkpoint.json that counts segments this directory no longer has): a restarted
``tracehouse collector`` says so in its log, stores what it acknowledges afterwards, and keeps
everything stored before; nothing twice."""

from __future__ import annotations

import glob
import json
import os

import pytest

from tests.collector.harness import start_collector_process
from tests.collector.load import stored_span_counts
from tests.collector.payloads import traces
from tests.support import oneshot
from tests.support.waiting import wait_for


def _send(url: str, requests: int = 3, spans: int = 50) -> list[bytes]:
    acked = []
    for _ in range(requests):
        req, ids = traces(spans)
        r = oneshot.post(url + "/v1/traces", content=req.SerializeToString(),
                       headers={"content-type": "application/x-protobuf"}, timeout=30)
        assert r.status_code == 200, r.status_code
        acked += ids
    return acked


@pytest.mark.parametrize("damage", ["checkpoint_ahead", "segments_deleted"])
def test_checkpoint_past_the_wal_end_does_not_stop_storing(tmp_path, damage):
    storage, buf = f"chdb://{tmp_path}/data", str(tmp_path / "buffer")
    env = {"TRACEHOUSE_OTLP_GRPC_PORT": "0"}
    before = store_and_stop(storage, buf, env)
    if damage == "checkpoint_ahead":
        with open(os.path.join(buf, "checkpoint.json"), "w") as f:
            json.dump({"done": [9, 0], "pending": None}, f)
    else:
        for path in glob.glob(os.path.join(buf, "*.wal")):
            os.unlink(path)
    after = _restart_and_send(storage, buf, env)
    counts = stored_span_counts(storage)
    assert {i.hex() for i in before + after} == set(counts)
    assert all(c == 1 for c in counts.values())


def test_damaged_checkpoint_is_set_aside_and_nothing_acknowledged_is_lost(tmp_path):
    """A checkpoint.json that is not JSON any more, and its copy neither: the restarted collector
    keeps it aside, logs why, and stores the buffer from its first record (what of that segment was
    stored before may be stored again: the checkpoint that said so is gone); before, nothing was
    stored again. (One of the two damaged: test_checkpoint_damage.py.)"""
    storage, buf = f"chdb://{tmp_path}/data", str(tmp_path / "buffer")
    env = {"TRACEHOUSE_OTLP_GRPC_PORT": "0"}
    before = store_and_stop(storage, buf, env)
    for name in ("checkpoint.json", "checkpoint.json.copy"):
        with open(os.path.join(buf, name), "w") as f:
            f.write('{"done": [1, 1')
    after = _restart_and_send(storage, buf, env)
    counts = stored_span_counts(storage)
    assert {i.hex() for i in before + after} == set(counts)
    assert all(counts[i.hex()] == 1 for i in after)
    assert os.path.exists(os.path.join(buf, "checkpoint.json.damaged"))


def store_and_stop(storage: str, buf: str, env: dict) -> list:
    """Start the collector on ``buf``, send spans, wait until they are stored, stop it: their ids."""
    p = start_collector_process(storage, buf, env=env)
    try:
        sent = _send(p.url)
        wait_for(lambda: p.stored() >= len(sent), 60, every=0.1, what="the first spans stored")
    finally:
        assert p.terminate() == 0
    return sent


def _restart_and_send(storage: str, buf: str, env: dict) -> list:
    """Start the collector again on ``buf``, send spans, and wait until they are stored: their ids."""
    p = start_collector_process(storage, buf, env=env)
    try:
        after = _send(p.url)
        wait_for(lambda: p.stored() >= len(after), 30, every=0.2,
                 what=f"the {len(after)} spans acknowledged after the restart stored")
    finally:
        assert p.terminate() == 0
    return after
