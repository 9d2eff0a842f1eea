"""The snapshot request queue on both backends (chDB and the ClickHouse server .ci/run starts)."""

from __future__ import annotations

import time

import pytest

from tracehouse.storage import InvalidParameter, NotFound
from tracehouse.storage import queries_snapshots as q


def test_queue_semantics(store):
    now = time.time_ns()
    q.create_request(store, "any1", "svc", "threads", reason="r", requested_by="alice", now_ns=now)
    q.create_request(store, "only2", "svc", "memory", instance="i2", now_ns=now + 1)
    q.create_request(store, "old", "svc", "threads", now_ns=now - (q.TTL_S + 5) * 1_000_000_000)
    q.create_request(store, "other", "other-svc", "threads", now_ns=now)
    assert [c["id"] for c in q.take_pending(store, "svc", "i1", now_ns=now + 2)] == ["any1"]
    assert q.take_pending(store, "svc", "i1", now_ns=now + 3) == []  # taken once per instance
    assert [c["id"] for c in q.take_pending(store, "svc", "i2", now_ns=now + 4)] == ["any1", "only2"]
    assert q.take_pending(store, "svc", "i2", now_ns=now + 5) == []
    req = q.get_request(store, "any1")
    assert req["status"] == "taken" and req["requested_by"] == "alice"
    assert sorted(t["instance"] for t in req["taken_by"]) == ["i1", "i2"]
    assert [t["instance"] for t in q.get_request(store, "only2")["taken_by"]] == ["i2"]
    assert q.get_request(store, "old")["status"] == "expired"
    assert {r["id"] for r in q.list_requests(store, "svc")} == {"any1", "only2", "old"}
    assert q.snapshots_for(store, "any1", now) == []
    with pytest.raises(NotFound):
        q.get_request(store, "missing")
    with pytest.raises(InvalidParameter):
        q.create_request(store, "x", "svc", "heap")
    with pytest.raises(InvalidParameter):
        q.take_pending(store, "svc", "")
    injected = "x' OR 1=1 --"
    q.create_request(store, "inj", injected, "threads", instance=injected)
    assert [c["id"] for c in q.take_pending(store, injected, injected)] == ["inj"]
