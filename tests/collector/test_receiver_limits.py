"""The receiver's resources: OTLP/JSON is decoded off the event loop, requests in flight are
capped (503 + Retry-After past the cap), and the buffer cap counts what the WAL would hold."""

from __future__ import annotations

import gzip
import socket
import threading
import time

import grpc
import httpx
import pytest

from tests.collector.harness import run_collector
from tests.collector.load import span_id_counts
from tests.collector.payloads import kv, traces
from tests.collector.test_grpc import TRACE_EXPORT
from tests.support import oneshot
from tracehouse.collector.decode import to_json


def test_json_is_decoded_off_the_event_loop(chdb_store, tmp_path):
    """A large OTLP/JSON body takes the decoder seconds; meanwhile the loop (which the dashboard
    shares in ``tracehouse serve``) keeps answering."""
    req, _ = traces(20_000)
    for s in req.resource_spans[0].scope_spans[0].spans:
        s.attributes.extend(kv(f"a{i}", f"value {i}") for i in range(8))
    body = to_json(req)
    r = run_collector(chdb_store, str(tmp_path / "buffer"), max_batch_age=0.05, max_decompressed_bytes=64 << 20)
    try:
        out: dict = {}

        def post() -> None:
            t0 = time.monotonic()
            out["status"] = oneshot.post(r.url + "/v1/traces", content=body,
                                       headers={"content-type": "application/json"}, timeout=120).status_code
            out["seconds"] = time.monotonic() - t0

        sender = threading.Thread(target=post)
        sender.start()
        latencies = []
        with httpx.Client(timeout=60) as client:
            while sender.is_alive():
                t0 = time.monotonic()
                client.get(r.url + "/healthz")
                if sender.is_alive():
                    latencies.append(time.monotonic() - t0)
                time.sleep(0.02)
        sender.join()
        assert out["status"] == 200
        assert out["seconds"] > 1.0, "the body decoded too fast to tell"
        # on the loop, a probe would wait for the whole decode; off it, for a thread switch
        assert len(latencies) >= 10 and max(latencies) < out["seconds"] / 3, (len(latencies), max(latencies))
    finally:
        r.stop()


def _slow_request(port: int) -> socket.socket:
    """A request whose body never finishes arriving: it holds its slot."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n"
              b"content-length: 100000\r\n\r\n" + b"\x0a" * 10)
    return s


def test_requests_past_the_cap_are_answered_503_at_once(chdb_store, tmp_path):
    """One cap over every receiver: two OTLP/HTTP requests hold the slots, and OTLP/HTTP, OTLP/gRPC
    and Zipkin requests are all refused with a retryable answer."""
    r = run_collector(chdb_store, str(tmp_path / "buffer"), grpc=True, zipkin=True, max_batch_age=0.05,
                      max_concurrent_requests=2)
    slow = []
    try:
        body = traces(5)[0].SerializeToString()
        slow = [_slow_request(int(r.url.rsplit(":", 1)[1])) for _ in range(2)]
        deadline = time.monotonic() + 10
        while r.collector.app.core._active < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        resp = oneshot.post(r.url + "/v1/traces", content=body, headers={"content-type": "application/x-protobuf"})
        assert resp.status_code == 503 and int(resp.headers["retry-after"]) >= 1
        with grpc.insecure_channel(r.grpc_target) as ch:
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary(TRACE_EXPORT)(body, timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        zipkin = oneshot.post(r.zipkin_url + "/api/v2/spans", content=b"[]", headers={"content-type": "application/json"})
        assert zipkin.status_code == 503 and int(zipkin.headers["retry-after"]) >= 1
        assert r.collector.metrics.get("tracehouse_collector_rejected_requests_total", reason="overloaded") == 3
        for s in slow:
            s.close()
        slow = []
        deadline = time.monotonic() + 10
        while r.collector.app.core._active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert oneshot.post(r.url + "/v1/traces", content=body,
                          headers={"content-type": "application/x-protobuf"}).status_code == 200
        r.wait_stored("traces", 5)
    finally:
        for s in slow:
            s.close()
        r.stop()


def test_the_buffer_cap_counts_the_decoded_request_not_the_compressed_body(chdb_store, tmp_path):
    req, _ = traces(2000)
    for s in req.resource_spans[0].scope_spans[0].spans:
        s.attributes.append(kv("description", "the same long text on every span " * 8))
    raw = req.SerializeToString()
    body = gzip.compress(raw)
    assert len(body) < 300_000 < len(raw)
    r = run_collector(chdb_store, str(tmp_path / "buffer"), max_batch_age=60, buffer_max_bytes=300_000)
    try:
        resp = oneshot.post(r.url + "/v1/traces", content=body,
                          headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"})
        assert resp.status_code == 503 and int(resp.headers["retry-after"]) >= 1
        assert r.collector.wal.records == 0 and r.collector.wal.pending_bytes() == 0
        small, _ = traces(20)
        assert oneshot.post(r.url + "/v1/traces", content=gzip.compress(small.SerializeToString()),
                          headers={"content-type": "application/x-protobuf",
                                   "content-encoding": "gzip"}).status_code == 200
    finally:
        r.stop()


def test_small_protobuf_bodies_are_decoded_on_the_loop_the_rest_in_the_decode_threads(chdb_store, tmp_path):
    """An uncompressed protobuf body up to INLINE_DECODE_BYTES costs less to decode than the hand-off
    to a thread: it stays on the loop (over HTTP and gRPC); a gzip body, JSON and a larger protobuf
    body each go to a decode thread. All are stored."""
    from concurrent.futures import ThreadPoolExecutor

    from tracehouse.collector.ingest import INLINE_DECODE_BYTES

    class CountingPool(ThreadPoolExecutor):
        submitted = 0

        def submit(self, *a, **kw):  # type: ignore[override]
            CountingPool.submitted += 1
            return super().submit(*a, **kw)

    r = run_collector(chdb_store, str(tmp_path / "buffer"), grpc=True, max_batch_age=0.05)
    core = r.collector.app.core
    core._decoder.shutdown()
    core._decoder = CountingPool(max_workers=2, thread_name_prefix="tracehouse-decode")
    pb = {"content-type": "application/x-protobuf"}
    try:
        small = traces(300)[0].SerializeToString()
        assert oneshot.post(r.url + "/v1/traces", content=small, headers=pb).status_code == 200
        with grpc.insecure_channel(r.grpc_target) as ch:
            ch.unary_unary(TRACE_EXPORT)(traces(300)[0].SerializeToString(), timeout=10)
        assert CountingPool.submitted == 0, "a small protobuf body was handed to a decode thread"
        big, _ = traces(300)
        for s in big.resource_spans[0].scope_spans[0].spans:
            s.attributes.append(kv("description", "x" * 1000))
        assert len(big.SerializeToString()) > INLINE_DECODE_BYTES
        assert oneshot.post(r.url + "/v1/traces", content=big.SerializeToString(), headers=pb).status_code == 200
        assert oneshot.post(r.url + "/v1/traces", content=gzip.compress(traces(10)[0].SerializeToString()),
                          headers={**pb, "content-encoding": "gzip"}).status_code == 200
        assert oneshot.post(r.url + "/v1/traces", content=to_json(traces(10)[0]),
                          headers={"content-type": "application/json"}).status_code == 200
        assert CountingPool.submitted == 3
        r.wait_stored("traces", 920)
    finally:
        r.stop()


def _held_request(port: int, length: int) -> socket.socket:
    """A request whose head declares ``length`` bytes of body, of which none arrives: it holds that
    many of the bytes in flight."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n"
              b"content-length: %d\r\n\r\n" % length)
    return s


def test_the_bytes_in_flight_count_a_gzip_body_as_what_it_inflates_to(chdb_store, tmp_path):
    """The bytes-in-flight cap counted a gzip body at its compressed size for the whole request,
    while from its decoding until it is durable the request holds the inflated payload (up to
    ~1,000x larger), so the cap did not bound what concurrent gzip bodies made the process hold.
    While another request holds part of the budget, a gzip body that inflates past the rest is
    answered 503 + Retry-After, nothing of it stored; sent again once the budget is free, it is
    stored exactly once."""
    req, ids = traces(10_000)
    for s in req.resource_spans[0].scope_spans[0].spans:
        s.attributes.append(kv("description", "the same long text on every span " * 8))
    raw = req.SerializeToString()
    body = gzip.compress(raw)
    assert len(body) < 1 << 20 and len(raw) > 3 << 20  # 1 MiB held + the body fits; + the payload does not
    r = run_collector(chdb_store, str(tmp_path / "buffer"), max_batch_age=0.1, max_inflight_bytes=3 << 20)
    held = None
    headers = {"content-type": "application/x-protobuf", "content-encoding": "gzip"}
    try:
        held = _held_request(int(r.url.rsplit(":", 1)[1]), 1 << 20)
        core = r.collector.app.core
        deadline = time.monotonic() + 10
        while core.inflight_bytes < 1 << 20:
            assert time.monotonic() < deadline, "the held request did not take its bytes"
            time.sleep(0.01)
        resp = oneshot.post(r.url + "/v1/traces", content=body, headers=headers, timeout=30)
        assert resp.status_code == 503 and int(resp.headers["retry-after"]) >= 1, resp.text
        assert "bytes in flight" in resp.text
        assert r.collector.wal.records == 0
        held.close()
        held = None
        while core.inflight_bytes:
            assert time.monotonic() < deadline + 10, "the held request's bytes were not released"
            time.sleep(0.01)
        for _ in range(2):  # the client's retry, then a retry of a request whose answer was lost
            resp = oneshot.post(r.url + "/v1/traces", content=body, headers=headers, timeout=30)
            assert resp.status_code == 200, resp.text
        assert core.inflight_bytes == 0
        r.wait_stored("traces", 10_000)
    finally:
        if held is not None:
            held.close()
        r.stop()
    assert span_id_counts(chdb_store) == {i.hex(): 1 for i in ids}
