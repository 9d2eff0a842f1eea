"""Links to pages of names others chose (a service name is whatever an ingest client sent)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

#: names a browser resolves as path segments (WHATWG URL; "%2e" is a dot too, so quoting cannot help):
#: ``/services/..`` opens ``/``
DOT_SEGMENTS = frozenset({".", ".."})


def service_href(service: str, qs: str = "") -> str:
    """The service page of ``service`` with the query string ``qs``: ``/services/<name>``, or for a dot
    segment ``/service?name=<name>`` (which opens any name)."""
    if service in DOT_SEGMENTS:
        return "/service?" + urlencode({"name": service}) + (f"&{qs}" if qs else "")
    return f"/services/{quote(service, safe='')}" + (f"?{qs}" if qs else "")
