"""Attribute values in storage: parallel arrays of keys, string values and type codes.

Strings are stored as they are; other OTLP AnyValue kinds are stored as text with a type code so
they read back with their meaning (a bool stays a bool, an array stays an array).
"""

from __future__ import annotations

import base64
import json
from typing import Any

STR, BOOL, INT, DOUBLE, ARRAY, KVLIST, BYTES, EMPTY = range(8)


def encode_value(v: Any) -> tuple[str, int]:
    """A Python value → (text, type code)."""
    if v is None:
        return "", EMPTY
    if isinstance(v, str):
        return v, STR
    if isinstance(v, bool):
        return ("true" if v else "false"), BOOL
    if isinstance(v, int):
        return str(v), INT
    if isinstance(v, float):
        return repr(v), DOUBLE
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(bytes(v)).decode(), BYTES
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"), default=str), KVLIST
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v), separators=(",", ":"), default=str), ARRAY
    return str(v), STR


def decode_value(text: str, code: int) -> Any:
    try:
        if code == STR:
            return text
        if code == BOOL:
            return text == "true"
        if code == INT:
            return int(text)
        if code == DOUBLE:
            return float(text)
        if code in (ARRAY, KVLIST):
            return json.loads(text)
        if code == BYTES:
            return text  # base64 text; bytes are not JSON
        if code == EMPTY:
            return None
    except (ValueError, TypeError):
        return text
    return text


def encode_map(d: dict[str, Any]) -> tuple[list[str], list[str], list[int]]:
    keys, values, types = [], [], []
    for k, v in d.items():
        t, c = encode_value(v)
        keys.append(k)
        values.append(t)
        types.append(c)
    return keys, values, types


def decode_map(keys: list[str], values: list[str], types: list[int] | None = None) -> dict[str, Any]:
    if types is None or not any(types):  # all strings (STR is 0): the common case, no per-value call
        return dict(zip(keys, values))
    return {k: v if c == STR else decode_value(v, c) for k, v, c in zip(keys, values, types)}
