"""User text on its way into and out of ClickHouse, exactly as stored, on both backends.

Into the engine. chDB binds ``{name:Type}`` parameters server-side, and ClickHouse reads a
parameter's value in its *escaped* text form (as in TSV): ``a\\b`` would arrive as ``a`` +
backspace, a TAB or newline ends the value (error 457), a lone backslash is a bad escape (error 25).
:func:`escape_param` writes the value in that form so the engine reads back exactly the user's
characters. clickhouse-driver quotes values itself (no escaping needed there).

Both backends: a Python string can hold lone surrogates (JSON ``"\\ud800"``, or bytes decoded with
``surrogateescape``), which UTF-8 cannot encode. :func:`clean_text` turns each into U+FFFD (what a
stored invalid byte reads back as), so a value never makes an encoder raise.

Out of the engine. A String column may hold bytes that are not UTF-8 (ClickHouse strings are bytes;
the native protobuf decoder stores what it is sent). :func:`decode_bytes` gives them back as text
with U+FFFD for each bad byte, instead of failing the whole response.
"""

from __future__ import annotations

from typing import Any

__all__ = ["escape_param", "clean_text", "decode_bytes", "clean_params"]

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0",
                          "\b": "\\b", "\f": "\\f", "\v": "\\v"})


def clean_text(s: str) -> str:
    """``s`` as text UTF-8 can encode: every lone surrogate → U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)


def escape_param(value: Any) -> Any:
    """A parameter value as chDB's server-side binding reads it (strings escaped; numbers as they are)."""
    if isinstance(value, str):
        return clean_text(value).translate(_ESCAPES)
    return value


def clean_params(params: dict[str, Any] | None) -> dict[str, Any] | None:
    """Parameters whose strings UTF-8 can encode (for clickhouse-driver, which quotes them itself)."""
    if not params:
        return params
    return {k: clean_text(v) if isinstance(v, str) else v for k, v in params.items()}


def decode_bytes(value: Any) -> Any:
    """A String value the driver returned as bytes (not UTF-8) → text, bad bytes as U+FFFD; lists and
    tuples recursed."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, list):
        return [decode_bytes(v) for v in value]
    if isinstance(value, tuple):
        return tuple(decode_bytes(v) for v in value)
    return value
