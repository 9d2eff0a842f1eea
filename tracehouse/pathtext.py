"""``{name:text}``: a path parameter of any characters, for names others choose (a service name is
whatever an ingest client sent; snapshot ids carry one; rule ids come from rules files).

Starlette's ``path`` (``.*``) stops at a newline: ``/services/new%0Aline`` answered 404, and as its
pattern ends with ``$``, which matches before a final newline, ``/services/x%0A`` opened service
``x``. Its ``str`` (``[^/]+``) stops at "/", which ``%2F`` already is when routes match. Followed by a
fixed suffix (``/api/services/{service:text}/operations``) the name is everything up to the *last*
such suffix. Importing this module registers the convertor; a module declaring such routes imports it.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor

__all__ = ["TextConvertor"]


class TextConvertor(Convertor[str]):
    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("text", TextConvertor())
