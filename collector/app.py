"""The OTLP/HTTP receiver as a plain ASGI application.

No framework on the ingest path: a request is routed by path, its body read against the size
limit, decoded, checked, rate-limited and appended to the WAL; the answer waits for the group
commit's fsync. Errors are answered with a ``google.rpc.Status`` in the request's encoding (the
OTLP/HTTP spec), and never with a 500. Everything after the body is the shared ingest path
(``ingest.py``): decode off the event loop, requests-in-flight cap, retried-request dedup, buffer cap.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from google.rpc import status_pb2

from .decode import JSON, PROTOBUF, SIGNALS, BadRequest, decode_request, encode_response, media_type, to_json
from .ingest import INLINE_DECODE_BYTES, ClientGone, Ingest
from .metrics import CONTENT_TYPE

__all__ = ["CollectorApp"]

log = logging.getLogger("tracehouse.collector")

_PATHS = {"/v1/traces": SIGNALS["traces"], "/v1/metrics": SIGNALS["metrics"], "/v1/logs": SIGNALS["logs"]}
_GRPC_CODES = {400: 3, 401: 16, 408: 4, 413: 3, 415: 3, 429: 8, 503: 14, 404: 5, 405: 12}


class CollectorApp:
    """``core``: the transport-independent ingest path (``ingest.Ingest``), shared with the other
    receivers (gRPC, Zipkin); its limits and token check apply here too."""

    def __init__(self, core: Ingest, ready: Any = None, commands: Any = None):
        self.core = core
        self.m = core.m
        self.ready = ready  # () -> (ok, reason)
        self.commands = commands  # the agent command channel (an ASGI callable), when a store backs it

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path = scope["path"]
        method = scope["method"]
        sig = _PATHS.get(path)
        if sig is not None:
            if method != "POST":
                await _plain(send, 405, b"use POST\n", [(b"allow", b"POST")])
                return
            await self._ingest(sig, scope, receive, send)
        elif path == "/v1/tracehouse/commands" and self.commands is not None:
            await self.commands(scope, receive, send)
        elif path == "/healthz" and method in ("GET", "HEAD"):
            await _plain(send, 200, b"ok\n")
        elif path == "/readyz" and method in ("GET", "HEAD"):
            ok, reason = self.ready() if self.ready else (True, "ok")
            await _plain(send, 200 if ok else 503, (reason + "\n").encode())
        elif path == "/metrics" and method in ("GET", "HEAD"):
            if not self.core.tokens.allows(dict(scope["headers"])):  # the ingest token, whenever one is configured
                await _plain(send, 401, b"missing or invalid ingestion token\n", [(b"www-authenticate", b"Bearer")])
                return
            await _send(send, 200, self.m.render(), CONTENT_TYPE.encode())
        else:
            await _plain(send, 404, b"not found\n")

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                self.core.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _ingest(self, sig, scope: dict, receive: Any, send: Any) -> None:
        headers = dict(scope["headers"])
        ctype = headers.get(b"content-type", b"").decode("latin-1")
        as_json = media_type(ctype) == JSON
        encoding = headers.get(b"content-encoding", b"").decode("latin-1")
        max_body, max_decompressed = self.core.max_body, self.core.max_decompressed

        async def read() -> bytes | None:
            clen = headers.get(b"content-length")
            if clen is not None and clen.isdigit() and int(clen) > max_body:
                return None
            return await _read_body(receive, max_body, self.core.body_timeout)

        def decode(body: bytes) -> tuple[Any, bytes | None]:
            msg, _, raw = decode_request(sig, ctype, encoding, body, max_decompressed)
            return msg, raw

        # uncompressed protobuf costs at most its size to decode: small bodies stay on the loop
        inline = INLINE_DECODE_BYTES if media_type(ctype) == PROTOBUF and not encoding else 0
        out = await self.core.handle(sig, headers, read, decode, inline, self.core.declared_size(headers))
        if not out.ok:
            extra = [(b"retry-after", str(out.retry_after).encode())] if out.retry_after is not None else []
            await _status(send, out.status, out.message, as_json, extra)
            return
        resp = encode_response(sig, out.rejected, out.message, as_json)
        await _send(send, 200, resp, (JSON if as_json else PROTOBUF).encode())


async def _read_body(receive: Any, limit: int, timeout: float) -> bytes | None:
    """The body (None: larger than ``limit``), read within ``timeout`` seconds. Raises
    ``BadRequest(408)`` past that, and ``ClientGone`` when the client disconnects before its end:
    a body cut short can still parse (at a field boundary) and must not be stored, since the
    client, without an answer, sends all of it again."""
    try:
        return await asyncio.wait_for(_receive_body(receive, limit), timeout)
    except asyncio.TimeoutError:
        raise BadRequest(408, f"request body not received within {timeout:g} s") from None


async def _receive_body(receive: Any, limit: int) -> bytes | None:
    chunks = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        if not msg.get("more_body", False):
            break
    return b"".join(chunks)


async def _send(send: Any, status: int, body: bytes, ctype: bytes, extra: list | None = None) -> None:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _plain(send: Any, status: int, body: bytes, extra: list | None = None) -> None:
    await _send(send, status, body, b"text/plain; charset=utf-8", extra)


async def _status(send: Any, status: int, message: str, as_json: bool, extra: list | None = None) -> None:
    st = status_pb2.Status(code=_GRPC_CODES.get(status, 2), message=message)
    if as_json:
        await _send(send, status, to_json(st), JSON.encode(), extra)
    else:
        await _send(send, status, st.SerializeToString(), PROTOBUF.encode(), extra)
