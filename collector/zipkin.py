"""Zipkin v2 spans (JSON or proto3) → an OTLP ``ExportTraceServiceRequest``: pure functions.

The mapping is the OpenTelemetry specification's OTLP → Zipkin one read backwards
(``specification/trace/sdk_exporters/zipkin.md``), as the OpenTelemetry Collector's Zipkin
receiver does:

- ids: hex (JSON) or bytes (proto3); a 64-bit trace id is left-padded to 128 bits, as B3
  propagators do, so Zipkin and OpenTelemetry services share a trace; timestamps and durations in
  microseconds become nanoseconds;
- ``kind`` CLIENT/SERVER/PRODUCER/CONSUMER; none (or null) is INTERNAL;
- ``localEndpoint.serviceName`` → the resource's ``service.name`` (``unknown_service`` without it);
  its address and port → ``network.local.address``/``network.local.port``, and on server spans
  also ``server.address``/``server.port`` unless tagged (how the service map resolves callers'
  targets to this service);
- ``remoteEndpoint.serviceName`` → ``peer.service`` unless tagged; its address and port →
  ``network.peer.address``/``network.peer.port`` (the service map's edges);
- tags → string attributes, except those the OTLP → Zipkin mapping produced from other fields:
  ``otel.status_code`` and ``error`` (the span status; ``error`` is the description),
  ``otel.scope.*``/``otel.library.*`` (the instrumentation scope), ``otel.dropped_*_count``;
- annotations → events; ``{"name": {attributes}}`` values (the OpenTelemetry exporters' form) are
  split into the event name and its attributes;
- shared spans (a server span reusing its client's span id, Zipkin's older RPC model): the server
  side gets its own id, derived from the trace, the shared id and its service (a retry maps it the same
  way; a proxy and the service behind it, both joining one client span, get one id each), and
  the client span as its parent, as Jaeger's query does (``SpanIDDeduper``). The server's own
  children (same service, parent = the shared id) are stored as they came and put under it when
  the trace is read (``storage.shared_spans``): a child may arrive before its server span, in
  another request or at another collector, and its trace must not depend on that order.

A span without a timestamp (Zipkin allows it for incomplete spans; a timestamp of 0 is absent, in
JSON as in proto3, as Zipkin's own model reads it) starts at its first annotation,
or else at the time it is received, with no duration. Anything malformed raises ``BadRequest`` naming
the span and the field: the whole request is refused. All-zero ids pass here and are refused span by
span by the same checks as OTLP spans (counted, and named in the answer).
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tracehouse.storage.shared_spans import shared_server_id

from .convert import Limits
from .decode import BadRequest, load_json

__all__ = ["ZSpan", "Endpoint", "shared_server_id", "spans_from_json", "spans_from_proto", "to_otlp"]

KINDS = {"CLIENT": Span.SPAN_KIND_CLIENT, "SERVER": Span.SPAN_KIND_SERVER, "PRODUCER": Span.SPAN_KIND_PRODUCER,
         "CONSUMER": Span.SPAN_KIND_CONSUMER}
# zipkin.proto3.Span.Kind → OTLP
_PROTO_KINDS = {0: Span.SPAN_KIND_INTERNAL, 1: Span.SPAN_KIND_CLIENT, 2: Span.SPAN_KIND_SERVER,
                3: Span.SPAN_KIND_PRODUCER, 4: Span.SPAN_KIND_CONSUMER}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_MAX_US = (1 << 64) // 1000 - 1  # the largest microsecond count whose nanoseconds fit in UInt64
_ZERO16 = b"\x00" * 16
_ZERO8 = b"\x00" * 8
# tags that the OTLP → Zipkin mapping made from span fields, not attributes
_SCOPE_NAME = ("otel.scope.name", "otel.library.name")
_SCOPE_VERSION = ("otel.scope.version", "otel.library.version")
_DROPPED = {"otel.dropped_attributes_count": "dropped_attributes_count",
            "otel.dropped_events_count": "dropped_events_count",
            "otel.dropped_links_count": "dropped_links_count"}
#: tags kept as attributes per span: the writer keeps no more (``convert.Limits``); the rest are
#: counted as cut at conversion, not turned into messages the writer would drop. A span of 1.5M
#: tags (a 17 MB JSON body) took 3.1 s to convert and ~10 s to accept and store.
MAX_TAGS = Limits.max_attributes
_CONSUMED = frozenset(("otel.status_code", "otel.status_description", "error", *_SCOPE_NAME, *_SCOPE_VERSION,
                       *_DROPPED))


@dataclass
class Endpoint:
    service: str = ""
    address: str = ""  # IPv4 or IPv6 text
    port: int = 0


@dataclass
class ZSpan:
    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    kind: int
    name: str
    timestamp: int | None  # microseconds
    duration: int  # microseconds
    local: Endpoint | None
    remote: Endpoint | None
    annotations: list[tuple[int, str]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    shared: bool = False
    cut_tags: int = 0  # tags left out of ``tags``, past MAX_TAGS (``_kept``)


# --- JSON ------------------------------------------------------------------------------------------


def _bad(i: int, what: str) -> BadRequest:
    return BadRequest(400, f"span {i}: {what}")


def _hex_id(i: int, v: Any, name: str, size: int) -> bytes:
    if not isinstance(v, str) or not 0 < len(v) <= 2 * size:
        raise _bad(i, f"{name} must be a string of 1 to {2 * size} hex characters")
    try:
        raw = bytes.fromhex(v.rjust(2 * size, "0"))
    except ValueError:
        raise _bad(i, f"{name} {v[:40]!r} is not hex") from None
    return raw


def _micros(i: int, v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise _bad(i, f"{name} must be a number of microseconds")
    if not 0 <= v <= _MAX_US:  # compared before int(): 1e300 made a 301-digit number for the message
        raise _bad(i, f"{name} {str(v)[:40]} is out of range (0 to {_MAX_US} microseconds)")
    return int(v)


def _str(i: int, v: Any, name: str) -> str:
    if not isinstance(v, str):
        raise _bad(i, f"{name} must be a string")
    return v


def _endpoint_json(i: int, v: Any, name: str) -> Endpoint | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise _bad(i, f"{name} must be an object")
    ep = Endpoint()
    if v.get("serviceName") is not None:
        ep.service = _str(i, v["serviceName"], f"{name}.serviceName")
    for key in ("ipv6", "ipv4"):
        if v.get(key) is not None:
            text = _str(i, v[key], f"{name}.{key}")
            try:
                ep.address = str(ipaddress.ip_address(text))
            except ValueError:
                raise _bad(i, f"{name}.{key} {text[:60]!r} is not an IP address") from None
    port = v.get("port")
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise _bad(i, f"{name}.port must be an integer from 0 to 65535")
        ep.port = port
    return ep


def _tag_value(i: int, k: str, v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    raise _bad(i, f"tag {k[:60]!r} must have a string value")


def _span_json(i: int, d: Any) -> ZSpan:
    if not isinstance(d, dict):
        raise _bad(i, "must be an object")
    trace_id = _hex_id(i, d.get("traceId"), "traceId", 16)
    span_id = _hex_id(i, d.get("id"), "id", 8)
    parent = d.get("parentId")
    parent_id = b"" if parent is None else _hex_id(i, parent, "parentId", 8)
    kind = d.get("kind")
    if kind is None:
        k = Span.SPAN_KIND_INTERNAL
    elif isinstance(kind, str) and kind.upper() in KINDS:
        k = KINDS[kind.upper()]
    else:
        raise _bad(i, f"kind {str(kind)[:40]!r} is not CLIENT, SERVER, PRODUCER or CONSUMER")
    name = d.get("name")
    ts = d.get("timestamp")
    dur = d.get("duration")
    tags = d.get("tags")
    if tags is not None and not isinstance(tags, dict):
        raise _bad(i, "tags must be an object of strings")
    anns = d.get("annotations")
    if anns is not None and not isinstance(anns, list):
        raise _bad(i, "annotations must be a list")
    annotations = []
    for a in anns or ():
        if not isinstance(a, dict):
            raise _bad(i, "each annotation must be an object")
        annotations.append((_micros(i, a.get("timestamp"), "annotation timestamp"),
                            _str(i, a.get("value"), "annotation value")))
    for flag in ("shared", "debug"):
        if d.get(flag) is not None and not isinstance(d[flag], bool):
            raise _bad(i, f"{flag} must be true or false")
    return ZSpan(
        trace_id=trace_id, span_id=span_id, parent_id=parent_id, kind=k,
        name="" if name is None else _str(i, name, "name"),
        timestamp=None if ts is None else (_micros(i, ts, "timestamp") or None),  # 0: absent
        duration=0 if dur is None else _micros(i, dur, "duration"),
        local=_endpoint_json(i, d.get("localEndpoint"), "localEndpoint"),
        remote=_endpoint_json(i, d.get("remoteEndpoint"), "remoteEndpoint"),
        annotations=annotations,
        **_kept((_str(i, key, "tag key"), _tag_value(i, key, v)) for key, v in (tags or {}).items()),
        shared=bool(d.get("shared")),
    )


#: tags the mapping reads: always kept by ``_kept`` (service, status, scope, dropped counts, and
#: the attributes ``_endpoints`` does not overwrite)
_READ = _CONSUMED | {"service.name", "peer.service", "network.peer.address", "network.peer.port",
                     "network.local.address", "network.local.port", "server.address", "server.port"}


def _kept(tags: Any) -> dict[str, Any]:
    """``tags`` (pairs, each checked as it is read) as ZSpan's ``tags`` and ``cut_tags``: those the
    mapping reads (so it maps the span as it would with every tag), and the first MAX_TAGS others;
    the others only counted. What is stored and counted as cut is what it was with every tag: the
    writer keeps a span's first MAX_TAGS attributes."""
    kept: dict[str, str] = {}
    plain = cut = 0
    for k, v in tags:
        if k in _READ:
            kept[k] = v
        elif plain < MAX_TAGS:
            kept[k] = v
            plain += 1
        else:
            cut += 1
    return {"tags": kept, "cut_tags": cut}


def spans_from_json(body: bytes, max_containers: int | None = None) -> list[ZSpan]:
    """A Zipkin v2 JSON body (a list of spans), with at most ``max_containers`` objects and arrays
    (``decode.json_budget``). Raises BadRequest."""
    doc = load_json(body, max_containers)
    if not isinstance(doc, list):
        raise BadRequest(400, "a Zipkin v2 body must be a JSON list of spans")
    return [_span_json(i, d) for i, d in enumerate(doc)]


# --- proto3 ----------------------------------------------------------------------------------------


def _id_bytes(i: int, v: bytes, name: str, sizes: tuple[int, ...], size: int) -> bytes:
    if len(v) not in sizes:
        raise _bad(i, f"{name} must be {' or '.join(map(str, sizes))} bytes, not {len(v)}")
    return v.rjust(size, b"\x00")


def _endpoint_proto(i: int, msg: Any, name: str, present: bool) -> Endpoint | None:
    if not present:
        return None
    ep = Endpoint(service=msg.service_name, port=msg.port)
    if not 0 <= msg.port <= 65535:
        raise _bad(i, f"{name}.port must be from 0 to 65535")
    raw = msg.ipv6 or msg.ipv4
    if raw:
        if len(raw) not in (4, 16):
            raise _bad(i, f"{name} address must be 4 (IPv4) or 16 (IPv6) bytes")
        ep.address = str(ipaddress.ip_address(raw))
    return ep


def spans_from_proto(body: bytes) -> list[ZSpan]:
    """A Zipkin v2 proto3 body (``zipkin.proto3.ListOfSpans``). Raises BadRequest."""
    from py_zipkin.encoding.protobuf import zipkin_pb2  # the generated zipkin.proto, shipped by py_zipkin

    try:
        msg = zipkin_pb2.ListOfSpans.FromString(body)
    except (DecodeError, ValueError) as e:
        raise BadRequest(400, f"malformed protobuf: {e}") from None
    out = []
    for i, s in enumerate(msg.spans):
        if s.kind not in _PROTO_KINDS:
            raise _bad(i, f"unknown kind {s.kind}")
        if s.timestamp > _MAX_US or s.duration > _MAX_US:
            raise _bad(i, "timestamp or duration out of range")
        for a in s.annotations:
            if a.timestamp > _MAX_US:
                raise _bad(i, f"annotation timestamp {a.timestamp} is out of range")
        out.append(ZSpan(
            trace_id=_id_bytes(i, s.trace_id, "trace_id", (8, 16), 16),
            span_id=_id_bytes(i, s.id, "id", (8,), 8),
            parent_id=_id_bytes(i, s.parent_id, "parent_id", (8,), 8) if s.parent_id else b"",
            kind=_PROTO_KINDS[s.kind], name=s.name,
            timestamp=s.timestamp or None, duration=s.duration,
            local=_endpoint_proto(i, s.local_endpoint, "local_endpoint", s.HasField("local_endpoint")),
            remote=_endpoint_proto(i, s.remote_endpoint, "remote_endpoint", s.HasField("remote_endpoint")),
            annotations=[(a.timestamp, a.value) for a in s.annotations],
            **_kept(s.tags.items()), shared=s.shared,
        ))
    return out


# --- Zipkin → OTLP ---------------------------------------------------------------------------------


def _service(s: ZSpan) -> str:
    return (s.local.service if s.local else "") or "unknown_service"


def _event(value: str) -> tuple[str, dict[str, Any]]:
    """An annotation's value → (event name, attributes): ``{"name": {...}}`` (or the spec's
    ``"name": {...}``) is the OpenTelemetry exporters' encoding of an event with attributes."""
    text = value.strip()
    if text.endswith("}") and (text.startswith("{") or text.startswith('"')):
        try:
            doc = orjson.loads(text if text.startswith("{") else "{" + text + "}")
        except orjson.JSONDecodeError:
            return value, {}
        if isinstance(doc, dict) and len(doc) == 1:
            name, attrs = next(iter(doc.items()))
            if isinstance(attrs, dict):
                return name, attrs
    return value, {}


def _put(attrs: Any, key: str, value: Any) -> None:
    kv = KeyValue(key=key)
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            kv.value.int_value = value
        else:  # past int64 (a JSON number in an annotation's text): kept exactly, as text
            kv.value.string_value = str(value)
    elif isinstance(value, float):
        kv.value.double_value = value
    elif isinstance(value, str):
        kv.value.string_value = value
    else:
        kv.value.string_value = orjson.dumps(value).decode()
    attrs.append(kv)


def _status(span: Span, tags: dict[str, str]) -> None:
    code = tags.get("otel.status_code", "").upper()
    error = tags.get("error")
    if code == "ERROR" or (error is not None and error.lower() != "false"):
        span.status.code = Status.STATUS_CODE_ERROR
        desc = tags.get("otel.status_description") or error or ""
        span.status.message = "" if desc.lower() == "true" else desc
    elif code == "OK":
        span.status.code = Status.STATUS_CODE_OK


def _fill(span: Span, s: ZSpan, now_us: int) -> int:
    """Fill ``span`` from ``s``; returns how many of its tags were cut (past ``MAX_TAGS``, ``_kept``)."""
    span.trace_id = s.trace_id
    span.span_id = s.span_id
    if s.parent_id and s.parent_id != _ZERO8:
        span.parent_span_id = s.parent_id
    span.name = s.name
    span.kind = s.kind  # type: ignore[assignment]  # an int the enum's stub calls ValueType
    _times(span, s, now_us)
    tags = s.tags
    for k, v in tags.items():
        if k not in _CONSUMED and k != "service.name":
            _put(span.attributes, k, v)
    for tag, fld in _DROPPED.items():
        n = tags.get(tag, "")
        # ASCII digits only ("²".isdigit() is true, and int() refuses it), few enough for int()
        if n.isascii() and n.isdigit() and len(n) <= 20:
            setattr(span, fld, min(int(n), (1 << 32) - 1))
    _status(span, tags)
    _endpoints(span, s)
    for t, value in s.annotations:
        ev = span.events.add()
        ev.time_unix_nano = t * 1000
        ev.name, ev_attrs = _event(value)
        for k, v in ev_attrs.items():
            _put(ev.attributes, str(k), v)
    return s.cut_tags


def _times(span: Span, s: ZSpan, now_us: int) -> None:
    """Start and end: a span without a timestamp spans its annotations, or starts when received."""
    start = s.timestamp
    duration = s.duration
    if start is None:
        if s.annotations:
            first = min(t for t, _ in s.annotations)
            start, duration = first, max(t for t, _ in s.annotations) - first
        else:
            start, duration = now_us, 0
    span.start_time_unix_nano = start * 1000
    span.end_time_unix_nano = min(start + duration, _MAX_US) * 1000


def _endpoints(span: Span, s: ZSpan) -> None:
    """The remote and local endpoints as the semantic conventions' attributes, unless a tag set them."""
    tags, attrs = s.tags, span.attributes
    if s.remote:
        if s.remote.service and "peer.service" not in tags:
            _put(attrs, "peer.service", s.remote.service)
        if s.remote.address and "network.peer.address" not in tags:
            _put(attrs, "network.peer.address", s.remote.address)
        if s.remote.port and "network.peer.port" not in tags:
            _put(attrs, "network.peer.port", s.remote.port)
    if s.local:
        if s.local.address and "network.local.address" not in tags:
            _put(attrs, "network.local.address", s.local.address)
        if s.local.port and "network.local.port" not in tags:
            _put(attrs, "network.local.port", s.local.port)
        if s.kind == Span.SPAN_KIND_SERVER and s.local.address and "server.address" not in tags:
            _put(attrs, "server.address", s.local.address)
            if s.local.port and "server.port" not in tags:
                _put(attrs, "server.port", s.local.port)


def _unshare(spans: list[ZSpan]) -> None:
    """Give the server side of each shared span its own id and its client as parent (its children
    follow it when the trace is read: ``storage.shared_spans``)."""
    for s in spans:
        # an all-zero id is invalid, shared or not: left as it is, the span is refused (and named) by
        # the checks every span passes, where its own id would have made it a valid root span
        if s.shared and s.kind == Span.SPAN_KIND_SERVER and s.span_id != _ZERO8:
            s.parent_id, s.span_id = s.span_id, shared_server_id(s.trace_id, s.span_id, _service(s))


def to_otlp(spans: list[ZSpan], now_us: int | None = None, cut: dict[str, int] | None = None) -> ExportTraceServiceRequest:
    """One request: a ResourceSpans per local service, a ScopeSpans per instrumentation scope.
    ``cut``: tags cut past ``MAX_TAGS`` are added to its ``attributes``."""
    now = now_us if now_us is not None else time.time_ns() // 1000
    _unshare(spans)
    req = ExportTraceServiceRequest()
    scopes: dict[tuple[str, str, str], Any] = {}
    resources: dict[str, Any] = {}
    for s in spans:
        svc = _service(s)
        scope_name = next((s.tags[k] for k in _SCOPE_NAME if k in s.tags), "")
        scope_version = next((s.tags[k] for k in _SCOPE_VERSION if k in s.tags), "")
        ss = scopes.get((svc, scope_name, scope_version))
        if ss is None:
            rs = resources.get(svc)
            if rs is None:
                rs = resources[svc] = req.resource_spans.add()
                _put(rs.resource.attributes, "service.name", svc)
            ss = scopes[(svc, scope_name, scope_version)] = rs.scope_spans.add()
            ss.scope.name = scope_name
            ss.scope.version = scope_version
        n = _fill(ss.spans.add(), s, now)
        if n and cut is not None:
            cut["attributes"] = cut.get("attributes", 0) + n
    return req
