"""OTLP/HTTP request bodies → opentelemetry.proto messages, and responses back to the wire.

Pure functions, no framework: content types, gzip with a cap on the decompressed size, protobuf
through the generated classes, OTLP/JSON through ``json_format`` after turning the hex ids that
OTLP/JSON uses into the base64 that proto3 JSON expects.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from .errors import CollectorError
from .parse_gate import before_parse
from .wire_budget import over_budget

__all__ = ["SIGNALS", "Signal", "BadRequest", "decode_body", "encode_response", "to_json", "PROTOBUF", "JSON"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class BadRequest(CollectorError):
    """The body cannot be accepted; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Signal:
    """One OTLP signal: its request/response classes and the name of its rejected counter."""

    def __init__(self, name: str, code: int, request: type[Message], response: type[Message], rejected_field: str):
        self.name = name
        self.code = code  # the record kind in the WAL
        self.request = request
        self.response = response
        self.rejected_field = rejected_field


SIGNALS: dict[str, Signal] = {
    "traces": Signal("traces", 1, trace_service_pb2.ExportTraceServiceRequest,
                     trace_service_pb2.ExportTraceServiceResponse, "rejected_spans"),
    "metrics": Signal("metrics", 2, metrics_service_pb2.ExportMetricsServiceRequest,
                      metrics_service_pb2.ExportMetricsServiceResponse, "rejected_data_points"),
    "logs": Signal("logs", 3, logs_service_pb2.ExportLogsServiceRequest,
                   logs_service_pb2.ExportLogsServiceResponse, "rejected_log_records"),
}
BY_CODE = {s.code: s for s in SIGNALS.values()}

# JSON keys (both spellings) whose values are ids: hex in OTLP/JSON, base64 in proto3 JSON.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress gzip (or zlib) data, refusing to produce more than ``limit`` bytes.

    A gzip body may hold several members one after another (RFC 1952 §2.2; what ``pigz``, a
    compressor flushing per batch or concatenated files give): their contents are concatenated, as
    gzip readers do (Go's, so the OpenTelemetry Collector's, and Python's ``gzip``). Zero bytes after
    the last member are padding and ignored; anything else after it is refused (400), never
    silently dropped. Each member is fed from 256 bytes on, doubling, so that what zlib copies
    past a member's end stays small: many tiny members cost linear time."""
    view = memoryview(body)
    parts: list[bytes] = []
    size = pos = 0
    while True:
        d = zlib.decompressobj(wbits=47)  # 32 + 15: auto-detect gzip or zlib header
        step = 256
        while not d.eof:
            if pos >= len(view):
                raise BadRequest(400, "truncated gzip body")
            chunk = view[pos:pos + step]
            pos += len(chunk)
            step = min(step * 2, 1 << 20)
            try:
                part = d.decompress(chunk, limit - size + 1)
            except zlib.error as e:
                raise BadRequest(400, f"bad gzip body: {e}") from None
            size += len(part)
            if size > limit or d.unconsumed_tail:
                raise BadRequest(413, f"decompressed body exceeds {limit} bytes")
            parts.append(part)
        pos -= len(d.unused_data)
        if pos >= len(view) or view[pos] == 0:  # no member starts with a zero byte: padding
            if any(view[pos:]):
                raise BadRequest(400, f"bad gzip body: data after the last member at byte {pos}")
            return b"".join(parts)


def inflate(body: bytes, limit: int) -> bytes:
    """``Content-Encoding: deflate`` (or ``zlib``, as the OpenTelemetry Collector names it): zlib
    data (RFC 9110 §8.4.1.2), or a raw deflate stream as some clients send it; at most ``limit``
    bytes out."""
    d = zlib.decompressobj(wbits=15 if _zlib_header(body) else -15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise BadRequest(400, f"bad deflate body: {e}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise BadRequest(413, f"decompressed body exceeds {limit} bytes")
    if not d.eof:
        raise BadRequest(400, "truncated deflate body")
    if any(d.unused_data):
        raise BadRequest(400, "bad deflate body: data after its end")
    return out


def _zlib_header(body: bytes) -> bool:
    """Whether ``body`` starts with a zlib header (RFC 1950: method 8, a check multiple of 31)."""
    return len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0


#: the largest window a zstd body may ask for: the decoder holds one window per request being
#: decoded (the OpenTelemetry Collector's encoder uses at most 8 MiB; the format allows 2 GiB)
ZSTD_MAX_WINDOW = 1 << 24


def unzstd(body: bytes, limit: int) -> bytes:
    """``Content-Encoding: zstd``: the frames of the body, one after another, at most ``limit``
    bytes out. The body is fed 1 KiB at a time (one call cannot then inflate past ~32 MiB, the
    format's largest ratio), and a frame that does not end is refused, never taken as complete."""
    import zstandard

    dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
    view = memoryview(body)
    parts: list[bytes] = []
    size = pos = 0
    try:
        while pos < len(view):
            d = dctx.decompressobj()
            while not d.eof:
                if pos >= len(view):
                    raise BadRequest(400, "truncated zstd body")
                chunk = view[pos:pos + 1024]
                pos += len(chunk)
                part = d.decompress(chunk)
                size += len(part)
                if size > limit:
                    raise BadRequest(413, f"decompressed body exceeds {limit} bytes")
                parts.append(part)
            pos -= len(d.unused_data)
    except zstandard.ZstdError as e:
        raise BadRequest(400, f"bad zstd body: {e}") from None
    return b"".join(parts)


#: Content-Encoding values a request body may have
ENCODINGS = {"gzip": gunzip, "x-gzip": gunzip, "deflate": inflate, "zlib": inflate, "zstd": unzstd}


def decompress(content_encoding: str, body: bytes, limit: int) -> bytes:
    """A request body as sent, decoded from its ``Content-Encoding`` (415 for one not supported),
    of at most ``limit`` bytes (413)."""
    enc = content_encoding.strip().lower()
    if enc in ("", "identity"):
        if len(body) > limit:
            raise BadRequest(413, f"body exceeds {limit} bytes")
        return body
    fn = ENCODINGS.get(enc)
    if fn is None:
        raise BadRequest(415, f"unsupported content encoding {content_encoding!r}: use gzip, deflate, zstd "
                              "or none")
    return fn(body, limit)


def decode_body(signal: Signal, content_type: str, content_encoding: str, body: bytes,
                max_decompressed: int) -> tuple[Message, bool]:
    """Parse one request body; returns (message, is_json). Raises BadRequest."""
    msg, is_json, _ = decode_request(signal, content_type, content_encoding, body, max_decompressed)
    return msg, is_json


def decode_request(signal: Signal, content_type: str, content_encoding: str, body: bytes,
                   max_decompressed: int) -> tuple[Message, bool, bytes | None]:
    """Parse one request body; returns (message, is_json, the protobuf bytes it was parsed from,
    decompressed; None for JSON). Raises BadRequest."""
    mt = media_type(content_type)
    if mt not in (PROTOBUF, JSON):
        raise BadRequest(415, f"unsupported content type {content_type!r}: use {PROTOBUF} or {JSON}")
    body = decompress(content_encoding, body, max_decompressed)
    if mt == PROTOBUF:
        reason = over_budget(signal.name, body)
        if reason:
            raise BadRequest(413, reason)
        before_parse(len(body))
        try:
            return signal.request.FromString(body), False, body
        except (DecodeError, ValueError) as e:
            raise BadRequest(400, f"malformed protobuf: {e}") from None
    before_parse(len(body))
    return _from_json(signal, body, json_budget(max_decompressed)), True, None


_BOM = b"\xef\xbb\xbf"
# a JSON string, or an unterminated one to the end of the body (so that no quote in it starts
# another scan: linear time whatever the body)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\Z)', re.DOTALL)

#: Bytes of the largest accepted body per JSON object or array a body may hold. Each costs far more
#: parsed than sent (~70 bytes in ``orjson``, ~13 µs and ~150 bytes more through ``ParseDict``):
#: 20 MiB of ``{},`` (a 20 KB gzip body) held a decode thread for 93 s and took 1.1 GB. Real bodies
#: hold one per ~40 bytes (OTLP spans with attributes), so a body at the cap has ~half the budget.
JSON_BYTES_PER_CONTAINER = 20


def json_budget(max_bytes: int) -> int:
    """The JSON objects and arrays a body may hold when bodies may have ``max_bytes``."""
    return max(1024, max_bytes // JSON_BYTES_PER_CONTAINER)


def _containers(body: bytes, cap: int) -> int:
    """The body's JSON objects and arrays, counted exactly once the quick upper bound (brackets
    inside strings too) passes ``cap``."""
    n = body.count(b"{") + body.count(b"[")
    if n > cap:
        bare = _STRING.sub(b"", body)
        n = bare.count(b"{") + bare.count(b"[")
    return n


def load_json(body: bytes, max_containers: int | None = None) -> Any:
    """A JSON body as Python values; a leading UTF-8 byte order mark is ignored (RFC 8259 lets a
    parser do so, and some clients' encoders write one). With ``max_containers`` (``json_budget``),
    a body holding more objects and arrays is refused (413) before it is parsed. Raises BadRequest."""
    if body[:3] == _BOM:
        body = body[3:]
    if max_containers is not None:
        n = _containers(body, max_containers)
        if n > max_containers:
            raise BadRequest(413, f"the JSON body holds {n} objects and arrays, more than the {max_containers} "
                                  "a body may hold; send fewer items per request")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(400, f"malformed JSON: {e}") from None


def _from_json(signal: Signal, body: bytes, max_containers: int) -> Message:
    doc = load_json(body, max_containers)
    if not isinstance(doc, dict):
        raise BadRequest(400, "malformed JSON: the body must be an object")
    try:
        msg = signal.request()
        _ids_hex_to_b64(doc, msg.DESCRIPTOR)
        json_format.ParseDict(doc, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as e:
        raise BadRequest(400, f"malformed OTLP/JSON: {e}") from None
    return msg


def _ids_hex_to_b64(doc: dict, desc: Any) -> None:
    """Turn the hex ids of an OTLP/JSON document into base64, in place, where the message
    ``desc`` describes (the schema, not the key alone, decides: a key named like an id inside a
    field this version of OTLP does not know is left alone, and ``ParseDict`` ignores it, as the
    OTLP/JSON rules ask of unknown fields)."""
    stack = [(doc, desc)]
    while stack:
        node, d = stack.pop()
        table = _id_walk(d)
        for k, v in node.items():
            entry = table.get(k)
            if entry is None:
                continue
            is_id, sub = entry
            if is_id:
                if isinstance(v, str):
                    node[k] = _hex_to_b64(v)
            elif isinstance(v, dict):
                stack.append((v, sub))
            elif isinstance(v, list):
                stack.extend((x, sub) for x in v if isinstance(x, dict))


_ID_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})
_WALKS: dict[str, dict[str, tuple[bool, Any]]] = {}


def _id_walk(desc: Any) -> dict[str, tuple[bool, Any]]:
    """For one message type: JSON key (both spellings) → (an id field?, the message type of a
    message field), for the fields that are ids or may hold some."""
    table = _WALKS.get(desc.full_name)
    if table is None:
        table = {}
        for f in desc.fields:
            is_id = f.name in _ID_FIELDS and f.type == f.TYPE_BYTES
            sub = f.message_type if f.type == f.TYPE_MESSAGE else None
            if is_id or sub is not None:
                table[f.name] = table[f.json_name] = (is_id, sub)
        _WALKS[desc.full_name] = table
    return table


def _hex_to_b64(v: str) -> str:
    if not v:
        return v
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        # Some senders use base64 despite the spec; accept it if it decodes to an id length.
        try:
            raw = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"id {v[:40]!r} is neither hex nor base64") from None
    return base64.b64encode(raw).decode()


def _ids_b64_to_hex(node: Any) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            for k, v in n.items():
                if k in _ID_KEYS and isinstance(v, str):
                    n[k] = base64.b64decode(v).hex()
                elif isinstance(v, (dict, list)):
                    stack.append(v)
        elif isinstance(n, list):
            stack.extend(x for x in n if isinstance(x, (dict, list)))


def to_json(msg: Message) -> bytes:
    """A message as OTLP/JSON (hex ids, lowerCamel names, enums as ints)."""
    doc = json_format.MessageToDict(msg, use_integers_for_enums=True)
    _ids_b64_to_hex(doc)
    return orjson.dumps(doc)


def encode_response(signal: Signal, rejected: int, message: str, as_json: bool) -> bytes:
    resp = signal.response()
    if rejected or message:
        ps = resp.partial_success
        setattr(ps, signal.rejected_field, rejected)
        ps.error_message = message
    if as_json:
        return to_json(resp)
    return resp.SerializeToString()
