"""Protobuf wire format for OTLP, written directly: no message object per field.

The stock OTLP exporters build one protobuf object per span, attribute and value before they
serialize; on the agent's export thread that was ~50 µs of GIL-holding work per span. Here a
message is the concatenation of ``tag + length + payload`` byte strings, and the KeyValue
encoding of a repeated ``(key, value)`` pair (method, route, status, host …) comes from a
bounded cache. The field numbers are those of ``opentelemetry/proto/**.proto`` (v1); the test
suite decodes what this writes with the official ``opentelemetry-proto`` classes and compares
it with the stock encoder's output.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

__all__ = ["CACHE_TEXT_MAX", "TEXT_MAX", "anyvalue", "attributes", "fixed64", "key_value", "ld", "resource", "scope", "tag",
           "text", "valid", "varint"]

_SMALL = [bytes((i,)) for i in range(128)]
_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_pack_I = struct.Struct("<I").pack
_pack_q_signed = struct.Struct("<q").pack

_CACHE_MAX = 8192
_caches: dict[bytes, dict] = {}  # per field tag: (key, value, type) -> KeyValue field bytes
#: strings longer than this are not cached: 8,192 entries of distinct 1 MB values held ~16 GB
CACHE_TEXT_MAX = 256
#: characters of a string value written, as many as the collector stores (``collector.convert.Limits``
#: ``max_value_len``): a longer one is cut here, so spans waiting for a slow collector hold no more
#: than would be stored (1 MB attribute values held the queue at ~2 GB), counted in
#: ``values.truncated`` of ``tracehouse.agent.stats()``
TEXT_MAX = 16384


def text(v: str) -> bytes:
    """``v`` as UTF-8 (unencodable characters replaced), cut at ``TEXT_MAX`` characters."""
    if len(v) > TEXT_MAX:
        from . import counters

        counters.add("values.truncated")
        v = v[:TEXT_MAX]
    return v.encode("utf-8", "replace")


def valid(v: str) -> str:
    """``v`` itself when it encodes as UTF-8, else with each character that does not (a lone
    surrogate: a file name, an argument or an environment value Python decoded with
    ``surrogateescape``) replaced by ``?``, as :func:`text` writes it. The SDK's encoders (logs,
    a resource's attributes) raise on such a string."""
    if v.isascii():
        return v
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return v.encode("utf-8", "replace").decode("utf-8")
    return v


def varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64  # int64 as two's complement, ten bytes
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def ld(tag_bytes: bytes, payload: bytes) -> bytes:
    """A length-delimited field (message, string, bytes, packed repeated)."""
    n = len(payload)
    return tag_bytes + (_SMALL[n] if n < 0x80 else varint(n)) + payload


def fixed64(tag_bytes: bytes, n: int) -> bytes:
    return tag_bytes + _pack_q(n)


def sfixed64(tag_bytes: bytes, n: int) -> bytes:
    return tag_bytes + _pack_q_signed(n)


def double(tag_bytes: bytes, x: float) -> bytes:
    return tag_bytes + _pack_d(x)


def fixed32(tag_bytes: bytes, n: int) -> bytes:
    return tag_bytes + _pack_I(n)


def string(tag_bytes: bytes, s: str) -> bytes:
    return ld(tag_bytes, s.encode("utf-8", "replace"))


def packed_fixed64(tag_bytes: bytes, values) -> bytes:
    return ld(tag_bytes, struct.pack(f"<{len(values)}Q", *values)) if values else b""


def packed_double(tag_bytes: bytes, values) -> bytes:
    return ld(tag_bytes, struct.pack(f"<{len(values)}d", *values)) if values else b""


# AnyValue: string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7 (a oneof: always written).
_AV_STR, _AV_BOOL, _AV_INT, _AV_DOUBLE = b"\x0a", b"\x10", b"\x18", b"\x21"
_AV_ARRAY, _AV_KVLIST, _AV_BYTES = b"\x2a", b"\x32", b"\x3a"
_T1 = b"\x0a"  # field 1, length-delimited (KeyValue.key, ArrayValue.values, KeyValueList.values)
_T2 = b"\x12"  # field 2, length-delimited (KeyValue.value)


def anyvalue(v) -> bytes:
    t = type(v)
    if t is str:
        return ld(_AV_STR, text(v))
    if t is bool:
        return _AV_BOOL + (b"\x01" if v else b"\x00")
    if t is int:
        return _AV_INT + varint(v)
    if t is float:
        return _AV_DOUBLE + _pack_d(v)
    return _anyvalue_other(v)


def _anyvalue_other(v) -> bytes:
    """``anyvalue`` of what is not exactly a str, bool, int or float: None, subclasses of those,
    bytes, mappings and sequences (recursively), anything else as its text."""
    if v is None:
        return b""
    if isinstance(v, bool):
        return _AV_BOOL + (b"\x01" if v else b"\x00")
    if isinstance(v, str):
        return ld(_AV_STR, text(str(v)))
    if isinstance(v, int):
        return _AV_INT + varint(int(v))
    if isinstance(v, float):
        return _AV_DOUBLE + _pack_d(float(v))
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ld(_AV_BYTES, bytes(v))
    if isinstance(v, Mapping):
        return ld(_AV_KVLIST, b"".join(ld(_T1, key_value(str(k), x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)) or hasattr(v, "__iter__"):
        return ld(_AV_ARRAY, b"".join(ld(_T1, anyvalue(x)) for x in v))
    return ld(_AV_STR, text(str(v)))


def key_value(key: str, value) -> bytes:
    """A KeyValue message (no outer tag)."""
    return ld(_T1, key.encode("utf-8", "replace")) + ld(_T2, anyvalue(value))


def attributes(tag_bytes: bytes, attrs) -> bytes:
    """``attrs`` as the repeated KeyValue field ``tag_bytes``; str and int pairs come from a cache."""
    if not attrs:
        return b""
    cache = _caches.get(tag_bytes)
    if cache is None:
        cache = _caches[tag_bytes] = {}
    out = []
    append = out.append
    for k, v in attrs.items():
        t = type(v)
        if (t is str and len(v) <= CACHE_TEXT_MAX) or t is int:
            ck = (k, v, t)
            b = cache.get(ck)
            if b is None:
                b = ld(tag_bytes, key_value(k, v))
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                cache[ck] = b
            append(b)
        else:
            append(ld(tag_bytes, key_value(k, v)))
    return b"".join(out)


def resource(res) -> bytes:
    """A Resource message (attributes only, as the stock encoder writes it)."""
    return attributes(_T1, getattr(res, "attributes", None) or {})


def scope(sc) -> bytes:
    """An InstrumentationScope message: name 1, version 2, attributes 3."""
    if sc is None:
        return b""
    out = b""
    if sc.name:
        out += string(_T1, sc.name)
    if sc.version:
        out += string(_T2, sc.version)
    attrs = getattr(sc, "attributes", None)
    if attrs:
        out += attributes(b"\x1a", attrs)
    return out
