"""JSON request bodies of the dashboard's and the alerts' APIs, read strictly, in one place (here
because every component that takes such a body depends on storage, as ``InvalidParameter`` does).

The standard library's parser, which Starlette's ``request.json()`` and FastAPI's ``Body`` use,
takes a ``\\ud800`` escape as a lone surrogate that no JSON answer can carry (a rule holding one was
stored, and every listing of the rules answered 500 from then on), and a body nested a few
thousand deep raises ``RecursionError`` (answered 500). orjson refuses both, with a reason: nesting
past 1024 levels, invalid UTF-8 and lone surrogates.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import InvalidParameter

__all__ = ["BodyError", "NotJsonType", "parse"]


class BodyError(InvalidParameter):
    """The body is not JSON this API takes; the text says why (answer 400)."""


class NotJsonType(BodyError):
    """The request says its body is of another type than JSON (answer 415)."""


def parse(body: bytes | str, content_type: str | None = None) -> Any:
    """The JSON value of ``body``. ``content_type``, when the request has one, must be JSON's
    (``application/json`` or ``application/*+json``), as FastAPI asks of a ``Body``: a cross-site
    form cannot send that type without a preflight."""
    if content_type:
        mime = content_type.split(";", 1)[0].strip().lower()
        if mime != "application/json" and not (mime.startswith("application/") and mime.endswith("+json")):
            raise NotJsonType(f"the body must be sent as application/json, not {mime or 'no type'}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BodyError(f"the body is not JSON this API takes: {e}") from None
