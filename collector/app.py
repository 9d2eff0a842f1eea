"""The OTLP/HTTP receiver as a plain ASGI application.

No framework on the ingest path: a request is routed by path, its body read against the size
limit, decoded, checked, rate-limited and appended to the WAL; the answer waits for the group
commit's fsync. Errors are answered with a ``google.rpc.Status`` in the request's encoding (the
OTLP/HTTP spec), and never with a 500.

Decoding runs in a small thread pool, off the event loop that other servers of the process (the
dashboard) share; past ``max_concurrent`` requests in flight, a request is answered 503 with
Retry-After at once. The buffer cap counts what the WAL would hold (the decoded request), not
the compressed body. A request whose content was acknowledged within the dedup window (a
client's retry after a lost answer) is acknowledged again without being stored (``dedup.py``).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from google.rpc import status_pb2

from .auth import TokenCheck
from .decode import (
    JSON,
    PROTOBUF,
    SIGNALS,
    BadRequest,
    Signal,
    decode_request,
    encode_response,
    media_type,
    to_json,
)
from .dedup import RecentRequests, digest_of
from .metrics import CONTENT_TYPE, Registry
from .ratelimit import RateLimiter
from .validate import Checked, check
from .wal import Wal, WalClosed

__all__ = ["CollectorApp"]

log = logging.getLogger("tracehouse.collector")

_PATHS = {"/v1/traces": SIGNALS["traces"], "/v1/metrics": SIGNALS["metrics"], "/v1/logs": SIGNALS["logs"]}
_GRPC_CODES = {400: 3, 401: 16, 413: 3, 415: 3, 429: 8, 503: 14, 404: 5, 405: 12}


@dataclass
class Prepared:
    """A decoded and checked request: what the WAL would store, and its digest."""

    checked: Checked
    payload: bytes
    digest: bytes
    as_json: bool


def prepare(sig: Signal, content_type: str, content_encoding: str, body: bytes, max_decompressed: int) -> Prepared:
    """Decode and check one body (CPU-bound: run off the event loop). The payload is the protobuf
    the client sent (decompressed) when the checks changed nothing, else the message serialized
    again (JSON, or invalid items removed): the same content sent again, compressed or not, has
    the same payload and digest."""
    msg, as_json, raw = decode_request(sig, content_type, content_encoding, body, max_decompressed)
    checked = check(sig.name, msg)
    if not checked.accepted:
        payload = b""
    elif raw is not None and not checked.modified:
        payload = raw
    else:
        payload = msg.SerializeToString()
    return Prepared(checked, payload, digest_of(sig.code, payload), as_json)


class CollectorApp:
    def __init__(self, wal: Wal, metrics: Registry, tokens: TokenCheck, limiter: RateLimiter,
                 max_body_bytes: int, max_decompressed_bytes: int, buffer_max_bytes: int,
                 ready: Any = None, commands: Any = None, recent: RecentRequests | None = None,
                 max_concurrent: int = 64, decode_threads: int = 2):
        self.wal = wal
        self.recent = recent
        self.max_concurrent = max_concurrent
        self._active = 0
        self._decoder = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="tracehouse-decode")
        self._inflight: dict[bytes, asyncio.Future] = {}
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
            await _send(send, 200, self.m.render(), CONTENT_TYPE.encode())
        else:
            await _plain(send, 404, b"not found\n")

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                self._decoder.shutdown(wait=False)
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
        if self._active >= self.max_concurrent:
            await fail(503, "too many requests in flight; retry later", "overloaded", 1)
            return
        self._active += 1
        try:
            await self._admitted(sig, headers, ctype, as_json, receive, send, fail)
        finally:
            self._active -= 1

    async def _admitted(self, sig, headers: dict, ctype: str, as_json: bool, receive: Any, send: Any, fail) -> None:
        name = sig.name
        clen = headers.get(b"content-length")
        if clen is not None and clen.isdigit() and int(clen) > self.max_body:
            await fail(413, f"body exceeds {self.max_body} bytes", "too_large")
            return
        if self.wal.pending_bytes() >= self.buffer_max:  # full already: spare the client the upload
            await fail(503, "durable buffer is full; retry later", "buffer_full", 5)
            return
        body = await _read_body(receive, self.max_body)
        if body is None:
            await fail(413, f"body exceeds {self.max_body} bytes", "too_large")
            return
        loop = asyncio.get_running_loop()
        try:
            prep = await loop.run_in_executor(
                self._decoder, prepare, sig, ctype, headers.get(b"content-encoding", b"").decode("latin-1"),
                body, self.max_decompressed)
        except BadRequest as e:
            await fail(e.status, e.message, "unsupported" if e.status == 415 else
                       "too_large" if e.status == 413 else "malformed")
            return
        except Exception as e:  # anything the decoder did not foresee is the body's fault, not a 500
            log.warning("unexpected error decoding a %s request: %r", name, e)
            await fail(400, f"cannot decode the body: {type(e).__name__}", "malformed")
            return
        del body
        checked, as_json = prep.checked, prep.as_json
        received = checked.accepted + checked.rejected
        out = encode_response(sig, checked.rejected, checked.message(), as_json)
        if checked.accepted and await self._already_acknowledged(prep):
            # a retry of a request acknowledged before (its answer was lost): acknowledged again, not stored
            self.m.inc("tracehouse_collector_duplicate_requests_total", 1, signal=name)
            self.m.inc("tracehouse_collector_duplicate_items_total", checked.accepted, signal=name)
            self.m.inc("tracehouse_collector_requests_total", 1, signal=name, code="200")
            await _send(send, 200, out, (JSON if as_json else PROTOBUF).encode())
            return
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
            if self.wal.pending_bytes() + len(prep.payload) > self.buffer_max:
                self.m.inc("tracehouse_collector_rejected_items_total", checked.accepted, signal=name,
                           reason="buffer_full")
                await fail(503, "durable buffer is full; retry later", "buffer_full", 5)
                return
            try:
                await self._durable(sig.code, checked.accepted, prep)
            except (WalClosed, OSError) as e:
                self.m.inc("tracehouse_collector_rejected_items_total", checked.accepted, signal=name,
                           reason="buffer_error")
                await fail(503, f"cannot buffer the data: {e}", "buffer_error", 5)
                return
            self.m.inc("tracehouse_collector_accepted_items_total", checked.accepted, signal=name)
        self.m.inc("tracehouse_collector_requests_total", 1, signal=name, code="200")
        await _send(send, 200, out, (JSON if as_json else PROTOBUF).encode())

    async def _already_acknowledged(self, prep: Prepared) -> bool:
        """Whether this content was made durable before (or is being made durable by a concurrent
        request with the same content, which is then waited for)."""
        if self.recent is None:
            return False
        if self.recent.seen(prep.digest):
            return True
        pending = self._inflight.get(prep.digest)
        if pending is None:
            return False
        try:
            await asyncio.shield(pending)
        except Exception:  # the first attempt failed: this one tries again
            return False
        return True

    async def _durable(self, kind: int, items: int, prep: Prepared) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        digest = prep.digest if self.recent is not None else None
        if digest is not None:
            self._inflight[digest] = fut

        def settle(f: asyncio.Future, pos: Any, err: BaseException | None) -> None:
            if f.done():
                return
            if err is not None:
                f.set_exception(err)
            else:
                f.set_result(pos)

        def done(pos: Any, err: BaseException | None) -> None:
            if err is None and digest is not None:
                self.recent.add(digest)  # known before the answer leaves, even if the loop is gone
            try:
                loop.call_soon_threadsafe(settle, fut, pos, err)
            except RuntimeError:  # the loop is gone: nobody waits any more; the data is durable
                pass

        try:
            self.wal.append(kind, items, prep.payload, done, digest=digest)
            await fut
        finally:
            if digest is not None and self._inflight.get(digest) is fut:
                del self._inflight[digest]


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
