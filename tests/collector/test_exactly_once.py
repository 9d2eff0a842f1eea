"""Exactly once: a client's retry of a request it got no answer for is acknowledged without being
stored again (across a restart too); a failure between a batch's spans and its rollups leaves no
rollup short; a batch the store keeps rejecting is kept in a dead-letter file."""

from __future__ import annotations

import gzip
import os
import time

import grpc
import httpx
import orjson

from tests.collector.harness import run_collector
from tests.collector.payloads import traces
from tests.collector.rollups import rollup_mismatches, span_totals
from tests.collector.test_grpc import TRACE_EXPORT
from tests.support import oneshot
from tests.support.waiting import wait_for
from tracehouse.collector import native_feed
from tracehouse.collector.deadletter import records, requeue
from tracehouse.collector.decode import to_json
from tracehouse.collector.native import native_supported

PB = {"content-type": "application/x-protobuf"}


def _post(r, body: bytes, headers=None) -> httpx.Response:
    return oneshot.post(r.url + "/v1/traces", content=body, headers=headers or PB, timeout=30)


def test_every_receiver_recognises_a_retried_request(chdb_store, tmp_path):
    """The retry window is the shared ingest path's: a body first sent over OTLP/HTTP and retried
    over OTLP/gRPC, one sent twice over gRPC, and a Zipkin body sent twice are each stored once."""
    r = run_collector(chdb_store, str(tmp_path / "buffer"), grpc=True, zipkin=True, max_batch_age=0.05)
    try:
        first, _ = traces(20)
        body = first.SerializeToString()
        assert _post(r, body).status_code == 200
        second, _ = traces(10)
        zspan = {"traceId": os.urandom(16).hex(), "id": os.urandom(8).hex(), "name": "get", "kind": "SERVER",
                 "timestamp": time.time_ns() // 1000, "duration": 10, "localEndpoint": {"serviceName": "z"}}
        zbody = orjson.dumps([zspan])
        with grpc.insecure_channel(r.grpc_target) as ch:
            call = ch.unary_unary(TRACE_EXPORT)
            for b in (body, second.SerializeToString(), second.SerializeToString()):
                call(b, timeout=10)
        for _ in range(2):
            resp = oneshot.post(r.zipkin_url + "/api/v2/spans", content=zbody, headers={"content-type": "application/json"},
                              timeout=30)
            assert resp.status_code == 202
        r.wait_stored("traces", 31)
        assert r.collector.metrics.get("tracehouse_collector_duplicate_requests_total") == 3
        assert r.collector.wal.records == 3
    finally:
        r.stop()
    assert span_totals(chdb_store) == (31, 31)


def test_a_retried_request_is_acknowledged_and_stored_once_even_after_a_restart(chdb_store, tmp_path):
    buf = str(tmp_path / "buffer")
    req, ids = traces(60)
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b""  # one invalid span: the retry gets the same partial-success answer
    body = req.SerializeToString()
    # small WAL segments, so the request's segment is deleted once stored and only the journal
    # remembers it across the restart
    r = run_collector(chdb_store, buf, max_batch_age=0.05, segment_bytes=4096)
    try:
        first = _post(r, body)
        assert first.status_code == 200
        r.wait_stored("traces", 59)
        for again in (body, gzip.compress(body)):  # the same content, encoded differently
            resp = _post(r, again, dict(PB, **({"content-encoding": "gzip"} if again is not body else {})))
            assert resp.status_code == 200 and resp.content == first.content
        resp = _post(r, to_json(req), {"content-type": "application/json"})
        assert resp.status_code == 200
        assert r.collector.metrics.get("tracehouse_collector_duplicate_requests_total") == 3
        other, _ = traces(30)
        assert _post(r, other.SerializeToString()).status_code == 200
        r.wait_stored("traces", 89)
        wait_for(lambda: os.path.exists(os.path.join(buf, "recent-requests.log")), 10, what="the journal")
    finally:
        r.stop()
    r2 = run_collector(chdb_store, buf, max_batch_age=0.05, segment_bytes=4096)
    try:
        resp = _post(r2, body)
        assert resp.status_code == 200 and resp.content == first.content
        assert r2.collector.metrics.get("tracehouse_collector_duplicate_requests_total") == 1
        assert r2.collector.wal.records == 0
    finally:
        r2.stop()
    assert span_totals(chdb_store) == (89, 89)


def test_a_failure_between_the_spans_and_their_rollups_leaves_no_rollup_short(store, tmp_path, monkeypatch):
    """The state a SIGKILL can leave: the batch's spans part written, rollup parts not. A view over
    spans that fails while armed (named to run before the rollups' views where views run in
    order) stands for the crash; the retry must complete exactly the rollups that lack the batch
    (both backends: tokens on chDB, a rebuild of the batch's minutes on 18.16). One engine thread
    on chDB, so views run in order after the table's part (with more they may run beside it)."""
    monkeypatch.setattr(native_feed, "ENGINE_THREADS", 1)
    db = store.db
    store.query(f"CREATE TABLE {db}.armed (x UInt8) ENGINE = Memory")
    store.query(f"CREATE TABLE {db}.sink (x UInt8) ENGINE = Null")
    store.query(f"CREATE MATERIALIZED VIEW {db}.aaa_crash_mv TO {db}.sink AS "
                f"SELECT throwIf(1 IN (SELECT x FROM {db}.armed)) AS x FROM {db}.spans")
    store.query(f"INSERT INTO {db}.armed SELECT 1")
    # on chDB the engine's path even for a small batch (``auto`` would convert it in Python)
    r = run_collector(store, str(tmp_path / "buffer"), max_batch_age=0.05,
                      decoder="native" if native_supported(store) else "auto")
    try:
        try:
            req, _ = traces(300, spans_per_trace=7)
            assert _post(r, req.SerializeToString()).status_code == 200
            wait_for(lambda: r.collector.metrics.get("tracehouse_collector_writer_errors_total") >= 1, 30,
                     every=0.05, what="an insert failing after its spans part")
            assert span_totals(store) == (300, 300)  # the spans part is in
        finally:
            store.query(f"TRUNCATE TABLE {db}.armed")
        m = r.collector.metrics
        wait_for(lambda: m.get("tracehouse_collector_writer_batches_total") >= 1, 60, every=0.05,
                 what="the batch completed")  # counted as already stored: its spans were in
        req2, _ = traces(100)
        assert _post(r, req2.SerializeToString()).status_code == 200
        r.wait_stored("traces", 100)
    finally:
        r.stop()
    assert span_totals(store) == (400, 400)
    assert rollup_mismatches(store) == {}


def test_a_batch_the_store_keeps_rejecting_goes_to_a_dead_letter_file(chdb_store, tmp_path):
    r = run_collector(chdb_store, str(tmp_path / "buffer"), max_batch_age=0.05, retry_delay=0.01)
    try:
        chdb_store.query(f"DETACH TABLE {chdb_store.t('spans')}")
        try:
            req, ids = traces(25)
            assert _post(r, req.SerializeToString()).status_code == 200
            m = r.collector.metrics
            wait_for(lambda: m.get("tracehouse_collector_dead_letter_items_total") == 25, 60, every=0.05,
                     what="the batch in the dead letters")
            assert m.get("tracehouse_collector_dropped_items_total") == 0
            files = r.collector.writer.dead.files()
            assert len(files) == 1 and [items for _, items, _ in records(files[0])] == [25]
            wait_for(lambda: r.collector.wal.pending_bytes() == 0, 10, what="the WAL released")
            text = oneshot.get(r.url + "/metrics").text
            assert 'tracehouse_collector_dead_letter_items_total{signal="traces"} 25' in text
            assert "tracehouse_collector_dead_letter_bytes " in text
        finally:
            chdb_store.query(f"ATTACH TABLE {chdb_store.t('spans')}")
        assert requeue(files[0], r.collector.wal) == 1
        r.wait_stored("traces", 25)
        assert not os.path.exists(files[0])
    finally:
        r.stop()
    assert span_totals(chdb_store) == (25, 25)


def test_only_the_record_the_store_rejects_goes_to_the_dead_letters(chdb_store, tmp_path):
    """A batch the store keeps rejecting for one request's rows (here a constraint on span names
    stands for the store, or its client library, refusing a value) is stored record by record
    before anything goes to the dead letters: the other requests of the batch are stored once,
    only the rejected one is kept aside. It used to dead-letter the whole batch."""
    spans = chdb_store.t("spans")
    chdb_store.query(f"ALTER TABLE {spans} ADD CONSTRAINT no_poison CHECK name != 'poison'")
    r = run_collector(chdb_store, str(tmp_path / "buffer"), start_writer=False, decoder="python",
                      max_batch_age=0.5, retry_delay=0.01)
    try:
        good = [traces(10, tag=f"g{i}")[0] for i in range(3)]
        poison, _ = traces(1)
        poison.resource_spans[0].scope_spans[0].spans[0].name = "poison"
        for req in (good[0], poison, good[1], good[2]):
            assert _post(r, req.SerializeToString()).status_code == 200
        r.collector.writer.start()  # all four requests wait in the log: one batch
        m = r.collector.metrics
        wait_for(lambda: m.get("tracehouse_collector_dead_letter_items_total") == 1, 120, every=0.05,
                 what="the rejected request in the dead letters")
        r.wait_stored("traces", 30)
        [file] = r.collector.writer.dead.files()
        assert [items for _, items, _ in records(file)] == [1]
        # the batch was tried whole first, then record by record
        assert m.get("tracehouse_collector_writer_errors_total") >= 16
    finally:
        r.stop()
        chdb_store.query(f"ALTER TABLE {spans} DROP CONSTRAINT no_poison")
    assert span_totals(chdb_store) == (30, 30)
