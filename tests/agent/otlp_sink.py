"""A tiny OTLP/HTTP receiver for tests: records POST bodies and decodes them with opentelemetry.proto.

It stands in for the network peer (the collector) until `tracehouse serve` can take its place.
``mode="hang"`` accepts connections and never answers (a hung collector).
"""

from __future__ import annotations

import gzip
import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

KINDS = {"/v1/traces": ExportTraceServiceRequest, "/v1/metrics": ExportMetricsServiceRequest,
         "/v1/logs": ExportLogsServiceRequest}


def attrs(kvs) -> dict:
    out = {}
    for kv in kvs:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
    return out


class Sink:
    def __init__(self):
        self.requests: list[tuple[str, object, dict]] = []
        self.gets: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                cls = KINDS.get(self.path)
                if cls is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                msg = cls()
                msg.ParseFromString(body)
                with sink.lock:
                    sink.requests.append((self.path, msg, dict(self.headers)))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self):
                with sink.lock:
                    sink.gets.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def spans(self) -> list[tuple[dict, object]]:
        """(resource attributes, span) for every span received."""
        out = []
        with self.lock:
            reqs = [r for r in self.requests if r[0] == "/v1/traces"]
        for _, msg, _ in reqs:
            for rs in msg.resource_spans:
                ra = attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    out.extend((ra, s) for s in ss.spans)
        return out

    def metrics(self) -> list[tuple[dict, object]]:
        out = []
        with self.lock:
            reqs = [r for r in self.requests if r[0] == "/v1/metrics"]
        for _, msg, _ in reqs:
            for rm in msg.resource_metrics:
                ra = attrs(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    out.extend((ra, m) for m in sm.metrics)
        return out

    def logs(self) -> list[tuple[dict, object]]:
        out = []
        with self.lock:
            reqs = [r for r in self.requests if r[0] == "/v1/logs"]
        for _, msg, _ in reqs:
            for rl in msg.resource_logs:
                ra = attrs(rl.resource.attributes)
                for sl in rl.scope_logs:
                    out.extend((ra, r) for r in sl.log_records)
        return out

    def wait(self, predicate, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate(self)
            if result:
                return result
            time.sleep(0.1)
        return predicate(self)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class HangingServer:
    """Accepts TCP connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.conns = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            self._on_connection(c)

    def _on_connection(self, c):
        """Nothing: the connection is held and never answered."""

    def close(self):
        self._stop = True
        for c in self.conns:
            c.close()
        self.sock.close()


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


class TricklingServer(HangingServer):
    """Answers each connection a byte at a time, every ``every`` seconds, for as long as the client
    stays, so a socket timeout (which bounds one read) never fires: ``head`` once, then ``drip``
    again and again. ``TricklingServer.http("body")`` is a 200 head whose body never ends,
    ``.http("head")`` a head that never ends. With ``read_first`` it reads the request first (an
    SMTP server speaks first). With ``reply`` the answers do end: each request gets
    ``reply(request)``, a byte at a time (a slow peer that finishes)."""

    def __init__(self, head: bytes, drip: bytes, read_first: bool = True, every: float = 0.1,
                 reply: Callable[[bytes], bytes] | None = None):
        self.head, self.drip, self.read_first, self.every, self.reply = head, drip, read_first, every, reply
        super().__init__()

    @classmethod
    def http(cls, part: str) -> TricklingServer:
        if part == "body":
            return cls(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", b"x")
        return cls(b"HTTP/1.1 200 OK\r\n", b"X-Slow: 1\r\n")

    @classmethod
    def redis(cls, every: float, forever: bool = True) -> TricklingServer:
        """A Redis-protocol peer: a first reply that never ends (``+PPP…``) or, not ``forever``, the
        right reply to each command (HELLO, PING, anything else: OK), each a byte at a time."""
        if forever:
            return cls(b"+", b"P", every=every)

        def reply(request: bytes) -> bytes:
            if b"HELLO" in request:
                return b"%1\r\n$5\r\nproto\r\n:3\r\n"
            return b"+PONG\r\n" if b"PING" in request else b"+OK\r\n"
        return cls(b"", b"", every=every, reply=reply)

    @classmethod
    def postgresql(cls, every: float) -> TricklingServer:
        """A PostgreSQL-protocol peer: no TLS, no password, ready for queries, then an answer to the
        first query (a row description of 10,000 bytes) that never ends."""
        def msg(kind: bytes, body: bytes) -> bytes:
            return kind + struct.pack("!i", 4 + len(body)) + body
        ready = (b"N" + msg(b"R", struct.pack("!i", 0)) + msg(b"S", b"client_encoding\0UTF8\0")
                 + msg(b"Z", b"I"))
        return cls(ready + b"T" + struct.pack("!i", 10_000), b"a", every=every)

    def _on_connection(self, c):
        threading.Thread(target=self._answer, args=(c,), daemon=True).start()

    def _answer(self, c):
        try:
            if self.reply is not None:
                return self._reply_to_each(c, self.reply)
            if self.read_first:
                c.recv(1 << 20)
            c.sendall(self.head)
            while not self._stop:
                c.sendall(self.drip)
                time.sleep(self.every)
        except OSError:  # the client gave up: what the test waits for
            pass

    def _reply_to_each(self, c, reply: Callable[[bytes], bytes]) -> None:
        while not self._stop and (request := c.recv(1 << 20)):
            answer = reply(request)
            for i in range(len(answer)):
                time.sleep(self.every)
                c.sendall(answer[i:i + 1])


def self_signed(directory: str) -> tuple[str, str]:
    """(certificate, key) files of a self-signed certificate for 127.0.0.1 and localhost, made by
    the ``openssl`` command (``cryptography`` is not a dependency)."""
    import os
    import subprocess

    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class SlowTLSServer(HangingServer):
    """A TLS peer on loopback that waits ``handshake_after`` seconds before its side of the
    handshake, then reads ``chunk`` bytes every ``every`` seconds and never answers: a collector (or
    a proxy) reading a large export slowly."""

    def __init__(self, cert: str, key: str, handshake_after: float = 0.0, chunk: int = 64, every: float = 0.1):
        import ssl

        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.handshake_after, self.chunk, self.every = handshake_after, chunk, every
        super().__init__()
        self.url = f"https://127.0.0.1:{self.port}"

    def _on_connection(self, c):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        threading.Thread(target=self._read_slowly, args=(c,), daemon=True).start()

    def _read_slowly(self, c):
        try:
            time.sleep(self.handshake_after)
            s = self.ctx.wrap_socket(c, server_side=True)
            while not self._stop and s.recv(self.chunk):
                time.sleep(self.every)
        except OSError:  # the client gave up
            pass
