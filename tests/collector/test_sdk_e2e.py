"""End to end: the official OpenTelemetry SDK exporters (and OTLP/JSON bodies) → a real collector
over HTTP → the store, read back with SQL and through the dashboard's JSON API."""

from __future__ import annotations

import gzip
import json
import time

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from starlette.testclient import TestClient

from tests.collector.harness import run_collector
from tests.collector.payloads import kv
from tests.support import oneshot
from tracehouse.collector.decode import to_json
from tracehouse.config import Settings
from tracehouse.dashboard import create_app
from tracehouse.storage.attrs import decode_map

TOKEN = "e2e-token"


@pytest.fixture
def running(store, tmp_path):
    r = run_collector(store, str(tmp_path / "buffer"), ingest_tokens=[TOKEN], max_batch_age=0.2)
    yield r
    r.stop()


def _b(v) -> bytes:
    # clickhouse-driver hands back FixedString ids that happen to be valid UTF-8 as str
    return v if isinstance(v, bytes) else v.encode()


def _rows(store, sql: str) -> list[dict]:
    return store.query(sql.replace("{db}", store.db)).dicts()


def test_sdk_traces_end_to_end(running, store):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-shop", "service.instance.id": "i-7",
                                                        "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("e2e.tests", "1.2.3")
    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER,
                                      attributes={"http.route": "/cart", "http.response.status_code": 200,
                                                  "flag": True, "ratio": 0.5, "tags": ["a", "b"],
                                                  "db.password": "hunter2",
                                                  "url.full": "https://u:pw@shop.example/x?token=abc&q=1"}) as root:
        root.add_event("cache miss", {"key": "cart:1", "attempt": 2})
        with tracer.start_as_current_span("SELECT carts", kind=SpanKind.CLIENT,
                                          links=[Link(root.get_span_context(), {"why": "follows"})]) as child:
            child.set_status(Status(StatusCode.ERROR, "timeout"))
    provider.shutdown()
    spans = memory.get_finished_spans()
    exporter = OTLPSpanExporter(endpoint=running.url + "/v1/traces", headers={"authorization": f"Bearer {TOKEN}"},
                                compression=Compression.Gzip)
    assert exporter.export(spans).name == "SUCCESS"
    exporter.shutdown()
    running.wait_stored("traces", 2)

    trace_id = root.get_span_context().trace_id.to_bytes(16, "big")
    rows = _rows(store, "SELECT * FROM {db}.spans ORDER BY start_ns")
    assert len(rows) == 2
    parent, kid = rows
    assert _b(parent["trace_id"]) == trace_id and kid["parent_span_id"] == parent["span_id"]
    assert parent["service"] == "e2e-shop" and parent["name"] == "GET /cart" and parent["kind"] == 2
    assert parent["scope_name"] == "e2e.tests" and parent["scope_version"] == "1.2.3"
    attrs = decode_map(parent["attr_keys"], parent["attr_values"], parent["attr_types"])
    assert attrs["http.response.status_code"] == 200 and attrs["flag"] is True and attrs["ratio"] == 0.5
    assert attrs["tags"] == ["a", "b"]
    assert attrs["db.password"] == "[REDACTED]"
    assert attrs["url.full"] == "https://u:[REDACTED]@shop.example/x?token=[REDACTED]&q=1"
    res = dict(zip(parent["resource_keys"], parent["resource_values"], strict=True))
    assert res["deployment.environment"] == "test" and res["service.instance.id"] == "i-7"
    assert parent["events_name"] == ["cache miss"]
    assert json.loads(parent["events_attrs"][0]) == {"key": "cart:1", "attempt": 2}
    assert kid["status_code"] == 2 and kid["status_message"] == "timeout"
    assert [_b(x) for x in kid["links_trace_id"]] == [trace_id] and kid["links_span_id"] == [parent["span_id"]]
    assert json.loads(kid["links_attrs"][0]) == {"why": "follows"}
    assert kid["duration_ns"] > 0

    # ... and the dashboard's JSON API shows the same trace.
    with TestClient(create_app(Settings(), store)) as client:
        body = client.get(f"/api/traces/{trace_id.hex()}").json()
    assert trace_id.hex() in json.dumps(body)
    assert "SELECT carts" in json.dumps(body)


def test_sdk_metrics_end_to_end(running, store):
    exporter = OTLPMetricExporter(endpoint=running.url + "/v1/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create({"service.name": "e2e-metrics", "service.instance.id": "m-1"}),
                             metric_readers=[reader], exemplar_filter=AlwaysOnExemplarFilter(),
                             views=[View(instrument_name="latency.exp",
                                         aggregation=ExponentialBucketHistogramAggregation())])
    meter = provider.get_meter("e2e.meter")
    tracer = TracerProvider().get_tracer("x")
    meter.create_counter("orders", unit="1", description="orders placed").add(3, {"region": "eu"})
    meter.create_up_down_counter("queue.depth").add(-2)
    meter.create_observable_gauge("temperature", callbacks=[lambda _o: [
        __import__("opentelemetry.metrics", fromlist=["Observation"]).Observation(21.5, {"room": "a"})]])
    with tracer.start_as_current_span("measured") as span:
        meter.create_histogram("latency", unit="ms").record(12.0, {"route": "/a"})
        span_id = span.get_span_context().span_id.to_bytes(8, "big")
    meter.create_histogram("latency.exp").record(3.0)
    meter.create_histogram("latency.exp").record(300.0)
    provider.shutdown()
    running.wait_stored("metrics", 5)
    rows = {r["name"]: r for r in _rows(store, "SELECT * FROM {db}.metric_points")}
    assert rows["orders"]["type"] == 2 and rows["orders"]["value"] == 3 and rows["orders"]["is_monotonic"] == 1
    assert rows["orders"]["temporality"] == 2 and rows["orders"]["unit"] == "1"
    assert rows["orders"]["service"] == "e2e-metrics" and rows["orders"]["instance"] == "m-1"
    assert dict(zip(rows["orders"]["attr_keys"], rows["orders"]["attr_values"], strict=True)) == {"region": "eu"}
    assert rows["queue.depth"]["value"] == -2 and rows["queue.depth"]["is_monotonic"] == 0
    assert rows["temperature"]["type"] == 1 and rows["temperature"]["value"] == 21.5
    h = rows["latency"]
    assert h["type"] == 3 and h["count"] == 1 and h["sum"] == 12.0 and h["min"] == 12.0 and h["max"] == 12.0
    assert sum(h["bucket_counts"]) == 1 and len(h["explicit_bounds"]) == len(h["bucket_counts"]) - 1
    assert [_b(x) for x in h["exemplar_span_ids"]] == [span_id] and h["exemplar_values"] == [12.0]
    e = rows["latency.exp"]
    assert e["type"] == 4 and e["count"] == 2 and sum(e["exp_positive_counts"]) == 2 and e["exp_scale"] <= 20


def test_sdk_logs_end_to_end(running, store):
    exporter = OTLPLogExporter(endpoint=running.url + "/v1/logs", headers={"authorization": f"Bearer {TOKEN}"})
    provider = LoggerProvider(resource=Resource.create({"service.name": "e2e-logs", "service.instance.id": "l-1"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("e2e.logger")
    tracer = TracerProvider().get_tracer("x")
    with tracer.start_as_current_span("with-log") as span:
        ctx = trace_api.set_span_in_context(span)
        logger.emit(body="payment failed", severity_number=__import__("opentelemetry._logs", fromlist=["x"])
                    .SeverityNumber.ERROR, severity_text="ERROR", attributes={"order": 42, "api_key": "k"},
                    context=ctx, event_name="payment.failure")
        logger.emit(body={"structured": [1, 2], "ok": False}, context=ctx)
    provider.shutdown()
    running.wait_stored("logs", 2)
    rows = _rows(store, "SELECT * FROM {db}.logs ORDER BY ts_ns")
    assert len(rows) == 2
    first, second = rows
    ctx = span.get_span_context()
    assert _b(first["trace_id"]) == ctx.trace_id.to_bytes(16, "big")
    assert _b(first["span_id"]) == ctx.span_id.to_bytes(8, "big")
    assert first["body"] == "payment failed" and first["severity_number"] == 17 and first["severity_text"] == "ERROR"
    assert first["event_name"] == "payment.failure" and first["service"] == "e2e-logs" and first["instance"] == "l-1"
    assert decode_map(first["attr_keys"], first["attr_values"], first["attr_types"]) == {
        "order": 42, "api_key": "[REDACTED]"}
    assert json.loads(second["body"]) == {"structured": [1, 2], "ok": False}


def _summary_request() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", "json-svc"))
    m = rm.scope_metrics.add().metrics.add()
    m.name = "rpc.duration"
    p = m.summary.data_points.add()
    p.time_unix_nano = time.time_ns()
    p.count, p.sum = 10, 55.0
    for q, v in ((0.5, 4.0), (0.99, 9.5)):
        qv = p.quantile_values.add()
        qv.quantile, qv.value = q, v
    return req


@pytest.mark.parametrize("encoding", ["json", "json+gzip"])
def test_otlp_json_traces_and_summary(running, store, encoding):
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "json-svc"))
    s = rs.scope_spans.add().spans.add()
    s.trace_id, s.span_id, s.parent_span_id = bytes(range(1, 17)), bytes(range(1, 9)), bytes(range(9, 17))
    s.name, s.kind = "json span", 3
    s.start_time_unix_nano, s.end_time_unix_nano = time.time_ns() - 5000, time.time_ns()
    s.attributes.extend([kv("nested", {"a": [1, {"b": True}]}), kv("raw", b"\x00\xff")])
    link = s.links.add()
    link.trace_id, link.span_id = bytes(16 * [7]), bytes(8 * [7])
    body = to_json(req)
    doc = json.loads(body)
    span_doc = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span_doc["traceId"] == bytes(range(1, 17)).hex()  # OTLP/JSON: hex ids
    assert span_doc["kind"] == 3  # enums as integers
    headers = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}
    if encoding.endswith("gzip"):
        body, headers["content-encoding"] = gzip.compress(body), "gzip"
    r = oneshot.post(running.url + "/v1/traces", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {}
    headers.pop("content-encoding", None)
    r = oneshot.post(running.url + "/v1/metrics", content=to_json(_summary_request()), headers=headers)
    assert r.status_code == 200
    running.wait_stored("traces", 1)
    running.wait_stored("metrics", 1)
    row = _rows(store, "SELECT * FROM {db}.spans")[0]
    assert _b(row["trace_id"]) == bytes(range(1, 17)) and _b(row["parent_span_id"]) == bytes(range(9, 17))
    assert [_b(x) for x in row["links_trace_id"]] == [bytes(16 * [7])]
    attrs = decode_map(row["attr_keys"], row["attr_values"], row["attr_types"])
    assert attrs["nested"] == {"a": [1, {"b": True}]} and attrs["raw"] == "AP8="
    m = _rows(store, "SELECT * FROM {db}.metric_points")[0]
    assert m["type"] == 5 and m["count"] == 10 and m["sum"] == 55.0
    assert m["quantiles"] == [0.5, 0.99] and m["quantile_values"] == [4.0, 9.5]


def test_a_long_value_is_redacted_in_linear_time(running, store):
    # "a" * n + "@://": Python's re tried the URL scheme from every letter of the run (quadratic:
    # 128,000 letters held the interpreter ~40 s; a 1 MB value, hours); RE2 reads it once
    hostile = "a" * 128_000 + "@://"
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-hostile"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("e2e.tests").start_as_current_span(
            "GET /x", attributes={"note": hostile, "url.full": "https://u:pw@shop.example/x"}):
        pass
    provider.shutdown()
    exporter = OTLPSpanExporter(endpoint=running.url + "/v1/traces", headers={"authorization": f"Bearer {TOKEN}"})
    t0 = time.monotonic()
    assert exporter.export(memory.get_finished_spans()).name == "SUCCESS"
    exporter.shutdown()
    running.wait_stored("traces", 1, timeout=120)
    took = time.monotonic() - t0
    assert took < 15, f"one span with a {len(hostile):,}-character value took {took:.1f} s to store"
    (row,) = _rows(store, "SELECT attr_keys, attr_values, attr_types FROM {db}.spans")
    attrs = decode_map(row["attr_keys"], row["attr_values"], row["attr_types"])
    assert attrs["note"] == "a" * 16384  # cut to the value limit after redaction
    assert attrs["url.full"] == "https://u:[REDACTED]@shop.example/x"
