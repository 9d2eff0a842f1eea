"""The lean OTLP encoder writes what the stock one writes (decoded with the official classes and
compared), and its transports deliver, retry and time out as the OTLP specification asks."""

from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.metrics import Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from tests.agent.otlp_sink import Sink, TricklingServer
from tracehouse.agent import otlp_exporters, otlp_metrics, otlp_spans
from tracehouse.agent.otlp_transport import ExportFailed, GrpcTransport, HttpTransport


def _spans():
    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource({"service.name": "s", "process.command_args": ["a", "b"], "n": 3},
                                          schema_url="https://opentelemetry.io/schemas/1.21.0"))
    tp.add_span_processor(SimpleSpanProcessor(mem))
    a = tp.get_tracer("scope-a", "1.0", schema_url="https://x/1")
    b = tp.get_tracer("scope-b")
    remote = set_span_in_context(NonRecordingSpan(
        SpanContext(123, 456, True, TraceFlags(1), TraceState([("k", "v"), ("a", "b")]))))
    for i in range(150):
        links = [Link(SpanContext(9, 8, True, TraceFlags(1), TraceState([("x", "y")])), {"l": 1})] if i % 5 == 0 else None
        with a.start_as_current_span(f"GET /hello/{i % 7}", kind=SpanKind(i % 5), links=links,
                                     context=remote if i % 3 == 0 else None) as sp:
            sp.set_attributes({"http.request.method": "GET", "url.path": f"/hello/u{i % 50}", "server.port": 8000,
                               "f": 1.5, "b": True, "neg": -5, "big": 2 ** 63 - 1, "arr": [1, 2, 3],
                               "sarr": ("x", "y"), "barr": [True, False], "farr": [0.5], "empty": "", "zero": 0,
                               "uni": "héllo ✓ \U0001f600", "long": "x" * 300})
            if i % 4 == 0:
                sp.add_event("ev", {"e": 1, "s": "v"})
                sp.add_event("")
                sp.set_status(Status(StatusCode.ERROR, "boom"))
            with b.start_as_current_span("inner") as c:
                c.set_status(Status(StatusCode.OK))
    return mem.get_finished_spans()


def test_lean_span_encoding_matches_the_stock_encoder():
    spans = _spans()
    ref = encode_spans(spans)
    lean = ExportTraceServiceRequest()
    lean.ParseFromString(otlp_spans.encode(spans, pause=lambda: None, slice_size=7))
    # The stock encoder drops a link's trace_state (the OTLP Link message has one); ours keeps it.
    linked = [link for ss in lean.resource_spans[0].scope_spans for s in ss.spans for link in s.links]
    assert len(linked) == 30 and all(link.trace_state == "x=y" for link in linked)
    for link in linked:
        link.ClearField("trace_state")
    assert lean == ref
    assert len(lean.resource_spans[0].scope_spans) == 2 and len(lean.resource_spans[0].scope_spans[0].spans) == 150


def test_spans_are_exported_under_the_current_resource():
    spans = _spans()[:3]
    lean = ExportTraceServiceRequest()
    lean.ParseFromString(otlp_spans.encode(spans, resource=Resource({"service.instance.id": "child"})))
    kvs = {kv.key: kv.value.string_value for kv in lean.resource_spans[0].resource.attributes}
    assert kvs == {"service.instance.id": "child"}


def test_lean_metric_encoding_matches_the_stock_encoder_exemplars_included():
    reader = InMemoryMetricReader()
    mp = MeterProvider(resource=Resource({"service.name": "m"}, schema_url="https://s/r"), metric_readers=[reader],
                       exemplar_filter=AlwaysOnExemplarFilter(),
                       views=[View(instrument_name="expo", aggregation=ExponentialBucketHistogramAggregation()),
                              View(instrument_name="*")])
    meter = mp.get_meter("meter", "2.0", schema_url="https://s")
    meter.create_counter("c", unit="1", description="d").add(5, {"a": "b"})
    meter.create_up_down_counter("u").add(-3, {"x": 1})
    hist = meter.create_histogram("h", unit="s")
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("x"):
        hist.record(0.3, {"r": "/a"})
        hist.record(7.5, {"r": "/a"})
    expo = meter.create_histogram("expo")
    for v in (0.001, 0.5, 3, 100, 0):
        expo.record(v)
    meter.create_observable_gauge("g", callbacks=[lambda o: [Observation(1.25, {"k": "v"}), Observation(7)]])
    meter.create_observable_counter("oc", callbacks=[lambda o: [Observation(2 ** 40)]])
    data = reader.get_metrics_data()
    ref = encode_metrics(data)
    lean = ExportMetricsServiceRequest()
    lean.ParseFromString(otlp_metrics.encode(data, pause=lambda: None))
    assert lean == ref
    h = next(m for m in lean.resource_metrics[0].scope_metrics[0].metrics if m.name == "h")
    assert len(h.histogram.data_points[0].exemplars) == 2 and h.histogram.data_points[0].exemplars[0].trace_id


def test_gil_share_lowers_the_switch_interval_while_exports_run_and_restores_it():
    before = sys.getswitchinterval()
    seen = []
    with otlp_exporters.gil_share():
        seen.append(sys.getswitchinterval())
        with otlp_exporters.gil_share():
            seen.append(sys.getswitchinterval())
        seen.append(sys.getswitchinterval())
    assert seen == [otlp_exporters.SWITCH_S] * 3 and sys.getswitchinterval() == before


class _Recorded:
    """A transport that keeps what it was sent and the switch interval at that moment."""

    def __init__(self):
        self.sent = []

    def send(self, body, timeout=None):  # timeout: a flush's time left, as the real transports take it
        self.sent.append((body, sys.getswitchinterval()))

    def close(self):
        pass


@pytest.mark.parametrize("mode", ["end", "requests", "switch", "none"])
def test_span_exports_yield_the_gil_as_configured(monkeypatch, mode):
    pauses = []
    monkeypatch.setenv("TRACEHOUSE_EXPORT_YIELD", mode)
    monkeypatch.setattr(otlp_exporters, "yield_to_requests", lambda: pauses.append(1))
    transport = _Recorded()
    spans = _spans()
    otlp_exporters.LeanSpanExporter(transport).export(spans)
    (body, interval), = transport.sent
    decoded = ExportTraceServiceRequest()
    decoded.ParseFromString(body)
    assert sum(len(ss.spans) for rs in decoded.resource_spans for ss in rs.scope_spans) == len(spans)
    slices = -(-len(spans) // otlp_spans.SLICE)
    # after each slice it encoded (spans handed over already encoded need none, see the next test)
    assert len(pauses) == {"requests": slices, "switch": 0, "none": 0, "end": slices}[mode]
    assert (interval == otlp_exporters.SWITCH_S) is (mode == "switch")


def test_spans_encoded_as_they_end_export_the_same_request():
    from tracehouse.agent import batching
    from tracehouse.agent.batching import LeanBatchSpanProcessor
    from tracehouse.agent.export import GuardedSpanExporter

    transport = _Recorded()
    proc = LeanBatchSpanProcessor(GuardedSpanExporter(lambda: otlp_exporters.LeanSpanExporter(transport)),
                                  max_queue_size=4096, max_export_batch_size=4096, schedule_delay_millis=60_000,
                                  encoder=otlp_spans.encoded)
    proc._export_lock.acquire()  # hold the export thread back to look at the queue
    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource({"service.name": "s"}))
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tp.add_span_processor(proc)
    tracer = tp.get_tracer("t", "1")
    for i in range(40):
        with tracer.start_as_current_span(f"op{i % 3}", kind=SpanKind.SERVER) as sp:
            sp.set_attributes({"n": i, "s": "x" * (i % 5)})
            with tracer.start_as_current_span("child"):
                pass
            assert proc._raw[-1].name == "child"  # a child is not encoded before its root ends
            if i % 7 == 0:
                sp.add_event("e", {"k": i})
                sp.set_status(Status(StatusCode.ERROR, "bad"))
        assert len(proc._raw) < batching.ENCODE_AT  # a root's end encodes what gathered
    assert len(proc._queue) + len(proc._raw) == 80 and len(proc._queue) > 80 - batching.ENCODE_AT
    assert all(type(r) is otlp_spans.EncodedSpan for r in proc._queue)
    with tracer.start_as_current_span("long job"):
        with tracer.start_as_current_span("step"):
            pass
        proc._export_lock.release()
        assert proc.force_flush(10_000)  # what still waits (the step of a running job too): the exporter encodes
    assert proc.force_flush(10_000)
    got = ExportTraceServiceRequest()
    for body, _ in transport.sent:
        part = ExportTraceServiceRequest()
        part.ParseFromString(body)
        got.resource_spans.extend(part.resource_spans)
    ref = encode_spans(mem.get_finished_spans())
    assert sorted(s.SerializeToString() for rs in got.resource_spans for ss in rs.scope_spans for s in ss.spans) == \
        sorted(s.SerializeToString() for rs in ref.resource_spans for ss in rs.scope_spans for s in ss.spans)
    assert len(transport.sent) == 2
    proc.shutdown()


def test_exports_wait_for_requests_in_flight_but_not_for_ever(monkeypatch):
    from tracehouse.agent.watchdog import INFLIGHT

    monkeypatch.setattr(otlp_exporters, "BUSY_MAX_S", 5.0)
    INFLIGHT["test-request"] = None
    timer = threading.Timer(0.05, INFLIGHT.pop, ("test-request", None))
    t0 = time.monotonic()
    timer.start()
    otlp_exporters.yield_to_requests()  # returns once the request is done
    waited = time.monotonic() - t0
    timer.join()
    assert 0.05 <= waited < 4.0
    monkeypatch.setattr(otlp_exporters, "BUSY_MAX_S", 0.05)
    INFLIGHT["test-request"] = None
    try:
        t0 = time.monotonic()
        otlp_exporters.yield_to_requests()  # a request that never ends: the wait is bounded
        assert 0.05 <= time.monotonic() - t0 < 4.0
    finally:
        INFLIGHT.pop("test-request", None)


class _Answers(BaseHTTPRequestHandler):
    script: list = []
    bodies: list = []

    def do_POST(self):
        self.bodies.append(self.rfile.read(int(self.headers["content-length"])))
        status, headers = self.script.pop(0) if self.script else (200, {})
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def answers():
    _Answers.script, _Answers.bodies = [], []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}/v1/traces"
    srv.shutdown()
    srv.server_close()


def test_http_transport_retries_503_after_retry_after_and_gives_up_at_its_deadline(answers):
    _, url = answers
    _Answers.script = [(503, {"Retry-After": "0.2"}), (200, {})]
    t = HttpTransport(url, {"x-key": "v"}, timeout=3.0)
    t0 = time.monotonic()
    t.send(b"abc")
    assert 0.2 <= time.monotonic() - t0 < 2 and _Answers.bodies == [b"abc", b"abc"]
    _Answers.script = [(429, {"Retry-After": "30"})]
    with pytest.raises(ExportFailed, match="429"):
        t.send(b"x")  # Retry-After beyond the deadline: fail now, the guard pauses
    _Answers.script = [(400, {})]
    with pytest.raises(ExportFailed, match="400"):
        t.send(b"y")
    t.close()


@pytest.mark.parametrize("part", ["head", "body"])
def test_http_transport_deadline_covers_an_answer_sent_a_byte_at_a_time(part):
    """A socket timeout bounds one read: a collector or proxy answering a byte every 0.1 s held an
    export (and a flush waiting for it) for as long as it went on, whatever the export timeout."""
    slow = TricklingServer.http(part)
    try:
        t = HttpTransport(slow.url + "/v1/traces", {}, timeout=1.0)
        t0 = time.monotonic()
        with pytest.raises(ExportFailed, match="no whole answer within 1 s"):
            t.send(b"abc")
        assert time.monotonic() - t0 < 2.0
        t.close()
    finally:
        slow.close()


def test_log_records_are_sent_by_the_same_transport_within_the_same_deadline():
    """Logs (warnings, snapshots) went through the stock OTLP/HTTP log exporter, whose timeout bounds
    each read: against a collector answering a byte at a time it never returned."""
    from tracehouse.agent.config_otlp import SignalExport
    from tracehouse.agent.export import otlp_factories

    slow, sink = TricklingServer.http("head"), Sink()
    try:
        for url, fails in ((slow.url, True), (sink.url, False)):
            exporter = otlp_factories({"logs": SignalExport("http/protobuf", url + "/v1/logs", timeout=1.0)})["logs"]()
            t0 = time.monotonic()
            if fails:
                with pytest.raises(ExportFailed, match="no whole answer within 1 s"):
                    exporter.export([_log_record()])
                assert time.monotonic() - t0 < 2.0
            else:
                exporter.export([_log_record()])
                ((_, record),) = sink.logs()
                assert record.body.string_value == "hello"
            exporter.shutdown()
    finally:
        slow.close()
        sink.close()


def _log_record():
    """A log record as the SDK hands it to an exporter."""
    from opentelemetry._logs import LogRecord
    from opentelemetry.sdk._logs import LoggerProvider

    seen = []

    class Keep:
        def on_emit(self, record):
            seen.append(record)

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=0):
            return True

    provider = LoggerProvider()
    provider.add_log_record_processor(Keep())
    provider.get_logger("t").emit(LogRecord(body="hello"))
    return seen[0]


def test_grpc_transport_sends_the_lean_bytes_to_a_real_grpc_server():
    from concurrent import futures

    import grpc

    got = []

    def export(request, context):
        got.append((request, dict(context.invocation_metadata())))
        return b""

    handler = grpc.method_handlers_generic_handler("opentelemetry.proto.collector.trace.v1.TraceService", {
        "Export": grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        spans = [s for s in _spans() if not s.links][:5]
        t = GrpcTransport(f"http://127.0.0.1:{port}", "spans", {"Authorization": "Bearer t"}, 5.0, "gzip")
        otlp_exporters.LeanSpanExporter(t).export(spans)
        t.close()
    finally:
        server.stop(0)
    req = ExportTraceServiceRequest()
    req.ParseFromString(got[0][0])
    assert req == encode_spans(spans) and got[0][1]["authorization"] == "Bearer t"


def _huge_spans(n: int, size: int):
    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource({"service.name": "s"}))
    tp.add_span_processor(SimpleSpanProcessor(mem))
    t = tp.get_tracer("huge")
    for i in range(n):
        big = f"{i:06d}" + "é" * size  # distinct values, as a request body or a query would be
        with t.start_as_current_span(f"name {i} " + big) as sp:
            sp.set_attribute("payload", big)
            sp.set_attribute("short", "kept whole")
    return mem.get_finished_spans()


def test_huge_values_are_cut_to_what_the_collector_stores_and_not_cached():
    import gc
    import tracemalloc

    from tracehouse.agent import counters
    from tracehouse.collector.convert import Limits

    TEXT_MAX = Limits().max_value_len  # noqa: N806 - what the collector stores of a value
    spans = _huge_spans(3, 1_000_000)
    before = counters.snapshot().get("values.truncated", 0)
    req = ExportTraceServiceRequest()
    req.ParseFromString(otlp_spans.encode(spans))
    sent = req.resource_spans[0].scope_spans[0].spans
    for i, s in enumerate(sent):  # cut to the collector's own cap, in characters (not bytes)
        attrs = {kv.key: kv.value.string_value for kv in s.attributes}
        assert attrs["payload"] == (f"{i:06d}" + "é" * 1_000_000)[:TEXT_MAX] and attrs["short"] == "kept whole"
        assert s.name == (f"name {i} {i:06d}" + "é" * 1_000_000)[:TEXT_MAX]
    assert counters.snapshot().get("values.truncated", 0) - before == 6
    del spans, req, sent
    # encoding a stream of spans with distinct 100 kB values keeps none of them: the value cache
    # held each value and its encoding (8,192 entries: ~1.6 GB of such values)
    spans = _huge_spans(200, 100_000)
    gc.collect()
    tracemalloc.start()
    try:
        for span in spans:
            otlp_spans.encoded(span)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 2_000_000, held
