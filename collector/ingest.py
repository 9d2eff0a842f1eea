"""The ingest path every receiver shares, whatever carries the request (OTLP/HTTP, OTLP/gRPC, Zipkin).

A receiver authenticates with ``authorize``, reads the body against its own size limit
(``too_large`` when it does not fit) and hands a decode function to ``submit``: buffer cap →
decode → validate → rate limit → WAL append, waiting for the group commit's fsync → the
partial-success counts. Every result is an ``Outcome`` with HTTP semantics (status, message,
Retry-After) that the transport renders in its own way; the counters are kept here, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from .auth import TokenCheck
from .decode import BadRequest, Signal
from .metrics import Registry
from .ratelimit import RateLimiter
from .validate import check
from .wal import Wal, WalClosed

__all__ = ["Ingest", "Outcome", "Decoder"]

log = logging.getLogger("tracehouse.collector")

#: Parses a request: the message, and the bytes to buffer as they are when the message is not
#: changed by the checks (None: serialize the message).
Decoder = Callable[[], tuple[Message, "bytes | None"]]

# How long a client waits before retrying when the buffer is full or cannot be written.
BUFFER_RETRY_AFTER = 5


@dataclass(frozen=True)
class Outcome:
    """What became of one request. ``status`` has HTTP semantics: 200 (maybe with ``rejected``
    items and a ``message``: partial success), 400, 401, 413, 415, 429 or 503."""

    status: int
    message: str = ""
    retry_after: int | None = None
    rejected: int = 0

    @property
    def ok(self) -> bool:
        return self.status == 200


def _reason(status: int) -> str:
    return {415: "unsupported", 413: "too_large"}.get(status, "malformed")


class Ingest:
    def __init__(self, wal: Wal, metrics: Registry, tokens: TokenCheck, limiter: RateLimiter,
                 max_body_bytes: int, max_decompressed_bytes: int, buffer_max_bytes: int):
        self.wal = wal
        self.m = metrics
        self.tokens = tokens
        self.limiter = limiter
        self.max_body = max_body_bytes
        self.max_decompressed = max_decompressed_bytes
        self.buffer_max = buffer_max_bytes

    def refuse(self, sig: Signal, status: int, message: str, reason: str,
               retry_after: int | None = None) -> Outcome:
        self.m.inc("tracehouse_collector_requests_total", 1, signal=sig.name, code=str(status))
        self.m.inc("tracehouse_collector_rejected_requests_total", 1, signal=sig.name, reason=reason)
        return Outcome(status, message, retry_after)

    def authorize(self, sig: Signal, headers: dict[bytes, bytes]) -> Outcome | None:
        """None when the request carries an accepted token (or none is required)."""
        if self.tokens.allows(headers):
            return None
        return self.refuse(sig, 401, "missing or invalid ingestion token", "unauthorized")

    def too_large(self, sig: Signal, limit: int | None = None) -> Outcome:
        return self.refuse(sig, 413, f"body exceeds {limit or self.max_body} bytes", "too_large")

    async def submit(self, sig: Signal, size: int, decode: Decoder) -> Outcome:
        """Decode, check and buffer one request of ``size`` bytes; answers once it is durable."""
        name = sig.name
        if self.wal.pending_bytes() + size > self.buffer_max:
            return self.refuse(sig, 503, "durable buffer is full; retry later", "buffer_full", BUFFER_RETRY_AFTER)
        try:
            msg, raw = decode()
            checked = check(name, msg)
        except BadRequest as e:
            return self.refuse(sig, e.status, e.message, _reason(e.status))
        except Exception as e:  # anything the decoder did not foresee is the body's fault, not a 500
            log.warning("unexpected error decoding a %s request: %r", name, e)
            return self.refuse(sig, 400, f"cannot decode the body: {type(e).__name__}", "malformed")
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
                return self.refuse(sig, 429, "rate limit exceeded for this service", "rate_limited",
                                   self.limiter.retry_after(wait))
        if checked.accepted:
            payload = msg.SerializeToString() if raw is None or checked.modified else raw
            try:
                await self.durable(sig.code, checked.accepted, payload)
            except (WalClosed, OSError) as e:
                self.m.inc("tracehouse_collector_rejected_items_total", checked.accepted, signal=name,
                           reason="buffer_error")
                return self.refuse(sig, 503, f"cannot buffer the data: {e}", "buffer_error", BUFFER_RETRY_AFTER)
            self.m.inc("tracehouse_collector_accepted_items_total", checked.accepted, signal=name)
        self.m.inc("tracehouse_collector_requests_total", 1, signal=name, code="200")
        return Outcome(200, checked.message(), rejected=checked.rejected)

    async def durable(self, kind: int, items: int, payload: bytes) -> None:
        """Append one record to the WAL and wait until it is on disk (the group commit's fsync)."""
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
