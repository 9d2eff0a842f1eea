"""A protobuf body of countless tiny elements is refused before it is parsed, over OTLP/HTTP (gzip)
and OTLP/gRPC, in far less time than parsing it took (12 MiB of empty spans: ~10 s and ~1 GB);
real bodies of several MiB are stored whole."""

from __future__ import annotations

import gzip
import time

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from testkit.wire_shapes import SHAPES, empty_elements
from tests.collector.harness import run_collector
from tests.collector.payloads import traces
from tests.support import oneshot

#: the shapes made of countless elements at a list level (those inside a span, a log record or a data
#: point: test_parse_budget_inside.py)
LIST_SHAPES = ["resource_spans", "resource_attributes", "scope_spans", "spans", "log_records", "metrics", "gauge_points",
               "histogram_points"]
SERVICES = {"traces": "trace.v1.TraceService", "metrics": "metrics.v1.MetricsService",
            "logs": "logs.v1.LogsService"}
SIZE = 12 << 20  # under the default 20 MiB cap on a decompressed body or gRPC message
BOUND_S = 3.0  # generous for a slow machine: refused in ~10 ms here, parsed in ~10 s before


@pytest.fixture
def collector(chdb_store, tmp_path):
    r = run_collector(chdb_store, str(tmp_path / "buffer"), grpc=True, max_batch_age=0.1)
    yield r
    r.stop()


def _alive(r) -> None:
    good, _ = traces(3)
    resp = oneshot.post(r.url + "/v1/traces", content=good.SerializeToString(),
                      headers={"content-type": "application/x-protobuf"}, timeout=10)
    assert resp.status_code == 200, resp.text
    r.wait_stored("traces", 3)


@pytest.mark.parametrize("shape", LIST_SHAPES)
def test_a_body_of_countless_empty_elements_is_refused_before_it_is_parsed(collector, shape):
    assert shape in SHAPES
    signal, body = empty_elements(shape, SIZE)
    assert len(body) > SIZE - 64
    # OTLP/HTTP, gzip: ~12 kB on the wire
    t0 = time.monotonic()
    resp = oneshot.post(collector.url + f"/v1/{signal}", content=gzip.compress(body),
                      headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"}, timeout=60)
    took = time.monotonic() - t0
    assert resp.status_code == 413, (resp.status_code, resp.content[:200])
    assert b"too many for their size" in resp.content and b"send fewer per request" in resp.content
    assert took < BOUND_S, took
    # OTLP/gRPC: the same message, uncompressed
    with grpc.insecure_channel(collector.grpc_target, options=[("grpc.max_send_message_length", -1)]) as ch:
        call = ch.unary_unary(f"/opentelemetry.proto.collector.{SERVICES[signal]}/Export")
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            call(body, timeout=60)
        took = time.monotonic() - t0
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    assert "too many for their size" in e.value.details() and "send fewer per request" in e.value.details()
    assert took < BOUND_S, took
    assert collector.collector.wal.records == 0  # nothing acknowledged, nothing stored
    m = collector.collector.metrics
    assert m.get("tracehouse_collector_rejected_requests_total", signal=signal, reason="too_large") == 2
    _alive(collector)


def _real_spans(n: int, service: str) -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service, "host.name": "host-1"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("parse.budget.tests", "1.0")
    for i in range(n):
        with tracer.start_as_current_span(f"GET /orders/{{id}} {i % 20}", attributes={
                "http.request.method": "GET", "url.path": f"/orders/{i}", "http.response.status_code": 200,
                "server.address": "orders.internal", "user_agent.original": "python-requests/2.32"}):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def test_a_real_body_of_several_mib_is_stored_whole_over_http_and_grpc(collector, chdb_store):
    http_spans = _real_spans(15_000, "big-http")
    grpc_spans = _real_spans(15_000, "big-grpc")
    http = HttpSpanExporter(endpoint=collector.url + "/v1/traces", timeout=60)
    assert http.export(http_spans) == SpanExportResult.SUCCESS
    g = GrpcSpanExporter(endpoint=collector.grpc_target, insecure=True, timeout=60)
    assert g.export(grpc_spans) == SpanExportResult.SUCCESS
    collector.wait_stored("traces", 30_000)
    rows = chdb_store.query(f"SELECT service, count() FROM {chdb_store.db}.spans GROUP BY service "
                            "ORDER BY service").rows
    assert [tuple(r) for r in rows] == [("big-grpc", 15_000), ("big-http", 15_000)]


def test_real_metrics_and_logs_bodies_past_the_floor_pass_and_a_cut_body_is_left_to_the_parser(collector):
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from tracehouse.collector.wire_budget import SMALL_BODY, over_budget

    now = time.time_ns()
    metrics = ExportMetricsServiceRequest()
    rm = metrics.resource_metrics.add()
    rm.resource.attributes.add(key="service.name").value.string_value = "m"
    sm = rm.scope_metrics.add()
    for j in range(4_000):  # SDK-like cumulative sums: start, time, value, two attributes
        m = sm.metrics.add(name=f"requests.{j % 50}", unit="1")
        m.sum.aggregation_temporality, m.sum.is_monotonic = 2, True
        for k in range(8):
            p = m.sum.data_points.add(start_time_unix_nano=now - 10**10, time_unix_nano=now, as_int=k)
            p.attributes.add(key="route").value.string_value = f"/r/{k}"
            p.attributes.add(key="code").value.int_value = 200
    logs = ExportLogsServiceRequest()
    sl = logs.resource_logs.add().scope_logs.add()
    for i in range(30_000):  # what the SDK's logging handler sends: times, severity, a short body
        sl.log_records.add(time_unix_nano=now, observed_time_unix_nano=now, severity_number=13,
                           severity_text="WARN").body.string_value = f"retrying {i}"
    for signal, msg in (("metrics", metrics), ("logs", logs)):
        body = msg.SerializeToString()
        assert len(body) > SMALL_BODY
        assert over_budget(signal, body) is None
        resp = oneshot.post(collector.url + f"/v1/{signal}", content=gzip.compress(body),
                          headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"}, timeout=60)
        assert resp.status_code == 200, resp.content[:200]
    collector.wait_stored("metrics", 32_000)
    collector.wait_stored("logs", 30_000)
    # a body cut in the middle of an element is not counted as over budget: the parser names it (400)
    good = traces(40_000)[0].SerializeToString()
    cut = good[: len(good) // 2 + 3]
    assert len(cut) > SMALL_BODY and over_budget("traces", cut) is None
    resp = oneshot.post(collector.url + "/v1/traces", content=cut, headers={"content-type": "application/x-protobuf"},
                      timeout=60)
    assert resp.status_code == 400 and b"malformed protobuf" in resp.content, resp.content[:200]
