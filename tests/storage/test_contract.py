"""The storage contract, run against embedded chDB and a ClickHouse 18.16 server alike."""

from __future__ import annotations

import os
import time

import pytest

from testkit.spangen import Gen, generate
from tracehouse.storage import InvalidParameter, NotFound, StorageError, parse_range
from tracehouse.storage import queries_map as qmap
from tracehouse.storage import queries_services as qsvc
from tracehouse.storage import queries_telemetry as qtel
from tracehouse.storage import queries_traces as qtr
from tracehouse.storage.attrs import encode_map
from tracehouse.storage.migrations import LATEST

NS = 1_000_000_000


@pytest.fixture
def seeded(store):
    now = time.time_ns()
    cols, tids = generate(3000, now - 600 * NS, 590 * NS, Gen(error_rate=0.2), store=store)
    store.insert("spans", cols, batch_id=1)
    return store, cols, tids


def test_schema_is_current_and_migrate_is_idempotent(store):
    assert store.schema_version() == LATEST
    assert store.migrate() == []
    assert store.is_current()


def test_services_red_matches_raw_spans(seeded):
    store, cols, _ = seeded
    tr = parse_range("15m", None)
    got = {s["service"]: s for s in qsvc.services(store, tr)}
    assert set(got) == {"gateway", "orders", "payments", "inventory", "users"}
    for service, s in got.items():
        entry = [i for i, sv in enumerate(cols["service"]) if sv == service and cols["kind"][i] == 2]
        errors = sum(1 for i in entry if cols["status_code"][i] == 2)
        assert s["requests"] == len(entry)
        assert s["errors"] == errors
        assert s["span_count"] == sum(1 for sv in cols["service"] if sv == service)
        durations = sorted(cols["duration_ns"][i] for i in entry)
        true_p50 = durations[len(durations) // 2] / 1e6
        assert abs(s["p50_ms"] - true_p50) <= max(5.0, 0.15 * true_p50)
        assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"]


def test_operations_and_series(seeded):
    store, cols, _ = seeded
    tr = parse_range("15m", None)
    ops = {o["operation"]: o for o in qsvc.operations(store, "orders", tr)}
    expected = {cols["name"][i] for i, s in enumerate(cols["service"]) if s == "orders"}
    assert set(ops) == expected
    assert ops["payments call"]["kind"] == "client"
    series = qsvc.series(store, "gateway", tr, step_s=120)
    assert series["step_s"] == 120
    total = sum(p["requests"] for p in series["points"])
    assert total == sum(1 for i, s in enumerate(cols["service"]) if s == "gateway" and cols["kind"][i] == 2)


def test_trace_lookup_returns_every_span_with_details(seeded):
    store, cols, tids = seeded
    tid = tids[3]
    idx = [i for i, t in enumerate(cols["trace_id"]) if t == tid]
    t = qtr.trace(store, tid.hex())
    assert t["span_count"] == len(idx)
    assert {s["span_id"] for s in t["spans"]} == {cols["span_id"][i].hex() for i in idx}
    root = t["spans"][0]
    assert root["parent_span_id"] is None and root["service"] == "gateway" and root["kind"] == "server"
    assert isinstance(root["attributes"]["http.response.status_code"], int)
    assert root["resource"]["service.name"] == "gateway"
    by_id = {s["span_id"]: s for s in t["spans"]}
    for s in t["spans"][1:]:
        assert s["parent_span_id"] in by_id


def test_trace_not_found_and_bad_id(store):
    with pytest.raises(NotFound):
        qtr.trace(store, os.urandom(16).hex())
    for bad in ("xyz", "' OR 1=1 --", "00" * 16, "abc"):
        with pytest.raises(InvalidParameter):
            qtr.trace(store, bad)


def test_search_filters_whole_trace_duration_status_and_attributes(seeded):
    store, cols, tids = seeded
    tr = parse_range("15m", None)
    all_traces = qtr.search(store, tr, limit=1000)
    assert len(all_traces) == len(tids)
    errors = qtr.search(store, tr, status="error", limit=1000)
    assert errors and all(t["error"] for t in errors)
    want_err = {tid.hex() for tid in tids if any(cols["status_code"][i] == 2 for i, t in enumerate(cols["trace_id"]) if t == tid)}
    assert {t["trace_id"] for t in errors} == want_err
    slow = qtr.search(store, tr, min_duration_ms=200, limit=1000)
    assert all(t["duration_ms"] >= 200 for t in slow)
    fast = qtr.search(store, tr, max_duration_ms=100, limit=1000)
    assert all(t["duration_ms"] <= 100 for t in fast)
    assert len(slow) + len(fast) < len(all_traces)
    eu = qtr.search(store, tr, service="payments", attrs=[("region", "eu-west")], limit=1000)
    assert eu
    for t in eu:
        spans = qtr.trace(store, t["trace_id"])["spans"]
        assert any(s["service"] == "payments" and s["attributes"].get("region") == "eu-west" for s in spans)
    by_service = qtr.search(store, tr, service="users", limit=1000)
    assert by_service and all("users" in t["services"] for t in by_service)
    want_users = {t.hex() for t, svc in zip(cols["trace_id"], cols["service"]) if svc == "users"}
    assert {t["trace_id"] for t in by_service} == want_users
    # the limit keeps the newest traces, newest first, with their whole summaries
    newest = qtr.search(store, tr, limit=5)
    assert [t["start_ns"] for t in newest] == sorted((t["start_ns"] for t in all_traces), reverse=True)[:5]
    assert newest == sorted(all_traces, key=lambda t: t["start_ns"], reverse=True)[:5]
    op = qtr.search(store, tr, operation="POST /charge", limit=1000)
    assert op and len(op) < len(all_traces)


def test_service_map_has_services_and_dependencies(seeded):
    store, _, _ = seeded
    m = qmap.service_map(store, parse_range("15m", None))
    edges = {(e["source"], e["target"]) for e in m["edges"]}
    assert {("gateway", "orders"), ("orders", "payments"), ("inventory", "cache:redis"),
            ("orders", "database:postgresql/orders")} <= edges
    kinds = {n["id"]: n["kind"] for n in m["nodes"]}
    assert kinds["cache:redis"] == "cache" and kinds["database:postgresql/orders"] == "database"
    assert kinds["orders"] == "service"
    e = next(e for e in m["edges"] if e["source"] == "gateway" and e["target"] == "orders")
    assert e["calls"] > 0 and e["p95_ms"] > 0


def test_lone_service_appears_on_map(store):
    now = time.time_ns()
    cols = store.columns_for("spans")
    k, v, t = encode_map({"job": "nightly"})
    row = dict(timestamp=now // NS, trace_id=os.urandom(16), span_id=os.urandom(8), parent_span_id=b"\0" * 8,
               trace_state="", service="lonely-worker", name="run job", kind=1, status_code=0, status_message="",
               start_ns=now, duration_ns=5_000_000, attr_keys=k, attr_values=v, attr_types=t, resource_keys=[],
               resource_values=[], scope_name="", scope_version="", events_time_ns=[], events_name=[],
               events_attrs=[], links_trace_id=[], links_span_id=[], links_attrs=[])
    for key, val in row.items():
        cols[key].append(val)
    store.insert("spans", cols)
    m = qmap.service_map(store, parse_range("15m", None))
    assert {"id": "lonely-worker", "kind": "service"}.items() <= next(n for n in m["nodes"] if n["id"] == "lonely-worker").items()
    svc = qsvc.services(store, parse_range("15m", None))
    assert svc[0]["service"] == "lonely-worker" and svc[0]["requests"] == 1  # a root span is an entry


def test_retried_batch_is_not_stored_twice(store):
    now = time.time_ns()
    cols, tids = generate(200, now - 60 * NS, 30 * NS, store=store)
    n = len(cols["trace_id"])
    assert store.insert("spans", cols, batch_id=99) == n
    assert store.insert("spans", cols, batch_id=99, verify=True) == 0
    assert store.query(f"SELECT count() FROM {store.t('spans')}").scalar() == n
    tr = parse_range("5m", None)
    assert sum(s["span_count"] for s in qsvc.services(store, tr)) == n
    t = qtr.trace(store, tids[0].hex())
    assert len({s["span_id"] for s in t["spans"]}) == t["span_count"]


def _log_cols(store, n, now, trace_id):
    cols = store.columns_for("logs")
    for i in range(n):
        k, v, t = encode_map({"i": i, "ok": i % 2 == 0})
        for key, val in dict(timestamp=now // NS, ts_ns=now + i, observed_ns=now + i, trace_id=trace_id,
                             span_id=os.urandom(8), flags=1, severity_number=17 if i % 3 == 0 else 9,
                             severity_text="ERROR" if i % 3 == 0 else "INFO", service="orders", instance="i-1",
                             event_name="", body=f"message {i} O'Reilly", attr_keys=k, attr_values=v, attr_types=t,
                             resource_keys=["service.name"], resource_values=["orders"], scope_name="app",
                             scope_version="").items():
            cols[key].append(val)
    return cols


def test_logs_filters(store):
    now = time.time_ns()
    tid = os.urandom(16)
    store.insert("logs", _log_cols(store, 30, now, tid))
    tr = parse_range("5m", None)
    assert len(qtel.logs(store, tr, limit=1000)) == 30
    errs = qtel.logs(store, tr, severity="error")
    assert len(errs) == 10 and all(r["severity"] == "ERROR" for r in errs)
    assert len(qtel.logs(store, tr, trace_id=tid.hex())) == 30
    assert len(qtel.logs(store, tr, trace_id=os.urandom(16).hex())) == 0
    hits = qtel.logs(store, tr, q="message 7 o'reilly")
    assert [h["body"] for h in hits] == ["message 7 O'Reilly"]
    assert hits[0]["attributes"] == {"i": 7, "ok": False}


def _metric_cols(store, now):
    cols = store.columns_for("metric_points")
    defaults = dict(start_ns=now - 60 * NS, description="", unit="1", temporality=2, is_monotonic=0, flags=0,
                    resource_keys=[], resource_values=[], scope_name="", scope_version="", count=0, sum=0.0,
                    min=0.0, max=0.0, bucket_counts=[], explicit_bounds=[], exp_scale=0, exp_zero_count=0,
                    exp_positive_offset=0, exp_positive_counts=[], exp_negative_offset=0, exp_negative_counts=[],
                    quantiles=[], quantile_values=[], exemplar_trace_ids=[], exemplar_span_ids=[],
                    exemplar_values=[], exemplar_times_ns=[])
    for i in range(10):
        for inst, base in (("a", 10.0), ("b", 20.0)):
            k, v, t = encode_map({"state": "user", "cpu": inst})
            row = dict(defaults, timestamp=(now - i * 30 * NS) // NS, ts_ns=now - i * 30 * NS, service="orders",
                       instance=inst, name="container.cpu.utilization", type=1, attr_keys=k, attr_values=v,
                       attr_types=t, value=base + i)
            for key, val in row.items():
                cols[key].append(val)
    # one histogram point with exemplars
    k, v, t = encode_map({"http.route": "/x"})
    row = dict(defaults, timestamp=now // NS, ts_ns=now, service="orders", instance="a",
               name="http.server.request.duration", type=3, attr_keys=k, attr_values=v, attr_types=t, value=0.0,
               count=4, sum=2.0, bucket_counts=[1, 2, 1], explicit_bounds=[0.1, 1.0],
               exemplar_trace_ids=[os.urandom(16)], exemplar_span_ids=[os.urandom(8)], exemplar_values=[0.5],
               exemplar_times_ns=[now])
    for key, val in row.items():
        cols[key].append(val)
    return cols


def test_metrics_names_and_series(store):
    now = time.time_ns()
    store.insert("metric_points", _metric_cols(store, now))
    tr = parse_range("15m", None)
    names = {m["name"]: m for m in qtel.metric_names(store, tr)}
    assert names["container.cpu.utilization"]["type"] == "gauge"
    assert names["http.server.request.duration"]["type"] == "histogram"
    s = qtel.metric_series(store, "container.cpu.utilization", tr, agg="max", step_s=3600)
    assert {tuple(sorted(x["labels"].items())) for x in s["series"]} == {
        (("cpu", "a"), ("instance", "a"), ("service", "orders"), ("state", "user")),
        (("cpu", "b"), ("instance", "b"), ("service", "orders"), ("state", "user"))}
    by_inst = {x["labels"]["instance"]: max(p[1] for p in x["points"]) for x in s["series"]}
    assert by_inst == {"a": 19.0, "b": 29.0}
    g = qtel.metric_series(store, "container.cpu.utilization", tr, labels=["cpu=b"], agg="min", step_s=3600,
                           group_by=["service"])
    assert len(g["series"]) == 1 and min(p[1] for p in g["series"][0]["points"]) == 20.0
    h = qtel.metric_series(store, "http.server.request.duration", tr, agg="avg", step_s=3600)
    assert h["series"][0]["points"][0][1] == 0.5
    with pytest.raises(InvalidParameter):
        qtel.metric_series(store, "x", tr, agg="median; DROP TABLE spans")


def test_retention_readable_from_server_and_partitions_dropped(store):
    assert store.retention()["spans"] == 7
    store.set_retention("spans", 3)
    assert store.retention()["spans"] == 3
    if store.caps.ttl:
        assert "toIntervalDay(3)" in store.table_ttl("spans")
    else:
        assert store.table_ttl("spans") == ""
    old = time.time_ns() - 10 * 86400 * NS
    cols, _ = generate(100, old, NS, store=store)
    store.insert("spans", cols)
    fresh, _ = generate(50, time.time_ns() - 60 * NS, NS, store=store)
    store.insert("spans", fresh)
    dropped = store.enforce_retention()
    assert any(t == "spans" for t, _ in dropped)
    left = store.query(f"SELECT count() FROM {store.t('spans')}").scalar()
    assert left == len(fresh["trace_id"])
    with pytest.raises(InvalidParameter):
        store.set_retention("spans; DROP TABLE x", 3)
    with pytest.raises(InvalidParameter):
        store.set_retention("spans", 0)


def test_documents_round_trip(store):
    store.put_document("alert_rules", "r1", {"alert": "A", "threshold": 1})
    store.put_document("alert_rules", "r1", {"alert": "A", "threshold": 2})
    store.put_document("alert_rules", "r2", {"alert": "B"})
    store.put_document("alert_rules", "r2", {}, deleted=True)
    assert store.documents("alert_rules") == [{"alert": "A", "threshold": 2, "id": "r1"}]



def test_ended_sessions_round_trip_until_they_expire(store):
    from tracehouse.storage.queries_sessions import ended_sessions, record_ended_session

    record_ended_session(store, "d1", 2_000_000_000)
    record_ended_session(store, "d1", 2_000_000_100)  # signed out twice: one entry, the later expiry
    record_ended_session(store, "d2", 1_000)
    assert ended_sessions(store, 1_999_999_999) == {"d1": 2_000_000_100}
    assert ended_sessions(store, 500) == {"d1": 2_000_000_100, "d2": 1_000}
    assert ended_sessions(store, 500, limit=1) == {"d1": 2_000_000_100}  # the longest-lived first

INJECTIONS = [
    "x' OR '1'='1",
    "x'; DROP TABLE spans; --",
    "x' UNION ALL SELECT name FROM system.tables --",
    "url('http://127.0.0.1:1/x', CSV, 'a String')",
    "x' SETTINGS readonly=0 --",
    "x\\' OR 1=1 --",
    "{service:String}",
    "%(service)s",
    "x\x00y",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_payloads_are_data(seeded, payload):
    store, _, _ = seeded
    tr = parse_range("15m", None)
    assert qtr.search(store, tr, service=payload) == []
    assert qtr.search(store, tr, operation=payload) == []
    assert qtr.search(store, tr, attrs=[(payload, payload)]) == []
    assert qtr.search(store, tr, attrs=[("region", payload)]) == []
    assert qsvc.operations(store, payload, tr) == []
    assert qsvc.series(store, payload, tr)["points"] == []
    assert qtel.logs(store, tr, service=payload, q=payload) == []
    assert qtel.metric_series(store, payload, tr, service=payload, labels=[f"{payload}={payload}"])["series"] == []
    assert qtel.metric_names(store, tr, service=payload) == []
    # the data is still all there
    assert store.query(f"SELECT count() FROM {store.t('spans')}").scalar() > 0


def test_large_batch_in_pipelined_chunks_is_idempotent_per_chunk(store, monkeypatch):
    """Big batches go in pipelined chunks (chDB); a retry after a partial write stores only the
    missing chunks, and never a duplicate."""
    from tracehouse.storage import store as store_mod
    from tracehouse.storage.backend import PipelinedBackend

    monkeypatch.setattr(store_mod, "PIPELINE_CHUNK_ROWS", 100)
    cols, tids = generate(450, time.time_ns() - 60 * NS, 30 * NS, store=store)
    n = len(cols["trace_id"])
    if isinstance(store.backend, PipelinedBackend):
        # a crash after the first chunks: the rest never reach the store (a part written is
        # remembered by its deduplication token, one not written is not)
        real, calls = store.backend.insert_prepared, []

        def crash_after_two(*args, **kwargs):
            calls.append(1)
            if len(calls) > 2:
                raise StorageError("killed between two chunks")
            return real(*args, **kwargs)

        monkeypatch.setattr(store.backend, "insert_prepared", crash_after_two)
        with pytest.raises(StorageError):
            store.insert("spans", cols, batch_id=7)
        monkeypatch.setattr(store.backend, "insert_prepared", real)
        partial = store.query(f"SELECT count() FROM {store.t('spans')}").scalar()
        assert 0 < partial < n
        assert store.insert("spans", cols, batch_id=7, verify=True) == n - partial
        assert store.query(f"SELECT uniqExact(batch_id) FROM {store.t('spans')}").scalar() >= 4
    else:
        assert store.insert("spans", cols, batch_id=7, verify=True) == n
    assert store.query(f"SELECT count() FROM {store.t('spans')}").scalar() == n
    assert store.insert("spans", cols, batch_id=7, verify=True) == 0
    assert store.query(f"SELECT count() FROM {store.t('spans')}").scalar() == n
    t = qtr.trace(store, tids[0].hex())
    assert len({s["span_id"] for s in t["spans"]}) == t["span_count"]


def test_batch_across_midnight_is_written_per_day_and_replays_exactly(store):
    """One batch with rows on two days is two parts with their own ids: losing one part (a crash
    between the two partition writes) and replaying the batch restores exactly that part."""
    day = 86400 * NS
    noon = (time.time_ns() // day) * day - day // 2  # yesterday 12:00 UTC: never near a midnight
    now = noon  # "today" in this test
    today, _ = generate(120, noon, 30 * NS, store=store)
    yesterday, _ = generate(80, noon - day, 30 * NS, store=store)
    cols = {k: today[k] + yesterday[k] for k in today}
    n = len(cols["trace_id"])
    n_yesterday = len(yesterday["trace_id"])
    assert store.insert("spans", cols, batch_id=4242, verify=True) == n
    ids = store.query(f"SELECT batch_id, count() FROM {store.t('spans')} GROUP BY batch_id ORDER BY batch_id").rows
    assert len(ids) == 2 and sorted(c for _, c in ids) == sorted([n - n_yesterday, n_yesterday])
    # lose yesterday's part, as a crash between the two partition writes would
    old_part = next(b for b, c in ids if c == n_yesterday)
    store.query(f"ALTER TABLE {store.t('spans')} DROP PARTITION ID '{_day_id(now - day)}'")
    assert store.query(f"SELECT count() FROM {store.t('spans')} WHERE batch_id = {{b:UInt64}}",
                       {"b": old_part}).scalar() == 0
    assert store.insert("spans", cols, batch_id=4242, verify=True) == n_yesterday
    assert store.insert("spans", cols, batch_id=4242, verify=True) == 0
    assert store.query(f"SELECT count() FROM {store.t('spans')}").scalar() == n


def _day_id(ns: int) -> str:
    return time.strftime("%Y%m%d", time.gmtime(ns // NS))


def test_backends_declare_the_abilities_the_store_relies_on(store):
    """The store reaches what only some backends can do through sub-protocols, not by probing
    attributes: the embedded engine pipelines inserts and has read-only connections for user SQL;
    a server backend is a plain Backend, and the store still gives user SQL a read-only reader."""
    from tracehouse.storage.backend import Backend, EmbeddedBackend, PipelinedBackend

    embedded = store.backend.kind == "chdb"
    assert isinstance(store.backend, Backend)
    assert isinstance(store.backend, PipelinedBackend) is embedded
    assert isinstance(store.backend, EmbeddedBackend) is embedded
    reader = store.rule_reader()
    assert reader.query("SELECT toUInt8(1) AS one").scalar() == 1
    with pytest.raises(StorageError):
        reader.query(f"INSERT INTO {store.t('settings')} (key, value, updated_ns) SELECT 'k', 'v', 1")
