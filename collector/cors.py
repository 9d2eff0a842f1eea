"""CORS for the OTLP/HTTP and Zipkin receivers, so that code in a browser (the OpenTelemetry JS web
SDK's OTLP/HTTP exporters, zipkin-js) can send from the pages of the origins an operator lists in
``TRACEHOUSE_OTLP_CORS_ORIGINS``, as the OpenTelemetry Collector's ``cors.allowed_origins`` does.

Off unless origins are listed. An entry is an origin (``https://shop.example.com``), a pattern for
its subdomains (``https://*.example.com``) or ``*``. A listed origin gets answers that name it
(``Access-Control-Allow-Origin``, with credentials allowed: the web SDK falls back to
``navigator.sendBeacon``, which sends in credentials mode; the receivers use no cookies), a
preflight answered 204 for POST with the content and token headers; any other origin's preflight is
refused (403) and its answers carry no CORS header, so its pages cannot read them. Only the ingest
paths take part: ``/metrics`` and the agents' command channel stay closed to every page.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Cors", "INGEST_PATHS", "wrap"]

INGEST_PATHS = frozenset(("/v1/traces", "/v1/metrics", "/v1/logs", "/api/v2/spans"))

MAX_AGE = b"7200"
# what an OTLP or Zipkin POST from a browser carries besides CORS-safelisted headers
HEADERS = ("content-type", "content-encoding", "authorization")


def normalise(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def allowed(origin: str, patterns: list[str]) -> bool:
    """``origin`` (``scheme://host[:port]``, lowercased) matches an entry of ``patterns``."""
    if not origin or origin == "null":  # sandboxed frames and file: pages send "null"
        return False
    for p in patterns:
        if p == "*" or p == origin:
            return True
        scheme, sep, host = p.partition("://*.")
        if sep and origin.startswith(scheme + "://") and origin.endswith("." + host) \
                and "/" not in origin[len(scheme) + 3:]:
            return True
    return False


class Cors:
    """ASGI wrapper: answers preflights, and names an allowed origin on every answer to it."""

    def __init__(self, app: Any, origins: list[str], token_header: str = "authorization"):
        self.app = app
        self.origins = [normalise(o) for o in origins if o.strip()]
        names = dict.fromkeys(HEADERS + (token_header.strip().lower(),))
        self.allow_headers = ", ".join(n for n in names if n).encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in INGEST_PATHS:
            return await self.app(scope, receive, send)
        origin = b""
        preflight = False
        for k, v in scope.get("headers", ()):
            if k == b"origin":
                origin = v
            elif k == b"access-control-request-method":
                preflight = True
        if not origin:
            return await self.app(scope, receive, send)
        ok = allowed(normalise(origin.decode("latin-1")), self.origins)
        if preflight and scope["method"] == "OPTIONS":
            return await self._preflight(send, origin if ok else None)
        if not ok:
            return await self.app(scope, receive, send)
        named = [(b"access-control-allow-origin", origin), (b"access-control-allow-credentials", b"true"),
                 (b"access-control-expose-headers", b"retry-after"), (b"vary", b"origin")]

        async def send_named(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                msg = dict(msg, headers=list(msg.get("headers", [])) + named)
            await send(msg)

        await self.app(scope, receive, send_named)

    async def _preflight(self, send: Any, origin: bytes | None) -> None:
        if origin is None:
            body = b"origin not allowed: list it in TRACEHOUSE_OTLP_CORS_ORIGINS\n"
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode()), (b"vary", b"origin")]})
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 204, "headers": [
            (b"access-control-allow-origin", origin), (b"access-control-allow-credentials", b"true"),
            (b"access-control-allow-methods", b"POST"), (b"access-control-allow-headers", self.allow_headers),
            (b"access-control-max-age", MAX_AGE), (b"vary", b"origin")]})
        await send({"type": "http.response.body", "body": b""})


def wrap(app: Any, settings: Any) -> Any:
    """``app`` behind CORS when the settings list origins (unchanged otherwise)."""
    origins = [o for o in getattr(settings, "otlp_cors_origins", None) or [] if o.strip()]
    if not origins:
        return app
    return Cors(app, origins, getattr(settings, "ingest_token_header", "authorization") or "authorization")
