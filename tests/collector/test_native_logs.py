"""The native log decoder against the Python one: the same log requests (and a few trace requests
in the same batches, so both native decoders share them), through the receiver's own checks into a
WAL, then each decoder's writer into its own database; every stored row and every truncation
counter must agree. And a log batch whose insert failed after its rows landed is stored once."""

from __future__ import annotations

import shutil

import pytest

from tests.collector import corpus, log_corpus
from tests.collector.harness import drain, run_collector
from tests.collector.test_native import SPAN_COLUMNS, _counters, _fill_wal, _rows
from tests.support import oneshot
from tests.support.waiting import wait_for
from tracehouse.collector import native_feed
from tracehouse.collector.convert import Limits
from tracehouse.collector.decode import SIGNALS
from tracehouse.collector.native import NativeTraces
from tracehouse.collector.native_logs import NativeLogs
from tracehouse.collector.redact import Redactor
from tracehouse.storage import Store

LOG_COLUMNS = ("timestamp, ts_ns, observed_ns, hex(trace_id), hex(span_id), flags, severity_number, severity_text, "
               "service, instance, event_name, body, attr_keys, attr_values, attr_types, resource_keys, "
               "resource_values, scope_name, scope_version")
TIGHT = Limits(max_attributes=8, max_value_len=100, max_key_len=20, max_events=3, max_links=2,
               max_snapshot_body_len=200)
#: requests the engine leaves to Python: by corpus name, without and with ``every_value``
PYTHON_EVERY_VALUE = {"kvlist body", "array body", "record attribute array", "deeply nested resource attribute"}
PYTHON = PYTHON_EVERY_VALUE | {"double body and attribute", "resource kvlist"}


def _sdk_python(cases: list, every_value: bool) -> int:
    """SDK requests the engine leaves to Python: a structured body, a double attribute (unless the
    engine formats doubles)."""
    python = {"kvlist_value", "array_value"} | (set() if every_value else {"double_value"})
    out = 0
    for name, req in cases:
        if name.startswith("sdk"):
            for rec in (r for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records):
                kinds = {a.value.WhichOneof("value") for a in rec.attributes} | {rec.body.WhichOneof("value")}
                out += bool(kinds & python)
    return out


@pytest.mark.parametrize("limits,every_value,block_bytes",
                         [(Limits(), False, native_feed.BLOCK_BYTES), (TIGHT, False, native_feed.BLOCK_BYTES), (TIGHT, True, 1)],
                         ids=["default", "tight", "tight-every-value-small-blocks"])
def test_both_decoders_store_the_same_log_rows(chdb_dir, tmp_path, monkeypatch, limits, every_value, block_bytes):
    monkeypatch.setattr(native_feed, "BLOCK_BYTES", block_bytes)
    logs = log_corpus.corner_requests() + log_corpus.sdk_requests()
    traces = [c for c in corpus.corner_requests() if c[0] in ("plain spans", "span attribute arrays and kvlists")]
    assert sum(name.startswith("sdk") for name, _ in logs) >= 5
    cases = logs[:3] + traces[:1] + logs[3:] + traces[1:]  # the signals interleaved in the WAL
    sigs = [SIGNALS["traces"] if c in traces else SIGNALS["logs"] for c in cases]
    src = str(tmp_path / "wal")
    _fill_wal(src, [req.SerializeToString() for _, req in cases], sigs)
    shutil.copytree(src, str(tmp_path / "wal-native"))
    redactor = Redactor(["tenant_pin"])
    stores, metrics = {}, {}
    try:
        for name in ("python", "native"):
            stores[name] = Store.open(f"chdb://{chdb_dir}?database=difflogs_{name}_{tmp_path.name[-8:]}")
            stores[name].migrate()
            schemas = str(tmp_path / f"schemas-{name}")
            natives = ([cls(stores[name], redactor, limits, schemas, every_value) for cls in (NativeTraces, NativeLogs)]
                       if name == "native" else [])
            metrics[name] = drain(stores[name], src if name == "python" else str(tmp_path / "wal-native"),
                                   limits, natives, redactor)
        py, nat = stores["python"], stores["native"]
        expected = (PYTHON_EVERY_VALUE if every_value else PYTHON)
        assert {name for name, _ in cases} >= expected
        to_python = metrics["native"].get("tracehouse_collector_native_python_requests_total", signal="logs")
        assert to_python == len(expected) + _sdk_python(cases, every_value) > len(expected)
        # and the trace request with span attribute arrays
        assert metrics["native"].get("tracehouse_collector_native_python_requests_total", signal="traces") == 1
        for sql in (f"SELECT {LOG_COLUMNS} FROM {{db}}.logs ORDER BY ALL",
                    f"SELECT {SPAN_COLUMNS} FROM {{db}}.spans ORDER BY span_id, trace_id"):
            a, b = _rows(py, sql), _rows(nat, sql)
            assert len(a) == len(b) > 0
            for x, y in zip(a, b):
                assert x == y
        n_logs = sum(len(sl.log_records) for c in cases if c not in traces
                     for rl in c[1].resource_logs for sl in rl.scope_logs)
        assert len(_rows(py, "SELECT 1 FROM {db}.logs")) == n_logs
        assert _counters(metrics["python"]) == _counters(metrics["native"])
        assert set(_counters(metrics["python"])) >= {'what="attributes"', 'what="attribute values"',
                                                     'what="attribute keys"', 'what="log bodies"',
                                                     'what="event names"', 'what="severity texts"'}
        if limits is TIGHT:
            assert 'what="snapshot bodies"' in _counters(metrics["python"])
        for name in ("python", "native"):
            assert metrics[name].get("tracehouse_collector_written_items_total", signal="logs") == n_logs
    finally:
        for s in stores.values():
            s.query(f"DROP DATABASE IF EXISTS {s.db}")
            s.query(f"DROP DATABASE IF EXISTS {s.db}_ingest")
            s.close()


def test_a_log_batch_whose_insert_failed_after_its_rows_landed_is_stored_once(chdb_store, tmp_path, monkeypatch):
    """The state a SIGKILL can leave: the batch's ``logs`` part written, the insert not finished.
    A view over ``logs`` that fails while armed stands for the crash; the retry (verified, with the
    same deduplication token) must add nothing, and later batches are stored as usual. One engine
    thread, so the table's part is written before its views run (with more, the failing view may
    abort the insert before the part: a state the retry handles too, but not the one tested)."""
    monkeypatch.setattr(native_feed, "ENGINE_THREADS", 1)
    db = chdb_store.db
    chdb_store.query(f"CREATE TABLE {db}.armed (x UInt8) ENGINE = Memory")
    chdb_store.query(f"CREATE TABLE {db}.sink (x UInt8) ENGINE = Null")
    chdb_store.query(f"CREATE MATERIALIZED VIEW {db}.aaa_crash_mv TO {db}.sink AS "
                     f"SELECT throwIf(1 IN (SELECT x FROM {db}.armed)) AS x FROM {db}.logs")
    chdb_store.query(f"INSERT INTO {db}.armed SELECT 1")
    r = run_collector(chdb_store, str(tmp_path / "buffer"), max_batch_age=0.05, decoder="native")
    pb = {"content-type": "application/x-protobuf"}
    try:
        assert isinstance(r.collector.writer.natives[SIGNALS["logs"].code], NativeLogs)
        plain = dict(log_corpus.corner_requests())["plain logs"]
        try:
            resp = oneshot.post(r.url + "/v1/logs", content=plain.SerializeToString(), headers=pb, timeout=30)
            assert resp.status_code == 200
            m = r.collector.metrics
            wait_for(lambda: m.get("tracehouse_collector_writer_errors_total") >= 1, 30, every=0.05,
                     what="an insert failing after its logs part")
            assert int(chdb_store.query(f"SELECT count() FROM {db}.logs").scalar()) == 40
        finally:
            chdb_store.query(f"TRUNCATE TABLE {db}.armed")
        wait_for(lambda: m.get("tracehouse_collector_writer_batches_total") >= 1, 60, every=0.05,
                 what="the batch completed")
        assert m.get("tracehouse_collector_writer_batches_already_stored_total", signal="logs") == 1
        more, sl = log_corpus._req(service="later")
        for n in range(10):
            log_corpus._rec(sl, 500 + n, f"later {n}")
        resp = oneshot.post(r.url + "/v1/logs", content=more.SerializeToString(), headers=pb, timeout=30)
        assert resp.status_code == 200
        r.wait_stored("logs", 10)
    finally:
        r.stop()
    rows = chdb_store.query(f"SELECT service, count(), uniqExact(ts_ns) FROM {db}.logs GROUP BY service "
                            "ORDER BY service").rows
    assert [tuple(x) for x in rows] == [("later", 10, 10), ("plain", 40, 40)]
