"""A real instrumented process against a hostile collector on loopback: the agent neither grows the
host's memory with what the collector sends nor hammers a collector that asks it to wait."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading

import pytest

APP = r'''
import time
import tracehouse.agent as ta
h = ta.start(service="hostile-host")
from opentelemetry import trace
tr = trace.get_tracer("t")
for i in range(300):
    with tr.start_as_current_span("root", kind=trace.SpanKind.SERVER):
        pass
h.force_flush(3.0)
time.sleep(1.0)
h.shutdown(2.0)
# VmHWM, not getrusage's ru_maxrss: that one keeps the parent's peak across fork and exec (a pytest
# process that has loaded the store is already ~400 MB)
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print("MAXRSS_MB", hwm // 1024, flush=True)
'''


class HostileCollector:
    """Reads each request whole, then answers it with ``answer(conn)``; counts the requests."""

    def __init__(self, answer):
        self.answer, self.requests, self.sent = answer, 0, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                while len(buf) < n:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                buf = buf[n:]
                self.requests += 1
                self.answer(self, c)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()


def _run(url: str, tmp_path) -> int:
    (tmp_path / "host.py").write_text(APP)
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=url, TRACEHOUSE_EXPORT_TIMEOUT="2",
               TRACEHOUSE_COMMAND_POLL_S="0", TRACEHOUSE_METRICS_INTERVAL="3600")
    out = subprocess.run([sys.executable, str(tmp_path / "host.py")], env=env, capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return int(re.search(r"MAXRSS_MB (\d+)", out.stdout).group(1))


LIMIT = 400 << 20  # what the collector sends at most per answer (the old agent kept all of it)


def _endless(kind: str):
    def answer(srv, c):
        blob = b"x" * (1 << 20)
        if kind == "chunked":
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            blob = b"%x\r\n" % len(blob) + blob + b"\r\n"
        else:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % LIMIT)
        sent = 0
        while sent < LIMIT:
            c.sendall(blob)
            sent += len(blob)
        threading.Event().wait(10)  # then hold the connection
    return answer


@pytest.mark.parametrize("kind", ["chunked", "content-length"])
def test_a_collector_answering_an_endless_body_does_not_grow_the_host(tmp_path, kind):
    """The transport read the whole answer into memory within the export deadline: a collector
    (or anything on its port) streaming a chunked body grew the host by 2.8 GB in 3 s here."""
    srv = HostileCollector(_endless(kind))
    try:
        assert _run(srv.url, tmp_path) < 200
        assert srv.requests >= 1
    finally:
        srv.close()


@pytest.mark.parametrize("retry_after", ["-5", "0", "nan"])
def test_a_retry_after_of_zero_or_less_does_not_make_the_agent_hammer_the_collector(tmp_path, retry_after):
    """A 503 whose Retry-After was 0, negative or NaN was retried at once, again and again until the
    export deadline: some 15,000 requests in 6 s from one process, and its export threads busy."""
    def busy(srv, c):
        c.sendall(b"HTTP/1.1 503 Busy\r\nRetry-After: " + retry_after.encode() + b"\r\nContent-Length: 0\r\n\r\n")

    srv = HostileCollector(busy)
    try:
        _run(srv.url, tmp_path)
        assert 1 <= srv.requests < 60
    finally:
        srv.close()


@pytest.mark.parametrize("close_after_answer", [False, True])
def test_the_transport_keeps_its_connection_and_reopens_one_the_collector_closed(close_after_answer):
    """Three exports go over one kept-alive connection; a collector that closes it after each answer
    (an idle timeout, a restart) costs a second connection, not a failed export."""
    from tracehouse.agent.otlp_transport import HttpTransport

    peers = []

    def ok(srv, c):
        peers.append(c.getpeername())
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        if close_after_answer:
            c.shutdown(socket.SHUT_RDWR)

    srv = HostileCollector(ok)
    t = HttpTransport(srv.url + "/v1/traces", {}, timeout=2.0)
    try:
        for body in (b"a", b"b" * 100_000, b"c"):
            t.send(body)
    finally:
        t.close()
        srv.close()
    # closing: a request can reach the old connection before the close and lose its answer, so be sent twice
    assert (srv.requests >= 3 if close_after_answer else srv.requests == 3), peers
    assert len(set(peers)) == (3 if close_after_answer else 1), peers


def test_the_command_poll_follows_no_redirect_and_sends_its_token_nowhere_else():
    """The snapshot command poll used urllib's default opener, which follows redirects and keeps
    the request's headers: a collector endpoint (or whatever answers on it) redirecting the poll sent
    the ingestion token, Authorization: Bearer …, to the host it named, over plain http as well."""
    from tests.agent.otlp_sink import Sink
    from tracehouse.agent.commands import CommandPoller

    elsewhere = Sink()

    def redirect(srv, c):
        c.sendall(b"HTTP/1.1 302 Found\r\nLocation: " + elsewhere.url.encode() + b"/steal\r\nContent-Length: 0\r\n\r\n")

    class Redirector(HostileCollector):
        def _serve(self, c):  # a GET: no body to read
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = c.recv(65536)
                if not chunk:
                    return
                buf += chunk
            self.requests += 1
            self.answer(self, c)
            c.close()

    srv = Redirector(redirect)
    try:
        poller = CommandPoller(srv.url, {"authorization": "Bearer s3cret"}, 5.0, 2.0, lambda: ("svc", "i1"),
                               lambda cmd: None)
        assert poller.poll_once() == "failed"
        assert srv.requests == 1 and elsewhere.gets == []
    finally:
        srv.close()
        elsewhere.close()


@pytest.mark.parametrize("part", ["head", "body"])
def test_a_collector_trickling_the_command_answer_cannot_hold_the_poll(part):
    """The poll's timeout bounded each read only (urllib): a collector, or whatever answers on its
    address, sending the answer a byte every 0.1 s held the poll thread for as long as it liked, and
    no snapshot command came through meanwhile. Now the whole exchange has the timeout."""
    import time

    from tests.agent.otlp_sink import TricklingServer
    from tracehouse.agent.commands import CommandPoller

    srv = TricklingServer.http(part)
    try:
        poller = CommandPoller(srv.url, {}, 5.0, 1.0, lambda: ("svc", "i1"), lambda cmd: None)
        t0 = time.monotonic()
        result = [None]
        t = threading.Thread(target=lambda: result.__setitem__(0, poller.poll_once()), daemon=True)
        t.start()
        t.join(6.0)
        took = time.monotonic() - t0
        assert result[0] == "failed" and took < 3.0, (result[0], took)
    finally:
        srv.close()


LOG_BURST = r'''
import json, logging, time
import tracehouse.agent as ta
h = ta.start(service="log-burst", instrument=False, metrics=False)
log = logging.getLogger("app")
log.addHandler(logging.NullHandler())  # the host's own handler: its records are not printed
for i in range(1000):
    log.warning("burst %d", i)
print(json.dumps(ta.stats()), flush=True)
h.shutdown(1.0)
'''


def _against_a_hung_collector(tmp_path, app: str, **env_vars: str) -> str:
    """Run ``app`` as a host process exporting to a collector that never answers; its stdout."""
    from tests.agent.otlp_sink import HangingServer

    srv = HangingServer()
    try:
        (tmp_path / "host.py").write_text(app)
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=srv.url, TRACEHOUSE_COMMAND_POLL_S="0", **env_vars)
        out = subprocess.run([sys.executable, str(tmp_path / "host.py")], env=env, capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout
    finally:
        srv.close()


@pytest.mark.agent_errors_expected
def test_log_records_dropped_by_a_full_queue_are_counted(tmp_path):
    """The log queue (the SDK's batch processor) drops its oldest record when it is full and told
    nobody: a burst of host log records while the collector hung left no trace in stats()."""
    import json

    out = _against_a_hung_collector(tmp_path, LOG_BURST, TRACEHOUSE_QUEUE_SIZE="100", TRACEHOUSE_EXPORT_TIMEOUT="2")
    stats = json.loads(out.strip().splitlines()[-1])
    # one batch of 100 is in flight to the hung collector and 100 wait: the rest was dropped
    assert 700 <= stats.get("logs.dropped.queue_full", 0) <= 900, stats


HUGE_LOGS = r'''
import gc, json, logging
import tracehouse.agent as ta

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) / 1024

h = ta.start(service="huge-logs", instrument=False, metrics=False)
log = logging.getLogger("app")
log.addHandler(logging.NullHandler())
gc.collect()
before = rss_mb()
for i in range(300):  # a failed request's 1 MB body in a warning, say
    log.warning("request %d failed: %s", i, "x" * 1_000_000)
gc.collect()
print(json.dumps({"grew_mb": rss_mb() - before, "stats": ta.stats()}), flush=True)
h.shutdown(1.0)
'''


@pytest.mark.agent_errors_expected
def test_huge_log_messages_wait_for_a_hung_collector_cut_to_what_is_stored(tmp_path):
    """The log queue holds 2,048 records: with 1 MB messages and the collector hung, ~2 GB of the
    host's memory. A body is cut to what the collector stores (16,384 characters) as it is made."""
    import json

    out = _against_a_hung_collector(tmp_path, HUGE_LOGS, TRACEHOUSE_EXPORT_TIMEOUT="2")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["stats"].get("values.truncated") == 300, result["stats"]
    assert result["grew_mb"] < 60, result  # 300 records kept whole: ~300 MB more


FLUSH_EVERY_REQUEST = r'''
import logging, threading
import tracehouse.agent as ta
h = ta.start(service="flush-host")
from opentelemetry import trace
log = logging.getLogger("app")
log.addHandler(logging.NullHandler())
peak = 0
for i in range(100):  # a serverless-style handler: flush at the end of each request
    with trace.get_tracer("t").start_as_current_span("root"):
        log.warning("request %d", i)
    h.force_flush(0.05)
    peak = max(peak, threading.active_count())
print("PEAK_THREADS", peak, flush=True)
h.shutdown(1.0)
'''


@pytest.mark.agent_errors_expected
def test_flushing_at_every_request_while_the_collector_hangs_does_not_pile_up_threads(tmp_path):
    """force_flush runs each provider's flush on a thread and waits for it only until its timeout;
    the SDK's log and metric processors wait for the export in flight whatever their timeout, so
    with a hung collector each call left two threads waiting: 100 flushes, 207 threads. Now a
    provider still flushing from an earlier call gets no second thread."""
    out = _against_a_hung_collector(tmp_path, FLUSH_EVERY_REQUEST, TRACEHOUSE_EXPORT_TIMEOUT="10")
    peak = int(re.search(r"PEAK_THREADS (\d+)", out).group(1))
    assert peak <= 12, out  # the agent's own threads, and one flush thread per provider
