"""Names others choose in URL paths (a service name is whatever an ingest client sent; snapshot ids
carry one; rule ids come from rules files): the ``{name:text}`` route parameter and a service's page.

``{name:text}`` takes any characters. Starlette's ``path`` (``.*``) stops at a newline:
``/services/new%0Aline`` answered 404, and as its pattern ends with ``$``, which matches before a final
newline, ``/services/x%0A`` opened service ``x``. Its ``str`` (``[^/]+``) stops at "/", which ``%2F``
already is when routes match. Followed by a fixed suffix (``/api/services/{service:text}/operations``)
the name is everything up to the *last* such suffix. Importing this module registers the convertor;
a module declaring such routes imports it.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from starlette.convertors import Convertor, register_url_convertor

__all__ = ["DOT_SEGMENTS", "TextConvertor", "service_path"]

#: names a browser resolves as path segments (WHATWG URL; "%2e" is a dot too, so quoting cannot help):
#: ``/services/..`` opens ``/``
DOT_SEGMENTS = frozenset({".", ".."})


class TextConvertor(Convertor[str]):
    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("text", TextConvertor())


def service_path(service: str) -> str:
    """The path (and query) of the dashboard's page of ``service``: ``/services/<name>``, or for a dot
    segment ``/service?name=<name>``, a form of the same page that takes any name."""
    if service in DOT_SEGMENTS:
        return "/service?" + urlencode({"name": service})
    return "/services/" + quote(service, safe="")
