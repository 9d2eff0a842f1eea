"""Zipkin's v2 API, ``POST /api/v2/spans``, as a plain ASGI application over the shared ingest path.

JSON (``application/json``, also assumed without a content type, as Zipkin does) and proto3
(``application/x-protobuf``), gzip-encoded or not. The spans become an OTLP trace request
(``zipkin.to_otlp``) and go through the same checks, rate limits, durable buffer and writer as
OTLP spans. The answer is Zipkin's ``202 Accepted``, sent once the spans are on disk; refusals are
plain text with the same statuses as OTLP/HTTP (401, 400, 413, 415, 429 and 503 with Retry-After).
"""

from __future__ import annotations

from typing import Any

from .app import _plain, _read_body
from .decode import SIGNALS, BadRequest, decompress, json_budget, media_type
from .ingest import Decoded, Ingest
from .parse_gate import before_parse
from .wire_budget import over_budget
from .zipkin import spans_from_json, spans_from_proto, to_otlp

__all__ = ["ZipkinApp"]

_TRACES = SIGNALS["traces"]
_JSON = ("application/json", "")
_PROTO = ("application/x-protobuf", "application/protobuf")


class ZipkinApp:
    def __init__(self, core: Ingest):
        self.core = core

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/api/v2/spans":
            if method != "POST":
                await _plain(send, 405, b"use POST\n", [(b"allow", b"POST")])
                return
            await self._ingest(scope, receive, send)
        elif path == "/api/v1/spans":
            await _plain(send, 404, b"Zipkin v1 is not accepted: send Zipkin v2 spans to /api/v2/spans\n")
        elif path in ("/healthz", "/health") and method in ("GET", "HEAD"):
            await _plain(send, 200, b"ok\n")
        else:
            await _plain(send, 404, b"not found\n")

    async def _ingest(self, scope: dict, receive: Any, send: Any) -> None:
        core = self.core
        headers = dict(scope["headers"])
        ctype = headers.get(b"content-type", b"").decode("latin-1")
        encoding = headers.get(b"content-encoding", b"").decode("latin-1")

        async def read() -> bytes | None:
            clen = headers.get(b"content-length")
            if clen is not None and clen.isdigit() and int(clen) > core.max_body:
                return None
            return await _read_body(receive, core.max_body, core.body_timeout)

        def decode(body: bytes) -> Decoded:
            return self._decode(ctype, encoding, body)

        out = await core.handle(_TRACES, headers, read, decode, declared=core.declared_size(headers))
        if out.ok:
            text = (f"{out.rejected} spans rejected: {out.message}\n" if out.rejected else "").encode()
            await _plain(send, 202, text)
            return
        extra = [(b"retry-after", str(out.retry_after).encode())] if out.retry_after is not None else []
        await _plain(send, out.status, (out.message + "\n").encode(), extra)

    def _decode(self, ctype: str, encoding: str, body: bytes) -> Decoded:
        """The OTLP request, known by the Zipkin body it came from (see ``Decoded``)."""
        mt = media_type(ctype)
        if mt not in _JSON and mt not in _PROTO:
            raise BadRequest(415, f"unsupported content type {ctype!r}: send Zipkin v2 as application/json "
                                  "or application/x-protobuf")
        body = decompress(encoding, body, self.core.max_decompressed)
        if mt not in _JSON:
            reason = over_budget("zipkin", body)
            if reason:
                raise BadRequest(413, reason)
        before_parse(len(body))  # room for what it parses to (``parse_gate``), as an OTLP body takes
        if mt in _JSON:
            spans = spans_from_json(body, json_budget(self.core.max_decompressed))
        else:
            spans = spans_from_proto(body)
        cut: dict[str, int] = {}
        req = to_otlp(spans, cut=cut)
        return Decoded(req, None, body, cut.get("attributes", 0))
