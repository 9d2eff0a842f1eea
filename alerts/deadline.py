"""Network calls of the notifiers bounded as a whole, not per read.

A timeout on a socket (httpx's read timeout, smtplib's ``timeout``) bounds one read: a receiver, or
a proxy in front of it, answering a byte every few seconds held a notification for as long as it
went on, and with it every other group's. Here each read, write and connect is given only what is
left of one deadline: HTTP through httpcore (httpx's own transport library) with a network backend
that does so, SMTP with a timer that shuts the socket down at the deadline.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

import httpcore

__all__ = ["DeadlineBackend", "post_status", "smtp_cutoff"]


def _left(deadline: float, timeout: float | None) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("no whole answer within the notification's time limit")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: float):
        self._inner, self._deadline = inner, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(self._deadline, timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(self._deadline, timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _left(self._deadline, timeout)),
                       self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's synchronous sockets, every operation within what is left of ``deadline``."""

    def __init__(self, deadline: float):
        self._inner, self._deadline = httpcore.SyncBackend(), deadline

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, _left(self._deadline, timeout), local_address,
                                               socket_options), self._deadline)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, _left(self._deadline, timeout), socket_options),
                       self._deadline)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def post_status(url: str, content: bytes, headers: dict[str, str], extensions: dict[str, Any], ssl_context: Any,
                timeout: float) -> tuple[int, dict[str, str]]:
    """POST ``content`` to ``url``; the answer's status and headers within ``timeout`` seconds in
    all. Its body is not read (a hostile receiver could send one of any size). Raises httpcore's
    exceptions."""
    deadline = time.monotonic() + timeout
    with httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=DeadlineBackend(deadline),
                                 max_connections=1) as pool:
        ext = dict(extensions, timeout={"connect": timeout, "read": timeout, "write": timeout, "pool": timeout})
        with pool.stream("POST", url, headers=list(headers.items()), content=content, extensions=ext) as r:
            return r.status, {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in r.headers}


class smtp_cutoff:  # noqa: N801 - used as a context manager, like a function
    """``with smtp_cutoff(client, timeout):`` shuts ``client``'s socket down ``timeout`` seconds in,
    if the conversation is still going; a read blocked on it then fails at once."""

    def __init__(self, client: Any, timeout: float):
        self._client = client
        self.fired = False
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        sock = getattr(self._client, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> smtp_cutoff:
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()
