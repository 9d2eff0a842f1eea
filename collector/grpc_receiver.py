"""OTLP/gRPC: the Export methods of opentelemetry-proto's trace, metrics and logs services on a
``grpc.aio`` server, over the same ingest path as OTLP/HTTP.

The methods are registered without a deserializer, as stream-unary (see ``_Export.export``): the
handler checks the token, then reads the request's bytes (gRPC has
already undone ``grpc-encoding: gzip``) and buffers them as they are when the checks change
nothing, as OTLP/HTTP does. The token comes from the ``authorization`` metadata (or the configured
header). Refusals map to gRPC codes as the OTLP spec says; where HTTP answers 429/503 with
Retry-After, gRPC answers RESOURCE_EXHAUSTED/UNAVAILABLE with a ``google.rpc.RetryInfo`` in the
status details (``grpc-status-details-bin``), and the same RetryInfo alone in the
``google.rpc.retryinfo-bin`` trailer, which is where the OpenTelemetry Python exporter looks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from .decode import PROTOBUF, SIGNALS, BadRequest, Signal, decode_body, encode_response
from .ingest import INLINE_DECODE_BYTES, Ingest, Outcome

__all__ = ["GrpcReceiver", "SERVICES", "grpc_code"]

log = logging.getLogger("tracehouse.collector.grpc")

#: signal → the gRPC service that carries it, as opentelemetry-proto defines it
SERVICES = {
    "traces": trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"],
    "metrics": metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"],
    "logs": logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"],
}

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.INVALID_ARGUMENT,  # not retryable: the same message would be refused again
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def grpc_code(status: int) -> grpc.StatusCode:
    return _CODES.get(status, grpc.StatusCode.INTERNAL)


def trailers(out: Outcome) -> tuple[grpc.StatusCode, tuple[tuple[str, bytes], ...]]:
    """The gRPC code of a refusal and its trailing metadata: the status details, with RetryInfo
    when the client should come back later."""
    code = grpc_code(out.status)
    st = status_pb2.Status(code=code.value[0], message=out.message)
    meta: list[tuple[str, bytes]] = []
    if out.retry_after is not None:
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=out.retry_after))
        detail = any_pb2.Any()
        detail.Pack(info)
        st.details.append(detail)
        meta.append(("google.rpc.retryinfo-bin", info.SerializeToString()))
    meta.insert(0, ("grpc-status-details-bin", st.SerializeToString()))
    return code, tuple(meta)


def _headers(context: aio.ServicerContext) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):  # binary (-bin) entries carry no token
            out[key.lower().encode("latin-1")] = value.encode("latin-1", "replace")
    return out


class _Export:
    """One Export method: bytes in, the Export*ServiceResponse's bytes out, or an abort."""

    def __init__(self, core: Ingest, sig: Signal, calls: _Calls):
        self.core = core
        self.sig = sig
        self.calls = calls

    async def export(self, requests: AsyncIterator[bytes], context: aio.ServicerContext) -> bytes:
        """Registered as a stream-unary method (a unary client sends its one message the same
        way), so that the token is checked from the call's metadata before its message is read: an
        unauthenticated caller's message is never received (a unary handler runs only once the
        whole message, up to the 64 MB cap, has arrived), and a caller that sends none holds its
        slot only for the client timeout."""
        core, sig, calls = self.core, self.sig, self.calls
        # the token first: a caller without one is told so (UNAUTHENTICATED, final), not to retry later
        headers = _headers(context)
        out = core.authorize(sig, headers)
        if out is None and calls.active >= calls.cap:
            # refused here, not by gRPC's own maximum_concurrent_rpcs, whose RESOURCE_EXHAUSTED has no
            # RetryInfo: the OTLP spec (and the Go and Java exporters) retry RESOURCE_EXHAUSTED only
            # when the server says when, so those clients would drop the data
            out = core.refuse(sig, 429, f"more than {calls.cap} OTLP/gRPC calls in progress; retry later",
                              "overloaded", 1)
        if out is not None:
            code, meta = trailers(out)
            await context.abort(code, out.message, trailing_metadata=meta)
            raise AssertionError("unreachable: abort raises")
        calls.active += 1
        try:
            return await self._export(requests, context, headers)
        finally:
            calls.active -= 1

    async def _export(self, requests: AsyncIterator[bytes], context: aio.ServicerContext,
                      headers: dict[bytes, bytes]) -> bytes:
        core, sig = self.core, self.sig

        async def read() -> bytes:
            try:
                return await asyncio.wait_for(_first(requests), core.body_timeout)
            except asyncio.TimeoutError:
                raise BadRequest(408, f"request message not received within {core.body_timeout:g} s") from None

        def decode(body: bytes) -> tuple[Any, bytes]:
            return decode_body(sig, PROTOBUF, "", body, core.max_decompressed)[0], body

        # the message is counted against the bytes in flight at the most it may hold before it is
        # received (as a chunked HTTP body): gRPC takes it in whole, so counting it once read would
        # let 64 calls hold 64 messages of 20 MiB before any was refused
        out = await core.handle(sig, headers, read, decode, INLINE_DECODE_BYTES,
                                declared=core.max_decompressed)
        if out.ok:
            return encode_response(sig, out.rejected, out.message, False)
        code, meta = trailers(out)
        await context.abort(code, out.message, trailing_metadata=meta)
        raise AssertionError("unreachable: abort raises")


async def _first(requests: AsyncIterator[bytes]) -> bytes:
    """The call's one message, once the client has closed its side (a unary client closes it with
    the message). A second message is refused: answering OK would acknowledge a request never stored."""
    first: bytes | None = None
    async for msg in requests:
        if first is not None:
            raise BadRequest(400, "an Export call carries one message (the method is unary): "
                                  "send each request on its own call")
        first = msg
    if first is None:
        # unary clients always send one message; none arrives when gRPC refused it for its size
        # (RESOURCE_EXHAUSTED, already sent to the client), so it is counted as too large
        raise BadRequest(413, "the call carried no message (over the size cap, refused by gRPC)")
    return first


class _Calls:
    """The Export calls in progress on one server (all signals), against its cap."""

    def __init__(self, cap: int):
        self.cap = cap
        self.active = 0


def handlers(core: Ingest, calls: _Calls | None = None) -> list[grpc.GenericRpcHandler]:
    out = []
    calls = calls or _Calls(256)
    for name, service in SERVICES.items():
        methods = {m.name: grpc.stream_unary_rpc_method_handler(_Export(core, SIGNALS[name], calls).export)
                   for m in service.methods}
        out.append(grpc.method_handlers_generic_handler(service.full_name, methods))
    return out


class GrpcReceiver:
    """The OTLP/gRPC server, with the same ``serve()`` / ``stop()`` / ``started`` as the HTTP ones.

    ``max_message_bytes`` caps a message after decompression (gRPC checks it before the handler
    runs); ``max_concurrent`` bounds the calls in progress (more get RESOURCE_EXHAUSTED with a
    RetryInfo of 1 s, which the OpenTelemetry exporters of every language retry). ``stop()`` may be called from any thread.
    """

    def __init__(self, core: Ingest, host: str, port: int, max_message_bytes: int,
                 max_concurrent: int = 256, grace: float = 10.0, max_connections: int | None = None):
        self.core = core
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.max_message_bytes = max_message_bytes
        self.max_concurrent = max_concurrent
        self.max_connections = max_connections
        self.calls = _Calls(max_concurrent)
        self.grace = grace
        self.started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False

    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stopping:
            return
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", 1 << 20),
            # another process on the same port must be an error, not a silent share of the traffic
            ("grpc.so_reuseport", 0),
        ]
        if self.max_connections:  # past it gRPC closes a new connection at once (its connection quota)
            options.append(("grpc.max_allowed_incoming_connections", self.max_connections))
        # the cap is kept by the handlers (refusals with RetryInfo); gRPC's own limit, whose refusals
        # carry none, is only a backstop far above it (a refusal takes its slot for microseconds)
        server = aio.server(handlers=handlers(self.core, self.calls), options=options,
                            maximum_concurrent_rpcs=4 * self.max_concurrent)
        try:
            server.add_insecure_port(self.address)
        except RuntimeError as e:
            raise OSError(f"cannot listen for OTLP/gRPC on {self.address}: {e}") from None
        await server.start()
        self.started = True
        try:
            await self._stop.wait()
        finally:
            await server.stop(self.grace)

    def stop(self) -> None:
        self._stopping = True
        if self._loop is None or self._stop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._stop.set)
        except RuntimeError:  # the loop has already closed
            pass
