"""Slow and vanishing clients: a request head or body that does not arrive in time is cut off (and
holds no request slot), and a body cut short by a disconnect is not stored, even when what arrived
parses."""

from __future__ import annotations

import socket
import time

from testkit.servers import free_port
from tests.collector.harness import run_collector, start_serve_process
from tests.collector.payloads import traces
from tests.collector.rollups import span_totals
from tests.support import oneshot
from tests.support.waiting import wait_for

PB = {"content-type": "application/x-protobuf"}


def _head(port: int, length: int) -> bytes:
    return (f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\ncontent-type: application/x-protobuf\r\n"
            f"content-length: {length}\r\n\r\n").encode()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed the connection within ``seconds``, and what it sent first."""
    sock.settimeout(seconds)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True, got
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        return True, got


def test_a_body_that_does_not_arrive_in_time_is_answered_408_and_frees_its_slot(chdb_store, tmp_path):
    r = run_collector(chdb_store, str(tmp_path / "buffer"), max_batch_age=0.05, client_timeout_seconds=1.0,
                      max_concurrent_requests=2)
    port = _port(r.url)
    slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    try:
        for s in slow:  # heads, and 10 of the 1,000 body bytes announced
            s.sendall(_head(port, 1000) + b"\x0a\x08" + b"x" * 8)
        core = r.collector.app.core
        wait_for(lambda: core.inflight_bytes >= 2000, 5, every=0.02, what="both slow bodies in flight")
        req, _ = traces(5)
        body = req.SerializeToString()
        busy = oneshot.post(r.url + "/v1/traces", content=body, headers=PB, timeout=10)
        assert busy.status_code == 503  # both slots held by the slow bodies
        for s in slow:
            closed, got = _closed_within(s, 10)
            assert got.startswith(b"HTTP/1.1 408"), got[:100]
        ok = oneshot.post(r.url + "/v1/traces", content=body, headers=PB, timeout=10)
        assert ok.status_code == 200
        r.wait_stored("traces", 5)
        m = r.collector.metrics
        assert m.get("tracehouse_collector_rejected_requests_total", signal="traces", reason="timeout") == 2
    finally:
        for s in slow:
            s.close()
        r.stop()
    assert span_totals(chdb_store) == (5, 5)


def test_a_body_cut_short_by_a_disconnect_is_not_stored_even_when_it_parses(chdb_store, tmp_path):
    """The first resource of a two-resource request is itself a valid request: a client that
    disconnects right after it, without an answer, sends the whole request again later."""
    first, _ = traces(7, service="first")
    second, _ = traces(5, service="second")
    whole = type(first)()
    whole.resource_spans.extend([first.resource_spans[0], second.resource_spans[0]])
    body = whole.SerializeToString()
    cut = len(first.SerializeToString())  # one resource_spans field: the prefix parses
    assert type(first).FromString(body[:cut]) == first
    r = run_collector(chdb_store, str(tmp_path / "buffer"), max_batch_age=0.05)
    port = _port(r.url)
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(_head(port, len(body)) + body[:cut])
        core = r.collector.app.core
        wait_for(lambda: core.inflight_bytes >= len(body), 5, every=0.02, what="the body in flight")
        s.close()
        m = r.collector.metrics
        deadline = time.monotonic() + 10
        while not any(m.get("tracehouse_collector_requests_total", signal="traces", code=c) for c in ("200", "499")):
            assert time.monotonic() < deadline, "the cut request was not handled"
            time.sleep(0.05)
        resp = oneshot.post(r.url + "/v1/traces", content=body, headers=PB, timeout=10)  # the client's retry
        assert resp.status_code == 200
        r.wait_stored("traces", 12)
    finally:
        r.stop()
    assert span_totals(chdb_store) == (12, 12)  # not 19: the prefix's 7 spans were not stored first
    assert m.get("tracehouse_collector_rejected_requests_total", signal="traces", reason="client_disconnected") == 1


def test_a_request_head_that_does_not_arrive_in_time_is_cut_off(tmp_path):
    """On every HTTP port of ``tracehouse serve`` (OTLP, dashboard): a connection that sends part
    of a head, or nothing, is closed after the client timeout; a kept-alive connection too once it
    starts a head it does not finish. Complete requests are served as before."""
    otlp, http = free_port(), free_port()
    proc = start_serve_process(f"chdb://{tmp_path / 'data'}", str(tmp_path / "buffer"), otlp, http, "serve",
                               {"TRACEHOUSE_CLIENT_TIMEOUT_SECONDS": "1"})
    try:
        from testkit.servers import wait_port

        assert wait_port(http, 60)
        for port in (otlp, http):
            partial = socket.create_connection(("127.0.0.1", port), timeout=5)
            partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            silent = socket.create_connection(("127.0.0.1", port), timeout=5)
            kept = socket.create_connection(("127.0.0.1", port), timeout=5)
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answered = b""
            while b"\r\n\r\n" not in answered:  # the first request answered: the connection is kept alive
                answered += kept.recv(65536)
            kept.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next request's head, never finished
            t0 = time.monotonic()
            for s in (partial, silent, kept):
                closed, got = _closed_within(s, 10)
                assert closed, f"port {port}: connection still open after {time.monotonic() - t0:.1f} s"
                s.close()
            assert time.monotonic() - t0 < 5
            ok = oneshot.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
            assert ok.status_code in (200, 503), ok.status_code
    finally:
        proc.kill()


def test_request_bytes_in_flight_are_capped(chdb_store, tmp_path):
    """Bodies held at once are capped (counted from their declared length as soon as their head
    arrives): past the cap a request is answered 503 + Retry-After, and once the held ones end
    (here: a client that disconnects) the same request is taken. A request alone always is."""
    r = run_collector(chdb_store, str(tmp_path / "buffer"), max_batch_age=0.05, max_inflight_bytes=100_000)
    port = _port(r.url)
    core = r.collector.app.core
    req, _ = traces(150)
    body = req.SerializeToString()
    assert 10_000 < len(body) < 30_000
    try:
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(_head(port, 95_000) + b"\x0a")
        deadline = time.monotonic() + 5
        while core.inflight_bytes < 95_000:
            assert time.monotonic() < deadline, "the slow body was not counted"
            time.sleep(0.02)
        refused = oneshot.post(r.url + "/v1/traces", content=body, headers=PB, timeout=10)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        slow.close()
        deadline = time.monotonic() + 5
        while core.inflight_bytes:
            assert time.monotonic() < deadline, "the disconnected body is still counted"
            time.sleep(0.02)
        assert oneshot.post(r.url + "/v1/traces", content=body, headers=PB, timeout=10).status_code == 200
        big, _ = traces(1100)  # larger than the cap on its own: taken when nothing else is in flight
        assert len(big.SerializeToString()) > 100_000
        assert oneshot.post(r.url + "/v1/traces", content=big.SerializeToString(), headers=PB,
                          timeout=10).status_code == 200
        r.wait_stored("traces", 1250)
        assert core.inflight_bytes == 0
        assert "tracehouse_collector_inflight_bytes 0" in oneshot.get(r.url + "/metrics", timeout=10).text
    finally:
        r.stop()
