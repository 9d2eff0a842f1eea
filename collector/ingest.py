"""The ingest path every receiver shares, whatever carries the request (OTLP/HTTP, OTLP/gRPC, Zipkin).

A receiver hands ``handle`` the request's headers, a coroutine that reads its body (None when it
exceeds the receiver's size limit) and a decode function; the path is: token → requests-in-flight
cap (503 + Retry-After past ``max_concurrent``) → buffer full already? → body → decode and check in
a small thread pool (off the event loop that other servers of the process share) → a retry of a
request acknowledged within the dedup window? (acknowledged again, not stored: ``dedup.py``) →
rate limit → buffer cap on the decoded size (what the WAL would hold) → WAL append, waiting for the
group commit's fsync → the partial-success counts. Every result is an ``Outcome`` with HTTP
semantics (status, message, Retry-After) that the transport renders in its own way; the counters
are kept here, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

from google.protobuf.message import Message

from .auth import TokenCheck
from .decode import BadRequest, Signal
from .dedup import RecentRequests, digest_of
from .errors import CollectorError
from .metrics import Registry
from .parse_gate import ParseGate
from .ratelimit import RateLimiter
from .validate import Checked, check
from .wal import Wal, WalClosed

__all__ = ["ClientGone", "Ingest", "Outcome", "Decoded", "Decoder", "Prepared", "prepare", "INLINE_DECODE_BYTES"]

log = logging.getLogger("tracehouse.collector")

#: Parses a request (called in the decode pool): the message, and the protobuf bytes it was parsed
#: from, decompressed, when there are such bytes (None: JSON or another format; the message is
#: serialized for the WAL).
Decoder = Callable[[], "tuple[Message, bytes | None] | Decoded"]


class Decoded(NamedTuple):
    """What a decoder returns when the stored message does not identify the request: ``key``, the
    decompressed body as received, is digested instead of the payload (Zipkin: a span without
    timestamp gets the time it is received, so a client's retry of the same body converts to
    another payload, and was stored twice)."""

    msg: Message
    raw: bytes | None
    key: bytes
    #: attributes cut while the message was made (Zipkin tags past the limit), counted with the
    #: writer's cuts once the request is durable
    cut_attributes: int = 0

# How long a client waits before retrying when the buffer is full or cannot be written.
BUFFER_RETRY_AFTER = 5

#: Uncompressed protobuf bodies up to this size are decoded and checked on the event loop: at most
#: ~5.5 ms for the densest such body (5,200 bare spans), about the interpreter's switch interval, so
#: no longer than the loop already waits while a decode thread holds the GIL; typical bodies (300
#: spans with attributes, 120 KB) take ~0.6 ms, and handing them to a thread cost ~110 µs of CPU
#: each in thread wake-ups and callbacks (334 such requests: 0.232 against 0.195 CPU-s, +19%, mean
#: of 3 alternating runs). Larger, compressed and JSON bodies, whose cost the size does not bound,
#: go to the decode threads.
INLINE_DECODE_BYTES = 256 << 10


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


@dataclass
class Prepared:
    """A decoded and checked request: what the WAL would store, and its digest."""

    checked: Checked
    payload: bytes
    digest: bytes
    cut_attributes: int = 0  # see ``Decoded``


def prepare(sig: Signal, decode: Decoder, gate: ParseGate | None = None) -> Prepared:
    """Decode and check one request (CPU-bound: run off the event loop). The payload is the
    protobuf the client sent (decompressed) when the checks changed nothing, else the message
    serialized again (JSON, Zipkin, or invalid items removed): the same content sent again,
    compressed or not, has the same payload and digest. ``gate``: room for the parsed message
    (``parse_gate``), held until it is dropped here."""
    if gate is not None:
        with gate.scope():
            return prepare(sig, decode)
    out = decode()
    msg, raw = out[0], out[1]
    checked = check(sig.name, msg)
    if not checked.accepted:
        payload = b""
    elif raw is not None and not checked.modified:
        payload = raw
    else:
        payload = msg.SerializeToString()
    if isinstance(out, Decoded):  # a code of its own: a body's digest never equals a payload's
        return Prepared(checked, payload, digest_of(0x80 | sig.code, out.key), out.cut_attributes)
    return Prepared(checked, payload, digest_of(sig.code, payload))


def _reason(status: int) -> str:
    return {415: "unsupported", 413: "too_large"}.get(status, "malformed")


class ClientGone(CollectorError):
    """The client disconnected before its request's body ended: nothing of it is stored."""


class _Held:
    """The bytes one request has counted in flight, released when it ends."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class Ingest:
    def __init__(self, wal: Wal, metrics: Registry, tokens: TokenCheck, limiter: RateLimiter,
                 max_body_bytes: int, max_decompressed_bytes: int, buffer_max_bytes: int,
                 recent: RecentRequests | None = None, max_concurrent: int = 64, decode_threads: int = 2,
                 body_timeout: float = 60.0, max_inflight_bytes: int = 256 << 20,
                 parse_gate: ParseGate | None = None):
        self.wal = wal
        self.m = metrics
        self.tokens = tokens
        self.limiter = limiter
        self.max_body = max_body_bytes
        self.max_decompressed = max_decompressed_bytes
        self.buffer_max = buffer_max_bytes
        self.recent = recent
        self.max_concurrent = max_concurrent
        self.body_timeout = body_timeout  # seconds a receiver allows for reading a body after its head
        # request bytes held at once (bodies read or being read, until answered): bounded memory
        # when clients send faster than the decode threads go; the decompressed copies are bounded
        # by those threads (two, each at most max_decompressed) and the inline limit
        self.max_inflight_bytes = max_inflight_bytes
        self.inflight_bytes = 0
        self._active = 0
        self._decoder = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="tracehouse-decode")
        #: room for parsed requests, shared with the writer (``parse_gate``)
        self.parse_gate = parse_gate or ParseGate()
        self._inflight: dict[bytes, asyncio.Future] = {}

    def close(self) -> None:
        self._decoder.shutdown(wait=False)

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

    def declared_size(self, headers: dict[bytes, bytes]) -> int:
        """What an HTTP body will hold at most: its Content-Length, or the body cap when chunked."""
        clen = headers.get(b"content-length", b"")
        return min(int(clen), self.max_body) if clen.isdigit() else self.max_body

    def _hold(self, n: int) -> bool:
        """Count ``n`` more request bytes in flight, unless that passes the cap (a request alone
        is always let in, so that one larger than the cap is not refused for ever)."""
        if self.inflight_bytes and self.inflight_bytes + n > self.max_inflight_bytes:
            return False
        self.inflight_bytes += n
        return True

    async def handle(self, sig: Signal, headers: dict[bytes, bytes], read: Callable[[], Awaitable[bytes | None]],
                     decode: Callable[[bytes], tuple[Message, bytes | None] | Decoded], inline_max: int = 0,
                     declared: int | None = None) -> Outcome:
        """One request, from its headers to its answer. ``read`` gives the body (None: larger than
        the receiver accepts); ``decode(body)`` parses it, in the decode pool, or on the loop when
        the body has at most ``inline_max`` bytes (the receiver passes ``INLINE_DECODE_BYTES`` for
        uncompressed protobuf, 0 otherwise). ``declared``: the most the body will hold, counted
        against the bytes in flight before it is read (``declared_size``; gRPC: the message cap);
        None counts it once read. Once decoded, the request counts what it then holds until it
        is durable, its decoded payload, when that is more than its body (a gzip body): 503 +
        Retry-After when that passes the cap."""
        out = self.authorize(sig, headers)
        if out is not None:
            return out
        if self._active >= self.max_concurrent:
            return self.refuse(sig, 503, "too many requests in flight; retry later", "overloaded", 1)
        held = _Held()
        if declared is not None:
            if not self._hold(declared):
                return self._too_many_bytes(sig)
            held.n = declared
        self._active += 1
        try:
            if self.wal.pending_bytes() >= self.buffer_max:  # full already: spare the client the upload
                return self.refuse(sig, 503, "durable buffer is full; retry later", "buffer_full",
                                   BUFFER_RETRY_AFTER)
            body = await self._read(sig, read, declared is None, held)
            if isinstance(body, Outcome):
                return body
            prep = await self.decode(sig, lambda: decode(body), inline=len(body) <= inline_max)
            if isinstance(prep, Outcome):
                return prep
            if not self._hold_payload(len(prep.payload), held):
                return self._too_many_bytes(sig)
            return await self.store(sig, prep)
        finally:
            self.inflight_bytes -= held.n
            self._active -= 1

    async def _read(self, sig: Signal, read: Callable[[], Awaitable[bytes | None]], count_now: bool,
                    held: _Held) -> bytes | Outcome:
        """The body, counted in the bytes in flight (``count_now``: only now that it is read; else
        what was held from its head becomes what it holds, never more), or the refusal."""
        try:
            body = await read()
        except BadRequest as e:  # 408: the body did not arrive in time
            return self.refuse(sig, e.status, e.message, "timeout" if e.status == 408 else _reason(e.status))
        except ClientGone:  # nobody is left to answer; counted under nginx's code for it
            return self.refuse(sig, 499, "client disconnected before the end of its body", "client_disconnected")
        if body is None:
            return self.too_large(sig)
        if count_now:
            if not self._hold(len(body)):
                return self._too_many_bytes(sig)
        else:
            self.inflight_bytes -= held.n - len(body)
        held.n = len(body)
        return body

    def _hold_payload(self, payload: int, held: _Held) -> bool:
        """Counts a decoded request as what it holds from here until it is durable: its payload, up
        to ~1,000x its compressed body (a request alone is always let in). False: past the cap."""
        more = payload - held.n
        if more > 0:
            if self.inflight_bytes > held.n and self.inflight_bytes + more > self.max_inflight_bytes:
                return False
            self.inflight_bytes += more
            held.n += more
        return True

    def _too_many_bytes(self, sig: Signal) -> Outcome:
        return self.refuse(sig, 503, "too many request bytes in flight; retry later", "overloaded", 1)

    async def submit(self, sig: Signal, decode: Decoder, inline: bool = False) -> Outcome:
        """Decode, check and buffer one admitted request; answers once it is durable. ``inline``:
        decode on the loop (a small body, see ``INLINE_DECODE_BYTES``), not in the decode pool."""
        prep = await self.decode(sig, decode, inline)
        return prep if isinstance(prep, Outcome) else await self.store(sig, prep)

    async def decode(self, sig: Signal, decode: Decoder, inline: bool = False) -> Prepared | Outcome:
        """Decode and check one request: what the WAL would hold, or the refusal of a bad body."""
        name = sig.name
        try:
            if inline:
                prep = prepare(sig, decode)
            else:
                try:
                    pending = asyncio.get_running_loop().run_in_executor(self._decoder, prepare, sig, decode,
                                                                         self.parse_gate)
                except RuntimeError:  # the pool is shut down: the collector is stopping
                    return self.refuse(sig, 503, "the collector is stopping; retry later", "stopping",
                                       BUFFER_RETRY_AFTER)
                prep = await pending
        except BadRequest as e:
            return self.refuse(sig, e.status, e.message, _reason(e.status))
        except Exception as e:  # anything the decoder did not foresee is the body's fault, not a 500
            log.warning("unexpected error decoding a %s request: %r", name, e)
            return self.refuse(sig, 400, f"cannot decode the body: {type(e).__name__}", "malformed")
        return prep

    async def store(self, sig: Signal, prep: Prepared) -> Outcome:
        """Buffer one decoded request (unless it repeats one acknowledged before); answers once it
        is durable."""
        name = sig.name
        checked = prep.checked
        if checked.accepted and await self._already_acknowledged(prep):
            # a retry of a request acknowledged before (its answer was lost): acknowledged again, not stored
            self.m.inc("tracehouse_collector_duplicate_requests_total", 1, signal=name)
            self.m.inc("tracehouse_collector_duplicate_items_total", checked.accepted, signal=name)
            self.m.inc("tracehouse_collector_requests_total", 1, signal=name, code="200")
            return Outcome(200, checked.message(), rejected=checked.rejected)
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
            if self.wal.pending_bytes() + len(prep.payload) > self.buffer_max:
                self.m.inc("tracehouse_collector_rejected_items_total", checked.accepted, signal=name,
                           reason="buffer_full")
                return self.refuse(sig, 503, "durable buffer is full; retry later", "buffer_full",
                                   BUFFER_RETRY_AFTER)
            try:
                await self.durable(sig.code, checked.accepted, prep.payload, prep.digest)
            except (WalClosed, OSError) as e:
                self.m.inc("tracehouse_collector_rejected_items_total", checked.accepted, signal=name,
                           reason="buffer_error")
                return self.refuse(sig, 503, f"cannot buffer the data: {e}", "buffer_error", BUFFER_RETRY_AFTER)
            self.m.inc("tracehouse_collector_accepted_items_total", checked.accepted, signal=name)
            if prep.cut_attributes:
                self.m.inc("tracehouse_collector_truncated_total", prep.cut_attributes, what="attributes")
        self.m.inc("tracehouse_collector_requests_total", 1, signal=name, code="200")
        return Outcome(200, checked.message(), rejected=checked.rejected)

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

    async def durable(self, kind: int, items: int, payload: bytes, digest: bytes | None = None) -> None:
        """Append one record to the WAL and wait until it is on disk (the group commit's fsync).
        With a digest (and a dedup window), the content is known as acknowledged once durable."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        recent = self.recent
        if recent is None:
            digest = None
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
            if err is None and digest is not None and recent is not None:
                recent.add(digest)  # known before the answer leaves, even if the loop is gone
            try:
                loop.call_soon_threadsafe(settle, fut, pos, err)
            except RuntimeError:  # the loop is gone: nobody waits any more; the data is durable
                pass

        try:
            self.wal.append(kind, items, payload, done, digest=digest)
            await fut
        finally:
            if digest is not None and self._inflight.get(digest) is fut:
                del self._inflight[digest]
