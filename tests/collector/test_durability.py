"""Durability: acknowledged spans survive a ClickHouse outage and a SIGKILL of the collector,
and are stored exactly once; a graceful stop drains the buffer."""

from __future__ import annotations

import time

import pytest

from testkit import servers
from tests.collector.harness import run_collector, start_collector_process
from tests.collector.load import Load, assert_exactly_once, span_id_counts
from tests.collector.payloads import traces
from tests.support import oneshot
from tests.support.waiting import wait_for
from tracehouse.storage import Store


def _wait(cond, timeout: float, what: str) -> None:
    wait_for(cond, timeout, every=0.1, what=what)


@pytest.fixture
def private_clickhouse(tmp_path):
    proc = servers.start_clickhouse(str(tmp_path / "clickhouse"))
    yield proc
    proc.stop()


def test_clickhouse_outage_mid_load(private_clickhouse, tmp_path):
    ch = private_clickhouse
    store = Store.open(ch.url.rsplit("/", 1)[0] + "/outage")
    store.migrate()
    # A small cap, so the outage also fills the buffer: the collector must answer 503 + Retry-After.
    r = run_collector(store, str(tmp_path / "buffer"), buffer_max_bytes=1_500_000, max_batch_age=0.2)
    load = Load(r.url).start()
    try:
        _wait(lambda: r.collector.writer.stored["traces"] >= 1000, 60, "first spans stored")
        stored_before = r.collector.writer.stored["traces"]
        acked_at_stop = len(load.acked)
        ch.stop()
        _wait(lambda: load.statuses.get(503, 0) >= 3, 60, "503 while ClickHouse is down and the buffer full")
        # acknowledged while ClickHouse was down, more than it stored: they waited in the buffer
        assert len(load.acked) - acked_at_stop > r.collector.writer.stored["traces"] - stored_before
        # ready while it can buffer (saying why it buffers), not ready once the buffer cannot take more
        ready = oneshot.get(r.url + "/readyz")
        assert ((ready.status_code, ready.text.strip()) == (503, "buffer full")
                or (ready.status_code == 200 and "buffering: store unreachable" in ready.text)), ready.text
        assert r.collector.metrics.get("tracehouse_collector_writer_errors_total", kind="unavailable") >= 1
        restarted = servers.restart_clickhouse(ch)
        ch.pid = restarted.pid  # the fixture stops the restarted server
        _wait(lambda: len(load.acked) > acked_at_stop + 2000, 60, "load resumes after the restart")
    finally:
        load.stop()
    _wait(lambda: r.collector.wal.pending_bytes() == 0, 60, "the buffer drains")
    r.stop()
    assert_exactly_once(store, load)
    assert len(span_id_counts(store)) >= len(load.acked)
    store.close()


def test_sigkill_mid_load_replays_without_duplicates(clickhouse_url, tmp_path):
    base = clickhouse_url.rsplit("/", 1)[0]
    storage = base + "/sigkill" + str(time.time_ns() % 10**9)
    buffer_dir = str(tmp_path / "buffer")
    proc = start_collector_process(storage, buffer_dir)
    load = Load(proc.url).start()
    store = None
    try:
        load.wait_acked(3000)
        _wait(lambda: proc.stored() > 0, 60, "the first batch stored")
        load.wait_acked(len(load.acked) + 2000)
        proc.kill()  # SIGKILL: no drain, no checkpoint, in-flight requests cut
        acked_at_kill = len(load.acked)
        proc = start_collector_process(storage, buffer_dir, port=proc.port)
        load.wait_acked(acked_at_kill + 2000)
    finally:
        load.stop()
    try:
        store = Store.open(storage)
        acked = {i.hex() for i in load.acked}
        _wait(lambda: acked <= set(span_id_counts(store)), 60, "every acknowledged span stored")
        assert proc.terminate() == 0  # graceful stop: drains, exits 0
        assert_exactly_once(store, load)
    finally:
        if proc.proc.poll() is None:
            proc.kill()
        if store is not None:
            store.query(f"DROP DATABASE IF EXISTS {store.db}")
            store.close()


def test_graceful_stop_drains_and_restart_replays_the_rest(chdb_store, tmp_path):
    buffer_dir = str(tmp_path / "buffer")
    # A long batch age: nothing is written until stop() drains it.
    r = run_collector(chdb_store, buffer_dir, max_batch_age=60)
    req, ids = traces(500)
    assert oneshot.post(r.url + "/v1/traces", content=req.SerializeToString(),
                      headers={"content-type": "application/x-protobuf"}).status_code == 200
    time.sleep(0.3)
    assert r.collector.writer.stored["traces"] == 0
    r.stop(grace=10)
    assert set(span_id_counts(chdb_store)) == {i.hex() for i in ids}
    # the buffer is empty after the drain: a restart writes nothing again
    r2 = run_collector(chdb_store, buffer_dir, max_batch_age=0.1)
    time.sleep(0.5)
    r2.stop()
    assert sum(span_id_counts(chdb_store).values()) == 500
