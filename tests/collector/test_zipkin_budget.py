"""Zipkin v2 proto3 bodies of countless tiny messages are refused before they are parsed, as OTLP
ones are (``wire_budget``): 16 MiB of empty spans (a ~16 kB gzip body) took a real ``tracehouse
serve`` +1,169 MB to parse (empty annotations in one span +412 MB, empty tags +208 MB, spans of one
unknown field +850 MB) before the first span's check answered 400. Real proto3 bodies over the size
that is walked, from py_zipkin's own encoder, are stored whole."""

from __future__ import annotations

import concurrent.futures
import gzip
import os
import threading
import time

import httpx
import pytest
from google.protobuf.internal.encoder import _VarintBytes
from py_zipkin import Encoding, Kind
from py_zipkin.encoding._encoders import get_encoder
from py_zipkin.encoding._helpers import Endpoint, Span

from testkit.procmem import reset_peak, status_mb
from testkit.servers import free_port, wait_port
from tests.collector.harness import run_collector, start_serve_process
from tests.support import oneshot
from tests.support.waiting import wait_for
from tracehouse.collector.wire_budget import SMALL_BODY, over_budget

SIZE = 16 << 20
#: what answering one such body may add to the server's resident memory: the body (gzip member
#: parts and their join) and the walk; parsing it added 208-1,169 MB
PEAK_MB = 120


def _span_of(inner: bytes) -> bytes:
    """A ``ListOfSpans`` holding one span whose bytes are ``inner``."""
    return b"\x0a" + _VarintBytes(len(inner)) + inner


SHAPES = {
    "empty spans": b"\x0a\x00" * (SIZE // 2),
    "spans of one unknown field": b"\x0a\x02\x78\x00" * (SIZE // 4),
    "empty annotations in one span": _span_of(b"\x52\x00" * (SIZE // 2)),
    "empty tags in one span": _span_of(b"\x5a\x00" * (SIZE // 2)),
}


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    d = tmp_path_factory.mktemp("zipkin-budget")
    zipkin = free_port()
    srv = start_serve_process(f"chdb://{d}/data", str(d / "buffer"), free_port(), free_port(),
                              env={"TRACEHOUSE_ZIPKIN_PORT": str(zipkin)})
    assert wait_port(zipkin, 60), "the Zipkin receiver did not start"
    srv.zipkin = f"http://127.0.0.1:{zipkin}/api/v2/spans"
    yield srv
    srv.kill()


def _post(url: str, body: bytes) -> httpx.Response:
    return oneshot.post(url, content=gzip.compress(body, 6), timeout=120,
                      headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"})


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_zipkin_body_of_tiny_messages_is_refused_before_it_is_parsed(serve, shape):
    body = SHAPES[shape]
    pid = serve.proc.pid
    reset_peak(pid)
    base = status_mb(pid, "VmRSS:")
    t0 = time.monotonic()
    resp = _post(serve.zipkin, body)
    took = time.monotonic() - t0
    added = status_mb(pid, "VmHWM:") - base
    print(f"{shape}: answered {resp.status_code} in {took:.3f} s, peak +{added:.0f} MB")
    assert resp.status_code == 413, (resp.status_code, resp.text[:200])
    assert "too many for their size" in resp.text and "send fewer per request" in resp.text
    assert added < PEAK_MB, added
    assert serve.stored("traces") == 0


def _real_body(n: int) -> bytes:
    """``n`` spans as py_zipkin's proto3 encoder writes them: tags, annotations, both endpoints."""
    enc = get_encoder(Encoding.V2_PROTO3)
    now = time.time()
    trace = os.urandom(16).hex()
    spans = []
    for i in range(n):
        spans.append(enc.encode_span(Span(
            trace_id=trace, name=f"GET /items/{i % 50}", parent_id=None if i == 0 else f"{1:016x}",
            span_id=f"{i + 1:016x}", kind=Kind.SERVER if i % 2 else Kind.CLIENT, timestamp=now - 60 + i * 1e-4,
            duration=0.002, local_endpoint=Endpoint("zipkin-budget", "10.0.0.7", None, 8080),
            remote_endpoint=Endpoint("db", "10.0.0.9", None, 5432),
            annotations={"wire.send": now - 60 + i * 1e-4, "wire.recv": now - 60 + i * 1e-4 + 0.001},
            tags={"http.method": "GET", "http.status_code": "200", "component": "requests", "n": str(i)})))
    return enc.encode_queue(spans)


def test_a_real_zipkin_body_over_the_walked_size_is_stored_whole(serve):
    body = _real_body(5_000)
    assert len(body) > SMALL_BODY
    # the walk inside its spans (taken when the sample says so) charges it well within the budget
    assert over_budget("zipkin", body, inner=True) is None and over_budget("zipkin", body, inner=False) is None
    before = serve.stored("traces")
    resp = _post(serve.zipkin, body)
    assert resp.status_code == 202, resp.text
    wait_for(lambda: serve.stored("traces") >= before + 5_000, 60, what="the 5,000 spans stored")
    assert serve.stored("traces") == before + 5_000


def test_a_zipkin_body_waits_for_room_to_be_parsed(tmp_path, chdb_store):
    """A Zipkin body takes room in the process's parse gate (``parse_gate``) as an OTLP one does:
    while the room is held, it is not parsed; once given back, it is, and stored."""
    body = _real_body(5_000)  # over INLINE_DECODE_BYTES: parsed on a decode thread
    r = run_collector(chdb_store, str(tmp_path / "buffer"), zipkin=True, max_batch_age=0.2)
    gate = r.collector.app.core.parse_gate
    held, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with gate.parsing(gate.budget):
            held.set()
            leave.wait(30)

    holder = threading.Thread(target=hold)
    try:
        holder.start()
        assert held.wait(5)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(_post, r.zipkin_url + "/api/v2/spans", body)
            with pytest.raises(concurrent.futures.TimeoutError):
                answer.result(timeout=1.0)  # parsed beside the room's holder: answered at once
            leave.set()
            assert answer.result(timeout=60).status_code == 202
        wait_for(lambda: r.collector.metrics.get("tracehouse_collector_written_items_total", signal="traces") >= 5_000,
                 60, what="the 5,000 spans stored")
    finally:
        leave.set()
        holder.join(30)
        r.stop()
