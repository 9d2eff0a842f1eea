"""OTLP/gRPC with the official OpenTelemetry Python gRPC exporters (traces, metrics, logs, gzip, a
token), the codes and retry info the OTLP spec asks for, and bad input from a raw gRPC client."""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry import trace as trace_api
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.collector.harness import run_collector
from tests.collector.load import span_id_counts
from tests.collector.payloads import kv, traces
from tracehouse.storage.attrs import decode_map

TOKEN = "grpc-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _b(v) -> bytes:
    return v if isinstance(v, bytes) else v.encode()


def _rows(store, sql: str) -> list[dict]:
    return store.query(sql.replace("{db}", store.db)).dicts()


def _spans(n: int, service: str) -> tuple[list, list[bytes]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("grpc.tests")
    for i in range(n):
        with tracer.start_as_current_span(f"op {i}", kind=SpanKind.SERVER, attributes={"i": i}):
            pass
    provider.shutdown()
    spans = memory.get_finished_spans()
    return spans, [s.get_span_context().span_id.to_bytes(8, "big") for s in spans]


@pytest.fixture
def running(store, tmp_path):
    r = run_collector(store, str(tmp_path / "buffer"), grpc=True, ingest_tokens=[TOKEN], max_batch_age=0.2)
    yield r
    r.stop()


def test_python_grpc_exporters_traces_metrics_logs_with_gzip_and_a_token(running, store):
    target = running.grpc_target
    gz = grpc.Compression.Gzip
    # traces
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "grpc-shop", "service.instance.id": "g-1"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("grpc.tests", "0.1")
    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER,
                                      attributes={"http.route": "/cart", "db.password": "hunter2"}) as root:
        root.add_event("cache miss", {"key": "cart:1"})
        with tracer.start_as_current_span("SELECT carts", kind=SpanKind.CLIENT, attributes={"db.system": "sqlite"}):
            pass
    provider.shutdown()
    exporter = OTLPSpanExporter(endpoint=target, insecure=True, headers=AUTH, compression=gz)
    assert exporter.export(memory.get_finished_spans()).name == "SUCCESS"
    exporter.shutdown()
    # metrics
    reader = InMemoryMetricReader()
    mp = MeterProvider(resource=Resource.create({"service.name": "grpc-shop"}), metric_readers=[reader])
    mp.get_meter("grpc.meter").create_counter("orders").add(3, {"region": "eu"})
    mp.get_meter("grpc.meter").create_histogram("latency", unit="ms").record(12.0)
    data = reader.get_metrics_data()
    mexp = OTLPMetricExporter(endpoint=target, insecure=True, headers=AUTH, compression=gz)
    assert mexp.export(data).name == "SUCCESS"
    mexp.shutdown()
    mp.shutdown()
    # logs
    lexp = OTLPLogExporter(endpoint=target, insecure=True, headers=AUTH, compression=gz)
    lp = LoggerProvider(resource=Resource.create({"service.name": "grpc-shop"}))
    lp.add_log_record_processor(SimpleLogRecordProcessor(lexp))
    ctx = trace_api.set_span_in_context(root)
    lp.get_logger("grpc.logger").emit(body="payment failed", severity_number=SeverityNumber.ERROR,
                                      severity_text="ERROR", attributes={"api_key": "k", "order": 7}, context=ctx)
    lp.shutdown()

    running.wait_stored("traces", 2)
    running.wait_stored("metrics", 2)
    running.wait_stored("logs", 1)
    spans = {r["name"]: r for r in _rows(store, "SELECT * FROM {db}.spans")}
    assert set(spans) == {"GET /cart", "SELECT carts"}
    server = spans["GET /cart"]
    assert _b(server["trace_id"]) == root.get_span_context().trace_id.to_bytes(16, "big")
    assert server["service"] == "grpc-shop"
    attrs = decode_map(server["attr_keys"], server["attr_values"], server["attr_types"])
    assert attrs == {"http.route": "/cart", "db.password": "[REDACTED]"}  # the same redaction as OTLP/HTTP
    assert list(server["events_name"]) == ["cache miss"]
    assert _b(spans["SELECT carts"]["parent_span_id"]) == _b(server["span_id"])
    points = {r["name"]: r for r in _rows(store, "SELECT * FROM {db}.metric_points")}
    assert points["orders"]["value"] == 3 and points["latency"]["count"] == 1
    log_row = _rows(store, "SELECT * FROM {db}.logs")[0]
    assert log_row["body"] == "payment failed" and _b(log_row["trace_id"]) == _b(server["trace_id"])
    assert decode_map(log_row["attr_keys"], log_row["attr_values"], log_row["attr_types"]) == {
        "api_key": "[REDACTED]", "order": 7}
    m = running.collector.metrics
    assert m.get("tracehouse_collector_accepted_items_total", signal="traces") == 2
    assert m.get("tracehouse_collector_requests_total", signal="logs", code="200") == 1


def test_wrong_or_missing_token_is_unauthenticated(running):
    spans, _ = _spans(2, "intruder")
    exporter = OTLPSpanExporter(endpoint=running.grpc_target, insecure=True,
                                headers=(("authorization", "Bearer wrong"),), timeout=20)
    t0 = time.monotonic()
    assert exporter.export(spans).name == "FAILURE"
    assert time.monotonic() - t0 < 5  # UNAUTHENTICATED is final: the exporter does not retry it
    exporter.shutdown()
    body = traces(2)[0].SerializeToString()
    with grpc.insecure_channel(running.grpc_target) as ch:
        call = ch.unary_unary(TRACE_EXPORT)
        for md in ((), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
            with pytest.raises(grpc.RpcError) as e:
                call(body, metadata=md, timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "token" in e.value.details()
    assert running.collector.wal.records == 0


def test_buffer_full_answers_unavailable_with_retry_info_and_the_exporter_retries(store, tmp_path):
    # The writer is not running (as while ClickHouse is down), so accepted data stays in the buffer
    # until it passes its cap; then the collector must answer UNAVAILABLE with RetryInfo.
    r = run_collector(store, str(tmp_path / "buffer"), grpc=True, start_writer=False, buffer_max_bytes=16_000,
                      max_batch_age=0.2)
    try:
        filler, filler_ids = traces(150)
        with grpc.insecure_channel(r.grpc_target) as ch:
            call = ch.unary_unary(TRACE_EXPORT)
            ExportTraceServiceResponse.FromString(call(filler.SerializeToString(), timeout=10))
            assert r.collector.wal.pending_bytes() > 12_000  # more than 16,000 with any request below
            with pytest.raises(grpc.RpcError) as e:
                call(traces(100)[0].SerializeToString(), timeout=10)
        err = e.value
        assert err.code() == grpc.StatusCode.UNAVAILABLE and "buffer is full" in err.details()
        status = rpc_status.from_call(err)
        info = error_details_pb2.RetryInfo()
        assert len(status.details) == 1 and status.details[0].Unpack(info)
        assert info.retry_delay.seconds == 5

        spans, ids = _spans(40, "retrier")
        exporter = OTLPSpanExporter(endpoint=r.grpc_target, insecure=True, timeout=30)
        result = {}

        def export() -> None:
            result["r"] = exporter.export(spans)
            result["t"] = time.monotonic()

        t = threading.Thread(target=export)
        t.start()
        deadline = time.monotonic() + 20
        while r.collector.metrics.get("tracehouse_collector_rejected_requests_total", reason="buffer_full") < 2:
            assert time.monotonic() < deadline, "the exporter's first try was not refused"
            time.sleep(0.02)
        refused_at = time.monotonic()
        r.collector.writer.start()  # the store is back: the buffer drains within a second
        t.join(40)
        exporter.shutdown()
        assert result["r"].name == "SUCCESS"
        # Without RetryInfo the exporter would have retried after ~1 s (and got in): it waited the 5 s asked.
        assert result["t"] - refused_at >= 4.5
        r.wait_stored("traces", 150 + 40)
    finally:
        r.stop()
    counts = span_id_counts(store)
    assert all(counts.get(i.hex()) == 1 for i in filler_ids + ids), "an acknowledged span was lost or doubled"
    assert len(counts) == 190


def test_rate_limit_answers_resource_exhausted_with_retry_info(chdb_store, tmp_path):
    r = run_collector(chdb_store, str(tmp_path / "b"), grpc=True, rate_limit_per_service=100.0, max_batch_age=0.1)
    try:
        with grpc.insecure_channel(r.grpc_target) as ch:
            call = ch.unary_unary(TRACE_EXPORT)
            call(traces(100, service="a")[0].SerializeToString(), timeout=10)
            with pytest.raises(grpc.RpcError) as e:
                call(traces(10, service="a")[0].SerializeToString(), timeout=10)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            info = error_details_pb2.RetryInfo()
            assert rpc_status.from_call(e.value).details[0].Unpack(info) and info.retry_delay.seconds >= 1
            assert dict(e.value.trailing_metadata())["google.rpc.retryinfo-bin"] == info.SerializeToString()
        r.wait_stored("traces", 100)
    finally:
        r.stop()


def test_bad_input_gets_clear_codes_and_nothing_acknowledged_is_lost(chdb_store, tmp_path):
    r = run_collector(chdb_store, str(tmp_path / "b"), grpc=True, max_decompressed_bytes=400_000, max_batch_age=0.1)
    m = r.collector.metrics
    try:
        with grpc.insecure_channel(r.grpc_target) as ch:
            call = ch.unary_unary(TRACE_EXPORT)
            good, good_ids = traces(5)
            bad_utf8 = good.SerializeToString().replace(b"op-0", b"op\xff0")
            logs_req = ExportLogsServiceRequest()
            rec = logs_req.resource_logs.add().scope_logs.add().log_records.add()
            rec.body.string_value = "a log record sent to the trace service"
            cases = [
                (b"\xff\xfe not protobuf", None, grpc.StatusCode.INVALID_ARGUMENT, "malformed protobuf"),
                (b'{"resourceSpans": []}', None, grpc.StatusCode.INVALID_ARGUMENT, "malformed protobuf"),
                (bad_utf8, None, grpc.StatusCode.INVALID_ARGUMENT, "UTF-8"),
                (os.urandom(400_001), None, grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
                (b"\x00" * (50 << 20), grpc.Compression.Gzip, grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
            ]
            for body, comp, code, text in cases:
                t0 = time.monotonic()
                with pytest.raises(grpc.RpcError) as e:
                    call(body, compression=comp, timeout=20)
                assert e.value.code() == code and text in e.value.details(), (text, e.value)
                assert time.monotonic() - t0 < 5
            assert r.collector.wal.records == 0
            # the bomb above as the client sent it: compressed small, refused without inflating it all
            assert len(gzip.compress(b"\x00" * (50 << 20))) < 400_000
            # a message of another type: what does not make a valid span is refused span by span
            out = ExportTraceServiceResponse.FromString(call(logs_req.SerializeToString(), timeout=10))
            assert out.partial_success.rejected_spans == 1
            # an unknown method
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Import")(b"", timeout=10)
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
            # partial success: invalid spans are refused one by one, the rest is stored
            spans = good.resource_spans[0].scope_spans[0].spans
            spans[0].trace_id = b""
            spans[1].span_id = b"\x00" * 8
            spans[2].attributes.append(kv("x" * 300, "k"))
            out = ExportTraceServiceResponse.FromString(call(good.SerializeToString(), timeout=10))
            assert out.partial_success.rejected_spans == 2
            assert "invalid trace_id" in out.partial_success.error_message
            # an empty request is fine and stores nothing
            assert ExportTraceServiceResponse.FromString(call(ExportTraceServiceRequest().SerializeToString(),
                                                              timeout=10)).partial_success.rejected_spans == 0
            # the receiver is alive and well after all that
            req2, more_ids = traces(4)
            call(req2.SerializeToString(), compression=grpc.Compression.Gzip, timeout=10)
        r.wait_stored("traces", 3 + 4)
    finally:
        r.stop()
    stored = {_b(row[0]) for row in chdb_store.query(f"SELECT span_id FROM {chdb_store.db}.spans").rows}
    assert stored == set(good_ids[2:]) | set(more_ids)
    assert m.get("tracehouse_collector_rejected_requests_total", signal="traces", reason="malformed") == 3
    # the two over the cap: refused by gRPC itself, counted as the handler finds no message
    assert m.get("tracehouse_collector_rejected_requests_total", signal="traces", reason="too_large") == 2
    assert m.get("tracehouse_collector_rejected_items_total", signal="traces") == 3
    assert m.get("tracehouse_collector_truncated_total", what="attribute keys") == 1  # the same limits


def test_tracehouse_collector_serves_grpc_and_zipkin_on_the_ports_it_is_given(tmp_path):
    """The composition in tracehouse/server.py, as `tracehouse collector --otlp-grpc-port --zipkin-port`
    runs it: both receivers feed the process's one buffer and writer."""
    from opentelemetry.exporter.zipkin.json import ZipkinExporter

    from testkit.servers import free_port, wait_port
    from tests.collector.harness import start_collector_process
    from tracehouse.storage import Store

    gport, zport = free_port(), free_port()
    storage = f"chdb://{tmp_path}/data?database=proc"
    proc = start_collector_process(storage, str(tmp_path / "buffer"), env={
        "TRACEHOUSE_OTLP_GRPC_PORT": str(gport), "TRACEHOUSE_ZIPKIN_PORT": str(zport)})
    try:
        assert wait_port(gport, 30) and wait_port(zport, 30)
        spans, ids = _spans(3, "via-grpc")
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{gport}", insecure=True, compression=grpc.Compression.Gzip)
        assert exporter.export(spans).name == "SUCCESS"
        exporter.shutdown()
        zspans, zids = _spans(2, "via-zipkin")
        zexp = ZipkinExporter(endpoint=f"http://127.0.0.1:{zport}/api/v2/spans")
        assert zexp.export(zspans).name == "SUCCESS"
        zexp.shutdown()
        deadline = time.monotonic() + 60
        while proc.stored("traces") < 5:
            assert time.monotonic() < deadline, "spans were not stored"
            time.sleep(0.1)
    finally:
        assert proc.terminate() == 0
    with Store.open(storage) as store:
        rows = store.query(f"SELECT service, span_id FROM {store.db}.spans").rows
    assert sorted((svc, _b(sid)) for svc, sid in rows) == sorted(
        [("via-grpc", i) for i in ids] + [("via-zipkin", i) for i in zids])


def test_the_tracehouse_agent_sends_over_grpc_when_asked(running, tmp_path):
    """OTEL_EXPORTER_OTLP_PROTOCOL=grpc: the agent's own encoder and gRPC transport, in a process of
    its own, reach the receiver with the token from OTEL_EXPORTER_OTLP_HEADERS; log records too."""
    import subprocess
    import sys

    script = (
        "import tracehouse.agent as agent\n"
        "from opentelemetry import trace\n"
        "import logging\n"
        "h = agent.start(service='agent-grpc', metrics=False)\n"
        "t = trace.get_tracer('agent.test')\n"
        "logging.getLogger('agent.test').warning('sent over gRPC')\n"
        "with t.start_as_current_span('parent', kind=trace.SpanKind.SERVER):\n"
        "    with t.start_as_current_span('child'):\n"
        "        pass\n"
        "assert h.force_flush(10)\n"
        "h.shutdown()\n"
    )
    env = dict(os.environ, OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{running.grpc_target}",
               OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer%20{TOKEN}", OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    running.wait_stored("traces", 2)
    assert running.collector.metrics.get("tracehouse_collector_accepted_items_total", signal="traces") == 2
    running.wait_stored("logs", 1)
    assert running.collector.metrics.get("tracehouse_collector_accepted_items_total", signal="logs") == 1


def test_a_call_is_refused_on_its_metadata_before_its_message_is_read(chdb_store, tmp_path):
    """Without a valid token the call is refused as soon as its metadata arrives: a caller that
    never sends its message is answered UNAUTHENTICATED at once (a unary handler would have waited
    for the whole message, up to the 64 MB cap, before checking). With a valid token, a message
    that does not arrive within the client timeout is answered DEADLINE_EXCEEDED and frees its slot."""
    r = run_collector(chdb_store, str(tmp_path / "b"), grpc=True, ingest_tokens=[TOKEN], max_batch_age=0.1,
                      client_timeout_seconds=1.0, max_concurrent_requests=1)
    never = threading.Event()

    def nothing():
        never.wait(30)
        return
        yield  # a generator that sends no message until the test ends

    try:
        with grpc.insecure_channel(r.grpc_target) as ch:
            upload = ch.stream_unary(TRACE_EXPORT)
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                upload(nothing(), timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert time.monotonic() - t0 < 5
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                upload(nothing(), timeout=10, metadata=[("authorization", f"Bearer {TOKEN}")])
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "not received within 1 s" in e.value.details()
            assert time.monotonic() - t0 < 5
            req, _ = traces(3)
            ch.unary_unary(TRACE_EXPORT)(req.SerializeToString(), timeout=10,
                                         metadata=[("authorization", f"Bearer {TOKEN}")])
        r.wait_stored("traces", 3)
        m = r.collector.metrics
        assert m.get("tracehouse_collector_rejected_requests_total", signal="traces", reason="unauthorized") == 1
        assert m.get("tracehouse_collector_rejected_requests_total", signal="traces", reason="timeout") == 1
    finally:
        never.set()
        r.stop()


def test_a_call_with_more_than_one_message_is_refused_not_half_stored(chdb_store, tmp_path):
    """Export is a unary method: a client that streams two requests on one call was answered OK while
    only the first was stored (the second acknowledged and dropped). It is refused whole, and the
    client can send each request on its own call."""
    r = run_collector(chdb_store, str(tmp_path / "b"), grpc=True, max_batch_age=0.1)
    try:
        first, first_ids = traces(3, service="first")
        second, second_ids = traces(4, service="second")
        with grpc.insecure_channel(r.grpc_target) as ch:
            with pytest.raises(grpc.RpcError) as e:
                ch.stream_unary(TRACE_EXPORT)(iter([first.SerializeToString(), second.SerializeToString()]),
                                              timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "one message" in e.value.details()
            assert r.collector.wal.records == 0
            call = ch.unary_unary(TRACE_EXPORT)
            call(first.SerializeToString(), timeout=10)
            call(second.SerializeToString(), timeout=10)
        r.wait_stored("traces", 7)
    finally:
        r.stop()
    assert span_id_counts(chdb_store) == {i.hex(): 1 for i in first_ids + second_ids}


def _overloaded(r) -> float:
    return r.collector.metrics.get("tracehouse_collector_rejected_requests_total", signal="traces", reason="overloaded")


def _exporter_delivers_after_refusal(r, release: threading.Event, refused: int, deadline: float) -> list[bytes]:
    """The official exporter sends 40 spans while the receiver refuses; once ``refused`` overload
    refusals are counted (its first try among them), ``release`` frees the receiver, and the export
    must succeed after retrying. Returns the span ids."""
    spans, ids = _spans(40, "retrier")
    exporter = OTLPSpanExporter(endpoint=r.grpc_target, insecure=True, timeout=30)
    result = {}
    sender = threading.Thread(target=lambda: result.update(r=exporter.export(spans)))
    sender.start()
    while _overloaded(r) < refused:
        assert time.monotonic() < deadline, "the exporter's first try was not refused"
        time.sleep(0.01)
    release.set()
    sender.join(30)
    exporter.shutdown()
    assert result["r"].name == "SUCCESS"
    return ids


def _when_released(release: threading.Event, req) -> Iterator[bytes]:
    """A call's one message, sent only once ``release`` is set: the call holds its slot until then."""
    release.wait(30)
    yield req.SerializeToString()


def test_calls_past_the_cap_get_retry_info_and_the_exporter_delivers_after_retrying(chdb_store, tmp_path):
    """At its cap of concurrent calls the receiver answered gRPC's own RESOURCE_EXHAUSTED, which has
    no RetryInfo: the OTLP spec, and the Go and Java exporters, retry RESOURCE_EXHAUSTED only when
    the server says when, so their data was dropped. The refusal now carries RetryInfo (1 s), and
    the official Python exporter, sending while the cap is reached, delivers once a slot is free."""
    r = run_collector(chdb_store, str(tmp_path / "b"), grpc=True, grpc_max_concurrent=2, max_batch_age=0.1)
    release = threading.Event()
    held = [traces(3, service=f"holder{i}") for i in range(2)]
    answers: list = []

    def hold(req) -> None:
        with grpc.insecure_channel(r.grpc_target) as ch:
            for _ in range(100):  # refused only while the other one and a probe below hold the slots
                try:
                    answers.append(ch.stream_unary(TRACE_EXPORT)(_when_released(release, req), timeout=30))
                    return
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    time.sleep(0.01)

    holders = [threading.Thread(target=hold, args=(req,)) for req, _ in held]
    try:
        for t in holders:
            t.start()
        deadline = time.monotonic() + 10
        with grpc.insecure_channel(r.grpc_target) as ch:
            while True:  # empty requests (nothing to store) until the two slow calls hold the slots
                try:
                    ch.unary_unary(TRACE_EXPORT)(b"", timeout=10)
                except grpc.RpcError as err:
                    e = err
                    break
                assert time.monotonic() < deadline, "the two slow calls did not take their slots"
                time.sleep(0.01)
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        status = rpc_status.from_call(e)
        assert status is not None, "no google.rpc.Status details: clients following the spec drop the data"
        info = error_details_pb2.RetryInfo()
        assert len(status.details) == 1 and status.details[0].Unpack(info) and info.retry_delay.seconds == 1
        assert dict(e.trailing_metadata())["google.rpc.retryinfo-bin"] == info.SerializeToString()

        refused = _overloaded(r)
        ids = _exporter_delivers_after_refusal(r, release, refused + 1, deadline + 10)
        for t in holders:
            t.join(30)
        assert len(answers) == 2
        r.wait_stored("traces", 40 + 6)
    finally:
        release.set()
        r.stop()
    assert span_id_counts(chdb_store) == {i.hex(): 1 for i in ids + held[0][1] + held[1][1]}


def test_a_call_is_counted_at_the_message_cap_before_its_message_is_received(chdb_store, tmp_path):
    """gRPC takes a message in whole when the handler reads it, and its size was counted against the
    bytes in flight only then: 64 calls could make the process hold 64 messages of 20 MiB before
    one was refused. A call now counts the message cap (20 MiB) from its start: while one call
    waits for its message, another past the budget (30 MiB) is answered UNAVAILABLE with
    RetryInfo before its message is received, and the official exporter, sending meanwhile,
    delivers once the budget is free; each span is stored once."""
    r = run_collector(chdb_store, str(tmp_path / "b"), grpc=True, max_batch_age=0.1, max_inflight_bytes=30 << 20)
    release = threading.Event()
    held, held_ids = traces(3, service="holder")
    answers: list = []

    def slow():  # a call that waits for its message
        release.wait(30)
        yield held.SerializeToString()

    def hold() -> None:
        with grpc.insecure_channel(r.grpc_target) as ch:
            answers.append(ch.stream_unary(TRACE_EXPORT)(slow(), timeout=30))

    holder = threading.Thread(target=hold)
    try:
        holder.start()
        core = r.collector.app.core
        deadline = time.monotonic() + 10
        while core._active < 1:
            assert time.monotonic() < deadline, "the slow call did not start"
            time.sleep(0.01)
        with grpc.insecure_channel(r.grpc_target) as ch:
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary(TRACE_EXPORT)(traces(2)[0].SerializeToString(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "bytes in flight" in e.value.details()
        info = error_details_pb2.RetryInfo()
        assert rpc_status.from_call(e.value).details[0].Unpack(info) and info.retry_delay.seconds == 1

        ids = _exporter_delivers_after_refusal(r, release, 2, deadline + 10)
        holder.join(30)
        assert len(answers) == 1
        r.wait_stored("traces", 40 + 3)
        assert core.inflight_bytes == 0
    finally:
        release.set()
        r.stop()
    assert span_id_counts(chdb_store) == {i.hex(): 1 for i in ids + held_ids}


def test_a_call_without_a_valid_token_is_unauthenticated_even_at_the_calls_cap(chdb_store, tmp_path):
    """The cap of calls in progress was checked before the token: with the cap reached, a caller
    without a valid token was answered RESOURCE_EXHAUSTED with RetryInfo (come back in 1 s), so
    an exporter with a wrong token retried for its whole timeout instead of being told. The token
    is now checked first; a valid one at the cap still gets RESOURCE_EXHAUSTED with RetryInfo."""
    r = run_collector(chdb_store, str(tmp_path / "b"), grpc=True, ingest_tokens=[TOKEN], grpc_max_concurrent=2,
                      max_batch_age=0.1)
    release = threading.Event()
    held = [traces(2, service=f"holder{i}") for i in range(2)]
    answers: list = []

    def hold(req) -> None:
        with grpc.insecure_channel(r.grpc_target) as ch:
            answers.append(ch.stream_unary(TRACE_EXPORT)(_when_released(release, req), timeout=30,
                                                         metadata=AUTH))

    holders = [threading.Thread(target=hold, args=(req,)) for req, _ in held]
    try:
        for t in holders:
            t.start()
        deadline = time.monotonic() + 10
        while r.extra[0][0].calls.active < 2:  # the GrpcReceiver
            assert time.monotonic() < deadline, "the two slow calls did not take their slots"
            time.sleep(0.01)
        body = traces(1)[0].SerializeToString()
        with grpc.insecure_channel(r.grpc_target) as ch:
            call = ch.unary_unary(TRACE_EXPORT)
            for md in ((), (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.RpcError) as e:
                    call(body, metadata=md, timeout=10)
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value
                assert "google.rpc.retryinfo-bin" not in dict(e.value.trailing_metadata())
            with pytest.raises(grpc.RpcError) as e:
                call(body, metadata=AUTH, timeout=10)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "calls in progress" in e.value.details()
            assert "google.rpc.retryinfo-bin" in dict(e.value.trailing_metadata())
        # the official exporter with a wrong token fails at once, without retrying
        spans, _ = _spans(2, "intruder")
        exporter = OTLPSpanExporter(endpoint=r.grpc_target, insecure=True,
                                    headers=(("authorization", "Bearer wrong"),), timeout=20)
        t0 = time.monotonic()
        assert exporter.export(spans).name == "FAILURE"
        assert time.monotonic() - t0 < 5
        exporter.shutdown()
        release.set()
        for t in holders:
            t.join(30)
        assert len(answers) == 2
        r.wait_stored("traces", 4)
    finally:
        release.set()
        r.stop()
    m = r.collector.metrics
    assert m.get("tracehouse_collector_rejected_requests_total", signal="traces", reason="unauthorized") == 3
    assert m.get("tracehouse_collector_rejected_requests_total", signal="traces", reason="overloaded") == 1
