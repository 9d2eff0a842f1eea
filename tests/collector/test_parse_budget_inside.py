"""Empty or tiny messages inside spans, log records and data points (attributes, events, links,
exemplars) are refused before they are parsed: 16 MiB of them in one span (a ~20 kB gzip body) took
a real ``tracehouse serve`` +400-709 MB to parse, and were stored; real bodies, whether walked inside
or not, are stored whole."""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import time

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult

from testkit.procmem import reset_peak, status_mb
from testkit.servers import free_port
from testkit.wire_shapes import SHAPES, empty_elements
from tests.collector.harness import run_collector, start_serve_process
from tests.collector.test_parse_budget import SERVICES
from tests.support import oneshot
from tracehouse.collector.wire_budget import SMALL_BODY, over_budget

#: the shapes of empty messages inside an element (an array of empty values is valid OTLP: not here)
INSIDE = ["span_attributes", "span_events", "span_links", "event_attributes", "link_attributes", "kvlist_values",
          "log_attributes", "gauge_point_attributes", "histogram_point_attributes",
          "exponential_histogram_point_attributes", "summary_point_attributes", "exemplars", "exemplar_attributes"]
#: elements holding one unknown field (``08 00``): four bytes each, parsed as dear as empty ones
TINY = ["span_attributes", "span_events", "span_links", "log_attributes", "gauge_point_attributes", "exemplars"]
CASES = [(shape, b"") for shape in INSIDE] + [(shape, b"\x08\x00") for shape in TINY]
SIZE = 16 << 20
#: what answering one such body may add to the server's resident memory: the body itself (gzip
#: member parts and their join: ~2 × 16 MiB) and the walk; parsing it added 430-690 MB
PEAK_MB = 120



@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    d = tmp_path_factory.mktemp("inside")
    srv = start_serve_process(f"chdb://{d}/data", str(d / "buffer"), free_port(), free_port())
    yield srv
    srv.kill()


@pytest.mark.parametrize("shape,payload", CASES, ids=[f"{s}-{p.hex() or 'empty'}" for s, p in CASES])
def test_a_body_of_tiny_messages_inside_an_element_is_refused_before_it_is_parsed(serve, shape, payload):
    assert shape in SHAPES
    signal, body = empty_elements(shape, SIZE, payload)
    sent = gzip.compress(body, 6)
    pid = serve.proc.pid
    reset_peak(pid)
    base = status_mb(pid, "VmRSS:")
    t0 = time.monotonic()
    resp = oneshot.post(f"{serve.url}/v1/{signal}", content=sent, timeout=60,
                      headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"})
    took = time.monotonic() - t0
    added = status_mb(pid, "VmHWM:") - base
    print(f"{shape}: {len(sent):,} B gzip, answered {resp.status_code} in {took:.3f} s, peak +{added:.0f} MB")
    assert resp.status_code == 413, (resp.status_code, resp.content[:200])
    assert b"too many for their size" in resp.content and b"send fewer per request" in resp.content
    assert added < PEAK_MB, added
    assert serve.stored(signal) == 0


def _sdk_metrics_body() -> tuple[InMemoryMetricReader, bytes]:
    """What the SDK's OTLP encoder makes of 16,000 sum points with four short labels each (1.46 MB:
    denser in tag-like bytes than one per 4 bytes)."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("parse.budget.inside")
    for c in range(10):  # 1,600 series per counter: under the SDK's cardinality limit of 2,000
        counter = meter.create_counter(f"requests.{c}")
        for code in ("200", "404", "500", "503"):
            for method in ("GET", "PUT"):
                for r in range(20):
                    for z in range(10):
                        counter.add(1, {"code": code, "method": method, "route": f"/r{r}", "zone": f"b{z}"})
    return reader, encode_metrics(reader.get_metrics_data()).SerializeToString()


def _sdk_logs_body(n: int) -> bytes:
    """What the SDK's logging handler and OTLP encoder send, with null, list and map attributes."""
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    log = logging.getLogger("parse.budget.inside")
    log.propagate = False
    log.addHandler(LoggingHandler(logger_provider=provider))
    for i in range(n):
        log.warning("retrying %d", i, extra={"attempt": i, "none": None, "list": [None, 1, None],
                                             "map": {"x": "", "y": None}})
    provider.shutdown()
    return encode_logs(memory.get_finished_logs()).SerializeToString()


def _bench_body(size: int) -> bytes:
    """The ingest bench's 117 kB requests of 300 spans, concatenated past ``size`` bytes (one request
    of them all)."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "ingest_bench.py")
    spec = importlib.util.spec_from_file_location("ingest_bench_for_tests", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    reqs = mod.build_requests(300 * 20, 300)
    body, i = b"", 0
    while len(body) <= size:
        body += reqs[i % len(reqs)]
        i += 1
    return body


@pytest.fixture
def collector(chdb_store, tmp_path):
    r = run_collector(chdb_store, str(tmp_path / "buffer"), max_batch_age=0.1)
    yield r
    r.stop()


def test_real_bodies_walked_inside_or_not_are_stored_whole(collector, chdb_store):
    reader, metrics = _sdk_metrics_body()
    logs = _sdk_logs_body(8_000)
    spans = _bench_body(2 * SMALL_BODY)
    for signal, body in (("metrics", metrics), ("logs", logs), ("traces", spans)):
        assert len(body) > SMALL_BODY
        for inner in (None, True, False):  # as sampled, walked inside, not walked inside
            assert over_budget(signal, body, inner=inner) is None, (signal, inner)
    # the metrics through the SDK's own exporter, the logs and spans as they were encoded
    exporter = OTLPMetricExporter(endpoint=collector.url + "/v1/metrics", timeout=60)
    assert exporter.export(reader.get_metrics_data()) == MetricExportResult.SUCCESS
    for signal, body in (("logs", logs), ("traces", spans)):
        resp = oneshot.post(collector.url + f"/v1/{signal}", content=gzip.compress(body),
                          headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"}, timeout=60)
        assert resp.status_code == 200, resp.content[:200]
    collector.wait_stored("metrics", 16_000)
    collector.wait_stored("logs", 8_000)
    request = ExportTraceServiceRequest.FromString(spans)
    collector.wait_stored("traces", sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans))
    assert chdb_store.query(f"SELECT count() FROM {chdb_store.t('metric_points')}").rows[0][0] >= 16_000


def test_an_array_of_empty_values_is_valid_otlp_and_not_refused():
    """An empty AnyValue is valid OTLP (the SDK encodes a None in a list as one): a body of them is
    walked inside, a run of them at a time, and accepted (what parsing it costs is left to the parse)."""
    signal, body = empty_elements("array_values", 4 << 20)
    assert over_budget(signal, body) is None
    assert over_budget(signal, body, inner=True) is None


@pytest.fixture
def grpc_collector(chdb_store, tmp_path):
    r = run_collector(chdb_store, str(tmp_path / "buffer"), grpc=True, max_batch_age=0.1)
    yield r
    r.stop()


@pytest.mark.parametrize("shape", ["span_attributes", "log_attributes", "gauge_point_attributes"])
def test_over_grpc_a_message_of_tiny_messages_inside_an_element_is_refused(grpc_collector, shape):
    """OTLP/gRPC goes through the same decoder as OTLP/HTTP: the same 16 MiB message, sent as it
    is (gRPC's own size cap is 20 MiB), is refused with INVALID_ARGUMENT and nothing is buffered."""
    signal, body = empty_elements(shape, SIZE)
    with grpc.insecure_channel(grpc_collector.grpc_target, options=[("grpc.max_send_message_length", -1)]) as ch:
        call = ch.unary_unary(f"/opentelemetry.proto.collector.{SERVICES[signal]}/Export")
        with pytest.raises(grpc.RpcError) as e:
            call(body, timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    assert "too many for their size" in e.value.details() and "send fewer per request" in e.value.details()
    assert grpc_collector.collector.wal.records == 0
