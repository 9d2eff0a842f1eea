"""Send one encoded OTLP request: HTTP/protobuf over ``http.client``, or gRPC through grpcio.

Both take the request bytes that :mod:`.otlp_spans`/:mod:`.otlp_metrics` wrote, so neither
builds a protobuf object. Every call has a deadline (the export timeout), for the whole exchange:
a socket timeout bounds one read only, so a collector (or a proxy) sending its answer a byte at a
time held an export, and a ``force_flush`` waiting for it, for as long as it liked. A collector that
answers 429/502/503/504 (or gRPC UNAVAILABLE/RESOURCE_EXHAUSTED) is retried within that
deadline, honouring ``Retry-After`` as the OTLP specification asks. Any other failure raises
:class:`ExportFailed`, which the guarded exporter counts and rate-limits (see :mod:`.export`).
"""

from __future__ import annotations

import gzip
import http.client
import io
import socket
import ssl
import time
from urllib.parse import urlsplit

from tracehouse.agent import __version__
from tracehouse.agent.name_lookup import connect

__all__ = ["ExportFailed", "GrpcTransport", "HttpTransport", "get_within", "grpc_available"]

USER_AGENT = f"tracehouse-agent/{__version__} OTel-OTLP-Exporter-Python"
_RETRY_STATUS = frozenset((429, 502, 503, 504))
MAX_ANSWER = 64 * 1024  # what is read of an answer's body (ExportTraceServiceResponse: partial_success)
GRPC_METHODS = {"spans": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export"}


def within(own: float, timeout: float | None) -> float:
    """The time one send may take: the transport's own timeout, or ``timeout`` when shorter."""
    return own if timeout is None else max(0.001, min(own, timeout))


class ExportFailed(Exception):
    """An export the collector did not accept (connection error, timeout, non-2xx)."""


def _retry_after(value: str | None, backoff: float) -> float:
    """The wait before a retry: what Retry-After asks (seconds), never less than ``backoff`` (a 0,
    negative or NaN value was an immediate retry, again and again until the deadline)."""
    try:
        wait = float(value) if value else backoff
    except ValueError:
        return backoff
    return wait if wait >= backoff else backoff  # NaN compares false


class HttpTransport:
    """POST to one URL over a kept-alive connection (reopened once if the collector closed it)."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float, compression: str | None = None,
                 certificate: str | None = None):
        parts = urlsplit(url)
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._gzip = compression == "gzip"
        self._ssl = ssl.create_default_context(cafile=certificate) if self._https else None
        self._headers = {"Content-Type": "application/x-protobuf", "User-Agent": USER_AGENT, **headers}
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._conn: _Connection | None = None

    def send(self, body: bytes, timeout: float | None = None) -> None:
        """POST ``body`` within the transport's timeout, or ``timeout`` (s) when shorter (a flush's
        time left)."""
        if self._gzip:
            body = gzip.compress(body, compresslevel=6)
        limit = within(self._timeout, timeout)
        deadline = time.monotonic() + limit
        backoff = 0.5
        reused_failed = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ExportFailed(f"POST {self.url}: no answer within {limit:g} s")
            conn = self._conn
            reused = conn is not None
            if conn is None:
                conn = self._conn = _Connection(self._host, self._port, self._ssl)
            conn.deadline = deadline
            try:
                conn.request("POST", self._path, body, self._headers)
                resp = conn.getresponse()
                resp.read(MAX_ANSWER)  # an OTLP answer is a few bytes; never the whole of a hostile one
            except _PastDeadline:
                self.close()
                raise ExportFailed(f"POST {self.url}: no whole answer within {limit:g} s") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and not reused_failed:  # the collector closed an idle kept-alive connection
                    reused_failed = True
                    continue
                raise ExportFailed(f"POST {self.url}: {exc!r}") from exc
            if resp.will_close or not resp.isclosed():  # the rest of a longer answer stays unread:
                self.close()  # the connection cannot carry another request
            if 200 <= resp.status < 300:
                return
            if resp.status in _RETRY_STATUS:
                wait = _retry_after(resp.getheader("Retry-After"), backoff)
                if time.monotonic() + wait < deadline:
                    time.sleep(wait)
                    backoff = min(backoff * 2, 8.0)
                    continue
            raise ExportFailed(f"POST {self.url}: HTTP {resp.status} {resp.reason}")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass


def get_within(url: str, headers: dict[str, str], timeout: float, limit: int) -> tuple[int, bytes]:
    """``GET url`` on a connection of its own, the whole exchange within ``timeout`` seconds (a
    peer answering a byte at a time included): the status and at most ``limit`` bytes of the body.
    No redirect is followed and no proxy is used. Raises ``ExportFailed`` (connection error, past
    the deadline)."""
    parts = urlsplit(url)
    host, https = parts.hostname or "127.0.0.1", parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = _Connection(host, port, ssl.create_default_context() if https else None)
    conn.deadline = time.monotonic() + timeout
    try:
        conn.request("GET", path, headers={"User-Agent": USER_AGENT, **headers})
        resp = conn.getresponse()
        return resp.status, resp.read(limit)
    except _PastDeadline:
        raise ExportFailed(f"GET {url}: no whole answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ExportFailed(f"GET {url}: {exc!r}") from exc
    finally:
        conn.close()


class _Connection(http.client.HTTPConnection):
    """An HTTP (``tls``: HTTPS) connection whose next exchange, the name lookup, the connect, the
    TLS handshake, every send and the answer included, ends by ``deadline`` (``time.monotonic()``).
    A socket's timeout bounds one call: set once when the connection was made, the handshake and
    the send of the body each had all of it (over TLS a collector slow to shake hands, then reading
    slowly, held a 1 s export for 1.7 s), and the lookup had none of ours (a resolver that did not
    answer held an export, and a host's own flush, for glibc's 10 to 30 s)."""

    deadline = 0.0

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None):
        super().__init__(host, port)
        self._tls = tls

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _PastDeadline
        return left

    def connect(self) -> None:
        sock = connect((self.host, self.port), deadline=self.deadline)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client does
            if self._tls is not None:
                sock.settimeout(self._left())  # the handshake, as a whole (one call)
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def send(self, data) -> None:
        if self.sock is None:
            self.connect()
        self.sock.settimeout(self._left())  # one sendall is bounded as a whole, over TLS too
        super().send(data)

    def response_class(self, sock: socket.socket, *args, **kwargs) -> http.client.HTTPResponse:  # type: ignore[override]
        return http.client.HTTPResponse(_Reads(sock, self.deadline), *args, **kwargs)  # type: ignore[arg-type]


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each one given only what is left of ``deadline``: ``http.client`` reads a
    head line by line and a body in chunks, each read under the socket's timeout, so that timeout
    alone bounds nothing. Closing it leaves the socket to its connection."""

    def __init__(self, sock: socket.socket, deadline: float):
        super().__init__()
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _PastDeadline
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(b)
        except TimeoutError:
            raise _PastDeadline from None


class _PastDeadline(TimeoutError):
    pass


class _Reads:
    """What ``HTTPResponse`` is given instead of the socket: it only calls ``makefile``."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock, self._deadline = sock, deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


def grpc_available() -> bool:
    try:
        import grpc  # noqa: F401
    except ImportError:
        return False
    return True


def grpc_target(endpoint: str, insecure: bool | None) -> tuple[str, bool]:
    """``host:port`` and whether to use TLS: ``http://`` no, ``https://`` yes, no scheme: TLS
    unless ``insecure`` (``OTEL_EXPORTER_OTLP_INSECURE``)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    target = parts.netloc or endpoint
    if parts.scheme == "http":
        return target, False
    if parts.scheme == "https":
        return target, True
    return target, not insecure


class GrpcTransport:
    """A unary OTLP ``Export`` call with raw request bytes (no protobuf objects on our side)."""

    def __init__(self, endpoint: str, signal: str, headers: dict[str, str], timeout: float,
                 compression: str | None = None, insecure: bool | None = None, certificate: str | None = None):
        import grpc

        self._grpc = grpc
        target, secure = grpc_target(endpoint, insecure)
        if secure:
            ca = open(certificate, "rb").read() if certificate else None  # noqa: SIM115
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca))
        else:
            self._channel = grpc.insecure_channel(target)
        self.url = f"{'https' if secure else 'http'}://{target}{GRPC_METHODS[signal]}"
        self._call = self._channel.unary_unary(GRPC_METHODS[signal], request_serializer=None,
                                               response_deserializer=None)
        self._metadata = [(k.lower(), v) for k, v in headers.items()] + [("user-agent", USER_AGENT)]
        self._timeout = timeout
        self._compression = grpc.Compression.Gzip if compression == "gzip" else None
        self._retry = frozenset((grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED))

    def send(self, body: bytes, timeout: float | None = None) -> None:
        limit = within(self._timeout, timeout)
        deadline = time.monotonic() + limit
        backoff = 0.5
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ExportFailed(f"gRPC {self.url}: no answer within {limit:g} s")
            try:
                self._call(body, timeout=remaining, metadata=self._metadata, compression=self._compression)
                return
            except self._grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code in self._retry and time.monotonic() + backoff < deadline:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 8.0)
                    continue
                raise ExportFailed(f"gRPC {self.url}: {code}: {exc.details() if hasattr(exc, 'details') else exc}") \
                    from None

    def close(self) -> None:
        self._channel.close()
