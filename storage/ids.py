"""Trace and span ids: raw bytes in storage, lower-case hex at the edges."""

from __future__ import annotations

import re

from .errors import InvalidParameter

_HEX = re.compile(r"^[0-9a-fA-F]+$")


def parse_trace_id(text: str) -> str:
    """Validate a hex trace id (32 digits; a 16-digit id is zero-padded as W3C says)."""
    t = (text or "").strip()
    if not _HEX.match(t) or len(t) not in (16, 32):
        raise InvalidParameter(f"bad trace id {text!r}: 32 hexadecimal digits")
    t = t.lower().rjust(32, "0")
    if t == "0" * 32:
        raise InvalidParameter("trace id is all zeros")
    return t


def parse_span_id(text: str) -> str:
    """Validate a hex span id (16 digits)."""
    t = (text or "").strip()
    if not _HEX.match(t) or len(t) != 16:
        raise InvalidParameter(f"bad span id {text!r}: 16 hexadecimal digits")
    t = t.lower()
    if t == "0" * 16:
        raise InvalidParameter("span id is all zeros")
    return t


def hex_id(h: str | None) -> str | None:
    """Hex from SQL's ``lower(hex(id))``; all-zero ids mean "none"."""
    if not h or not h.strip("0"):
        return None
    return h
