"""The OTLP/HTTP receiver as a plain ASGI application.

No framework on the ingest path: a request is routed by path, its body read against the size
limit, decoded, checked, rate-limited and appended to the WAL; the answer waits for the group
commit's fsync. Errors are answered with a ``google.rpc.Status`` in the request's encoding (the
OTLP/HTTP spec), and never with a 500.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from google.rpc import status_pb2

from .auth import TokenCheck
from .decode import JSON, PROTOBUF, SIGNALS, BadRequest, decode_body, encode_response, media_type, to_json
from .metrics import CONTENT_TYPE, Registry
from .ratelimit import RateLimiter
from .validate import check
from .wal import Wal, WalClosed

__all__ = ["CollectorApp"]

log = logging.getLogger("tracehouse.collector")

_PATHS = {"/v1/traces": SIGNALS["traces"], "/v1/metrics": SIGNALS["metrics"], "/v1/logs": SIGNALS["logs"]}
_GRPC_CODES = {400: 3, 401: 16, 413: 3, 415: 3, 429: 8, 503: 14, 404: 5, 405: 12}


class CollectorApp:
    def __init__(self, wal: Wal, metrics: Registry, tokens: TokenCheck, limiter: RateLimiter,
                 max_body_bytes: int, max_decompressed_bytes: int, buffer_max_bytes: int,
                 ready: Any = None, commands: Any = None):
        self.wal = wal
        self.m = metrics
        self.tokens = tokens
        self.limiter = limiter
        self.max_body = max_body_bytes
        self.max_decompressed = max_decompressed_bytes
        self.buffer_max = buffer_max_bytes
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
            if not self.tokens.allows(dict(scope["headers"])):  # the ingest token, whenever one is configured
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
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _ingest(self, sig, scope: dict, receive: Any, send: Any) -> None:
        headers = dict(scope["headers"])
        ctype = headers.get(b"content-type", b"").decode("latin-1")
        as_json = media_type(ctype) == JSON
        name = sig.name

        async def fail(status: int, message: str, reason: str, retry_after: int | None = None) -> None:
            self.m.inc("tracehouse_collector_requests_total", 1, signal=name, code=str(status))
            self.m.inc("tracehouse_collector_rejected_requests_total", 1, signal=name, reason=reason)
            extra = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else []
            await _status(send, status, message, as_json, extra)

        if not self.tokens.allows(headers):
            await fail(401, "missing or invalid ingestion token", "unauthorized")
            return
        clen = headers.get(b"content-length")
        if clen is not None and clen.isdigit() and int(clen) > self.max_body:
            await fail(413, f"body exceeds {self.max_body} bytes", "too_large")
            return
        body = await _read_body(receive, self.max_body)
        if body is None:
            await fail(413, f"body exceeds {self.max_body} bytes", "too_large")
            return
        if self.wal.pending_bytes() + len(body) > self.buffer_max:
            await fail(503, "durable buffer is full; retry later", "buffer_full", 5)
            return
        try:
            msg, as_json = decode_body(sig, ctype, headers.get(b"content-encoding", b"").decode("latin-1"),
                                       body, self.max_decompressed)
            checked = check(name, msg)
        except BadRequest as e:
            await fail(e.status, e.message, "unsupported" if e.status == 415 else
                       "too_large" if e.status == 413 else "malformed")
            return
        except Exception as e:  # anything the decoder did not foresee is the body's fault, not a 500
            log.warning("unexpected error decoding a %s request: %r", name, e)
            await fail(400, f"cannot decode the body: {type(e).__name__}", "malformed")
            return
        received = checked.accepted + checked.rejected
        self.m.inc("tracehouse_collector_received_items_total", received, signal=name)
        if checked.rejected:
            for reason, n in checked.reasons.items():
                self.m.inc("tracehouse_collector_rejected_items_total", n, signal=name, reason=reason)
        if self.limiter.enabled:
            wait = self.limiter.admit(checked.per_service)
            if wait > 0:
                self.m.inc("tracehouse_collector_rejected_items_total", checked.accepted, signal=name,
                           reason="rate_limited")
                await fail(429, "rate limit exceeded for this service", "rate_limited",
                           self.limiter.retry_after(wait))
                return
        if checked.accepted:
            if as_json or checked.modified or headers.get(b"content-encoding"):
                payload = msg.SerializeToString()
            else:
                payload = body
            try:
                await self._durable(sig.code, checked.accepted, payload)
            except (WalClosed, OSError) as e:
                self.m.inc("tracehouse_collector_rejected_items_total", checked.accepted, signal=name,
                           reason="buffer_error")
                await fail(503, f"cannot buffer the data: {e}", "buffer_error", 5)
                return
            self.m.inc("tracehouse_collector_accepted_items_total", checked.accepted, signal=name)
        self.m.inc("tracehouse_collector_requests_total", 1, signal=name, code="200")
        out = encode_response(sig, checked.rejected, checked.message(), as_json)
        await _send(send, 200, out, (JSON if as_json else PROTOBUF).encode())

    async def _durable(self, kind: int, items: int, payload: bytes) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def settle(f: asyncio.Future, pos: Any, err: BaseException | None) -> None:
            if f.done():
                return
            if err is not None:
                f.set_exception(err)
            else:
                f.set_result(pos)

        def done(pos: Any, err: BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(settle, fut, pos, err)
            except RuntimeError:  # the loop is gone: nobody waits any more; the data is durable
                pass

        self.wal.append(kind, items, payload, done)
        await fut


async def _read_body(receive: Any, limit: int) -> bytes | None:
    chunks = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
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
