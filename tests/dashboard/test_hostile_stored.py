"""Data any ingest client can store, valid by OTLP, that broke pages for every viewer. Found by
sending it through a running server's receivers, then reading every page and API route."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from playwright.sync_api import expect

from tests.collector.harness import run_collector
from tests.support import oneshot
from tracehouse.dashboard import create_app

NS = 1_000_000_000
PROTOBUF = {"content-type": "application/x-protobuf"}


def _resource(msg, service: str) -> None:
    msg.resource.attributes.append(KeyValue(key="service.name"))
    msg.resource.attributes[-1].value.string_value = service


def _send(url: str, path: str, msg) -> None:
    r = oneshot.post(url + path, content=msg.SerializeToString(), headers=PROTOBUF, timeout=10)
    assert r.status_code == 200, r.text


def _wait(store, sql: str, want: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and store.read(sql).rows[0][0] < want:
        time.sleep(0.2)
    assert store.read(sql).rows[0][0] == want


def test_what_the_receivers_accept_every_page_can_show(chdb_store, tmp_path):
    now = time.time_ns()
    traces = ExportTraceServiceRequest()
    rs = traces.resource_spans.add()
    _resource(rs, "future")
    ss = rs.scope_spans.add()
    far = bytes.fromhex("f0" * 16)  # a trace whose one child starts after 2106-02-07 06:00 UTC
    long = bytes.fromhex("10" * 16)  # a trace whose one child ends 40 days after it began
    for tid, child_start, child_end in ((far, 2 ** 63, 2 ** 63 + 1000), (long, now, now + 40 * 86400 * NS)):
        root = ss.spans.add(trace_id=tid, span_id=b"\x01" * 8, name="root", start_time_unix_nano=now,
                            end_time_unix_nano=now + 1000)
        ss.spans.add(trace_id=tid, span_id=b"\x02" * 8, parent_span_id=root.span_id, name="child",
                     start_time_unix_nano=child_start, end_time_unix_nano=child_end)
    metrics = ExportMetricsServiceRequest()
    rm = metrics.resource_metrics.add()
    _resource(rm, "exp")
    m = rm.scope_metrics.add().metrics.add(name="exp.least.scale")
    m.exponential_histogram.aggregation_temporality = 2
    for i in range(3):  # scale -10, the least OTLP allows: the base is 2^1024, past a double
        p = m.exponential_histogram.data_points.add(start_time_unix_nano=now - 120 * NS,
                                                    time_unix_nano=now - (60 - 10 * i) * NS, scale=-10,
                                                    count=1 + i, sum=1.0)
        p.positive.bucket_counts.extend([1 + i])
    running = run_collector(chdb_store, str(tmp_path / "buf"), max_batch_age=0.05)
    try:
        _send(running.url, "/v1/traces", traces)
        _send(running.url, "/v1/metrics", metrics)
        _wait(chdb_store, f"SELECT count() FROM {chdb_store.t('spans')}", 4)
        _wait(chdb_store, f"SELECT count() FROM {chdb_store.t('metric_points')} WHERE name = 'exp.least.scale'", 3)
    finally:
        running.stop()
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)
    with TestClient(app, raise_server_exceptions=False) as c:
        for tid in (far.hex(), long.hex()):
            for path in (f"/api/traces/{tid}", f"/api/traces/{tid}/outline", f"/traces/{tid}", f"/compare?a={tid}"):
                r = c.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
            assert c.get(f"/api/traces/{tid}").json()["span_count"] == 2
            logs = c.get(f"/traces/{tid}").text.split('id="d-trace-logs" href="', 1)[1].split('"', 1)[0]
            assert c.get(logs.replace("&amp;", "&")).status_code == 200, logs
        for agg in ("", "&agg=p99", "&agg=p50", "&agg=count", "&agg=avg"):
            for path in (f"/api/metrics/explore?metric=exp.least.scale&since=1h{agg}",
                         f"/explore?metric=exp.least.scale&since=1h{agg}"):
                r = c.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])


def test_a_trace_is_called_truncated_only_when_spans_were_left_out(chdb_store, monkeypatch):
    """A trace of exactly the cap's size was called truncated although every span was shown."""
    from testkit.seed import big_trace
    from tracehouse.storage import queries_traces as qtr

    monkeypatch.setattr(qtr, "MAX_TRACE_SPANS", 12)
    whole, cut = big_trace(chdb_store, time.time_ns(), 12), big_trace(chdb_store, time.time_ns(), 13)
    assert (qtr.trace(chdb_store, whole)["truncated"], qtr.trace(chdb_store, whole)["span_count"]) == (False, 12)
    assert (qtr.trace(chdb_store, cut)["truncated"], qtr.trace(chdb_store, cut)["span_count"]) == (True, 12)


def _store_gauge(store, tmp_path, service: str, name: str, values: tuple[float, ...]) -> None:
    """A gauge of ``values``, one a minute up to now, stored through a running collector."""
    now = time.time_ns()
    metrics = ExportMetricsServiceRequest()
    rm = metrics.resource_metrics.add()
    _resource(rm, service)
    m = rm.scope_metrics.add().metrics.add(name=name)
    for i, v in enumerate(values):
        m.gauge.data_points.add(time_unix_nano=now - (len(values) - i) * 60 * NS, as_double=v)
    running = run_collector(store, str(tmp_path / "buf"), max_batch_age=0.05)
    try:
        _send(running.url, "/v1/metrics", metrics)
        _wait(store, f"SELECT count() FROM {store.t('metric_points')}", len(values))
    finally:
        running.stop()


def test_an_alert_whose_value_is_infinite_shows_on_the_alerts_and_service_pages(chdb_store, tmp_path):
    """OTLP doubles may be ±Inf, and a metric rule's ``max`` over such a gauge fires with value +Inf:
    the alerts page and the service page (its firing-alert banner) answered 500 for every viewer."""
    import yaml

    from tracehouse.alerts import Engine, alerts_router, build_config

    _store_gauge(chdb_store, tmp_path, "inf", "queue.depth", (1.0, float("inf"), float("-inf")))
    rules = {"groups": [{"name": "g", "interval": "10s", "rules": [
        {"alert": f"Depth{agg}", "kind": "metric", "metric": "queue.depth", "aggregation": agg, "window": "15m",
         "op": op, "threshold": 0} for agg, op in (("max", ">"), ("min", "<"))]}]}
    engine = Engine(chdb_store, build_config([("/etc/tracehouse/rules.yaml", yaml.safe_load(yaml.safe_dump(rules)))]))
    engine.run_once(time.time_ns())
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store, alerts=engine,
                     routers=[alerts_router(engine)])
    with TestClient(app, raise_server_exceptions=False) as c:
        assert {a["rule_id"] for a in c.get("/api/alerts").json()["alerts"]} == {"g/Depthmax", "g/Depthmin"}
        for path in ("/alerts?since=1h", "/services/inf?since=1h", "/alerts/rules/g/Depthmax"):
            r = c.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
        page = c.get("/alerts?since=1h").text
        assert "∞" in page and "-∞" in page


@pytest.mark.browser
def test_a_gauge_of_values_near_the_largest_double_is_charted_without_errors(chdb_store, tmp_path, page):
    """OTLP doubles reach 1.8e308: a gauge of 0 and 1e308 made plotly.js draw NaN coordinates (two
    console errors per chart and no line) on the explorer and the API-fed charts. Such values are
    gaps in a chart now (the explorer's table still shows them)."""
    from testkit.servers import serving
    from tests.dashboard.browsing import open_page

    _store_gauge(chdb_store, tmp_path, "huge", "huge.gauge", (0.0, 1e308, 2.0, -1.7e308, 3.0))
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)
    with serving(app) as port:
        for agg in ("avg", "max", "min", "last"):
            open_page(page, f"http://127.0.0.1:{port}/explore?since=1h&metric=huge.gauge&agg={agg}")
            expect(page.locator("[data-fig]:not([data-rendered])")).to_have_count(0, timeout=20_000)
            assert page.locator("[data-fig] .main-svg").count() > 0
            assert page.problems == [], (agg, page.problems)
