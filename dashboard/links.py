"""Links to pages of names others chose (a service name is whatever an ingest client sent), and the
current page's own path."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import Request

#: names a browser resolves as path segments (WHATWG URL; "%2e" is a dot too, so quoting cannot help):
#: ``/services/..`` opens ``/``
DOT_SEGMENTS = frozenset({".", ".."})


def service_href(service: str, qs: str = "") -> str:
    """The service page of ``service`` with the query string ``qs``: ``/services/<name>``, or for a dot
    segment ``/service?name=<name>`` (which opens any name)."""
    if service in DOT_SEGMENTS:
        return "/service?" + urlencode({"name": service}) + (f"&{qs}" if qs else "")
    return f"/services/{quote(service, safe='')}" + (f"?{qs}" if qs else "")


def current_path(request: Request) -> str:
    """The page's own path as the client sent it (still percent-encoded), for forms and redirects that
    come back to it: the decoded ``request.url.path`` made ``/services/a%2Fb`` service ``a/b``."""
    raw = request.scope.get("raw_path")  # optional in ASGI; uvicorn and TestClient send it
    if raw:
        return quote(raw, safe="/%!$&'()*+,;=:@~")
    return quote(request.url.path, safe="/!$&'()*+,;=:@~")
