"""Links to a service's page (whose name is whatever an ingest client sent) and to the current page."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request

from tracehouse.pathtext import service_path


def service_href(service: str, qs: str = "") -> str:
    """The service page of ``service`` (``pathtext.service_path``) with the query string ``qs``."""
    path = service_path(service)
    if not qs:
        return path
    return path + ("&" if "?" in path else "?") + qs


def current_path(request: Request) -> str:
    """The page's own path as the client sent it (still percent-encoded), for forms and redirects that
    come back to it: the decoded ``request.url.path`` made ``/services/a%2Fb`` service ``a/b``."""
    raw = request.scope.get("raw_path")  # optional in ASGI; uvicorn and TestClient send it
    if raw:
        return quote(raw, safe="/%!$&'()*+,;=:@~")
    return quote(request.url.path, safe="/!$&'()*+,;=:@~")
