"""Refuse state changes another site could make a browser send (pure ASGI middleware, always on).

A page on any site can make the browser POST a form or a ``text/plain`` body to 127.0.0.1 without
asking (a "simple" request); anything else needs a CORS preflight, which this server never grants.
So every state-changing request must:

* carry ``Content-Type: application/json`` when it is a POST or has a body (HTML forms only on
  :data:`FORM_PATHS`, which check a CSRF token of their own);
* come from this origin when it names one: an ``Origin`` header must match the ``Host`` header
  (or a host the operator allowed explicitly, for proxies that rewrite Host); ``Origin: null`` is
  refused.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FORM_PATHS", "CrossSiteGuard", "same_origin"]

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_PATHS = frozenset({"/login", "/logout"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _netloc(host: str, port: str | None) -> str:
    return f"{host}:{port}" if port else host


def same_origin(origin: str, host_header: str, allowed: frozenset[str] = frozenset()) -> bool:
    """``origin`` (``scheme://host[:port]``) names the host the request was sent to."""
    try:
        o = urlsplit(origin.strip())
        o_host, o_port = (o.hostname or "").lower(), o.port
    except ValueError:
        return False
    if o.scheme not in _DEFAULT_PORTS or not o_host:
        return False
    port = None if o_port is None or str(o_port) == _DEFAULT_PORTS[o.scheme] else str(o_port)
    shown = f"[{o_host}]" if ":" in o_host else o_host
    h = host_header.strip().lower()
    for default in (":80", ":443"):
        if h.endswith(default):
            h = h[: -len(default)]
    return h == _netloc(shown, port) or o_host in allowed


def _media(ctype: bytes) -> str:
    return ctype.decode("latin-1").split(";", 1)[0].strip().lower()


class CrossSiteGuard:
    def __init__(self, app: Any, allowed_hosts: list[str] | None = None):
        self.app = app
        self.allowed = frozenset(h.strip().lower() for h in allowed_hosts or () if h.strip() and "*" not in h)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE:
            return await self.app(scope, receive, send)
        headers: dict[bytes, bytes] = {}
        for k, v in scope.get("headers", ()):
            headers.setdefault(k, v)
        origin = headers.get(b"origin")
        if origin is not None and not same_origin(origin.decode("latin-1"),
                                                  headers.get(b"host", b"").decode("latin-1"), self.allowed):
            return await _refuse(send, 403, "cross-origin request refused")
        media = _media(headers.get(b"content-type", b""))
        has_body = headers.get(b"content-length", b"0").strip() not in (b"0", b"") or b"transfer-encoding" in headers
        if scope["method"] == "POST" or has_body:
            if media == "application/json" or (scope["path"] in FORM_PATHS and media in FORM_TYPES):
                return await self.app(scope, receive, send)
            return await _refuse(send, 415, "state-changing requests must send Content-Type: application/json")
        return await self.app(scope, receive, send)


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
