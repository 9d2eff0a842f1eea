"""A checkpoint.json damaged on disk (cut short, zero-filled, garbage): the restarted collector
stores nothing twice and loses nothing. The checkpoint is written twice (``checkpoint.json.copy``
first), so a damaged file is replaced by its copy, which is never behind what was acted on.
Before, the buffer was stored again from its first record under a new WAL identity: every span of
its first segment stored before the damage was stored a second time, in spans and the rollups."""

from __future__ import annotations

import os
import time

import pytest

from tests.collector.load import span_id_counts
from tests.collector.rollups import rollup_mismatches, span_totals
from tests.collector.test_lost_segments import _restart_and_send, store_and_stop
from tracehouse.storage import Store

_DAMAGE = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "zero_filled": lambda raw: b"\0" * len(raw),
    "garbage": lambda raw: os.urandom(len(raw)),
}


@pytest.mark.parametrize("backend", ["chdb", "server"])
@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_a_damaged_checkpoint_stores_nothing_twice(tmp_path, request, backend, damage):
    if backend == "chdb":
        storage = f"chdb://{tmp_path}/data"
    else:
        base = request.getfixturevalue("clickhouse_url").rsplit("/", 1)[0]
        storage = f"{base}/cpdamage{time.time_ns() % 10**9}"
    buf = str(tmp_path / "buffer")
    env = {"TRACEHOUSE_OTLP_GRPC_PORT": "0"}
    before = store_and_stop(storage, buf, env)
    path = os.path.join(buf, "checkpoint.json")
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(_DAMAGE[damage](raw))
    after = _restart_and_send(storage, buf, env)
    store = Store.open(storage)
    try:
        counts = span_id_counts(store)
        assert {i.hex() for i in before + after} == set(counts)
        assert span_totals(store) == (len(before) + len(after), len(before) + len(after))
        assert rollup_mismatches(store) == {}
    finally:
        if backend == "server":
            store.query(f"DROP DATABASE IF EXISTS {store.db}")
        store.close()
