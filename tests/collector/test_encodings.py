"""Request bodies in every Content-Encoding the OpenTelemetry senders use: gzip, deflate (zlib),
zstd; each bounded in what it inflates to, and a damaged or cut body refused with nothing stored.

The OpenTelemetry Collector's exporters compress with gzip, zlib, deflate or zstd (`compression:`
in `otlphttp`), the Python SDK's OTLP/HTTP exporters with gzip or deflate. Only gzip was accepted:
the others were answered 415, and their data dropped by the sender."""

from __future__ import annotations

import time
import zlib

import httpx
import pytest
import zstandard
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.collector.harness import run_collector
from tests.collector.payloads import traces
from tests.support import oneshot
from tracehouse.collector.decode import ZSTD_MAX_WINDOW


@pytest.fixture
def running(chdb_store, tmp_path):
    r = run_collector(chdb_store, str(tmp_path / "buffer"), max_body_bytes=200_000, max_decompressed_bytes=400_000,
                      max_batch_age=0.1)
    yield r
    r.stop()


def _services(store) -> dict[str, int]:
    rows = store.query(f"SELECT service, count() FROM {store.db}.spans GROUP BY service").rows
    return {r[0]: int(r[1]) for r in rows}


def _post(r, body: bytes, encoding: str, path: str = "/v1/traces",
          ctype: str = "application/x-protobuf") -> httpx.Response:
    return oneshot.post(r.url + path, content=body, timeout=30,
                      headers={"content-type": ctype, "content-encoding": encoding})


def test_the_sdk_exporter_with_deflate_compression_is_stored(running, chdb_store):
    """The official OTLP/HTTP exporter with `compression=Compression.Deflate`
    (OTEL_EXPORTER_OTLP_COMPRESSION=deflate) sends zlib data as `Content-Encoding: deflate`."""
    exporter = OTLPSpanExporter(endpoint=running.url + "/v1/traces", compression=Compression.Deflate, timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": "deflated"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for i in range(5):
        with tracer.start_as_current_span(f"op-{i}"):
            pass
    provider.shutdown()
    running.wait_stored("traces", 5)
    ids = {s.context.span_id.to_bytes(8, "big") for s in memory.get_finished_spans()}
    rows = chdb_store.query(f"SELECT span_id FROM {chdb_store.db}.spans WHERE service = 'deflated'").rows
    assert {r[0] for r in rows} == ids


def test_zstd_zlib_and_raw_deflate_bodies_are_stored_frame_after_frame(running, chdb_store):
    a, _ = traces(3, service="zstd-a")
    b, _ = traces(4, service="zstd-b")
    c, _ = traces(2, service="zlib")
    d, _ = traces(2, service="raw-deflate")
    z = zstandard.ZstdCompressor()
    # two frames one after the other are one body, as two gzip members are
    assert _post(running, z.compress(a.SerializeToString()) + z.compress(b.SerializeToString()),
                 "zstd").status_code == 200
    assert _post(running, zlib.compress(c.SerializeToString()), "zlib").status_code == 200
    raw = zlib.compressobj(wbits=-15)
    assert _post(running, raw.compress(d.SerializeToString()) + raw.flush(), "Deflate").status_code == 200
    running.wait_stored("traces", 11)
    assert _services(chdb_store) == {"zstd-a": 3, "zstd-b": 4, "zlib": 2, "raw-deflate": 2}


def test_bombs_cut_and_damaged_bodies_are_refused_with_nothing_stored(running, chdb_store):
    good, _ = traces(3, service="never")
    body = good.SerializeToString()
    frame = zstandard.ZstdCompressor().compress(body)
    big_window = zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters(window_log=ZSTD_MAX_WINDOW.bit_length() + 1))
    obj = big_window.compressobj()
    wide = obj.compress(body) + obj.flush()
    cases = [
        (zstandard.ZstdCompressor(level=19).compress(b"\x00" * (200 << 20)), "zstd", 413, "exceeds 400000"),
        (zlib.compress(b"\x00" * (50 << 20), 9), "deflate", 413, "exceeds 400000"),
        (frame[:-4], "zstd", 400, "truncated zstd body"),
        (frame + b"junk", "zstd", 400, "bad zstd body"),
        (b"not zstd at all", "zstd", 400, "bad zstd body"),
        (wide, "zstd", 400, "too much memory"),
        (zlib.compress(body)[:-3], "deflate", 400, "truncated deflate body"),
        (zlib.compress(body) + b"x", "deflate", 400, "data after its end"),
        (body, "br", 415, "use gzip, deflate, zstd or none"),
    ]
    for payload, enc, status, reason in cases:
        assert len(payload) < 200_000
        t0 = time.perf_counter()
        resp = _post(running, payload, enc)
        assert resp.status_code == status and reason in resp.text, (enc, reason, resp.status_code, resp.text)
        assert time.perf_counter() - t0 < 3
    assert running.collector.metrics.get("tracehouse_collector_accepted_items_total", signal="traces") == 0
    assert _services(chdb_store) == {}


def test_zipkin_takes_the_same_encodings(chdb_store, tmp_path):
    import json

    r = run_collector(chdb_store, str(tmp_path / "buffer"), max_batch_age=0.1, zipkin=True)
    try:
        span = {"traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c", "name": "get", "timestamp": time.time_ns() // 1000,
                "duration": 1000, "localEndpoint": {"serviceName": "zipkin-zstd"}}
        body = json.dumps([span]).encode()
        resp = oneshot.post(r.zipkin_url + "/api/v2/spans", content=zstandard.ZstdCompressor().compress(body),
                          headers={"content-type": "application/json", "content-encoding": "zstd"}, timeout=30)
        assert resp.status_code == 202, resp.text
        r.wait_stored("traces", 1)
    finally:
        r.stop()
    assert _services(chdb_store) == {"zipkin-zstd": 1}
