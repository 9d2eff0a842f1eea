"""Trace requests that exercise every corner of the conversion: fed to both decoders by the
differential test. Built with the generated proto classes, plus what the official SDK exporter
sends for spans made by the SDK."""

from __future__ import annotations

import math
import os
import struct
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.collector.payloads import kv, traces

NS = 1_000_000_000
_NOW = (time.time_ns() // (3600 * NS) - 1) * 3600 * NS  # inside every retention, the same for both decoders


def _req(service: str | None = "corpus", resource: list | None = None) -> tuple[ExportTraceServiceRequest, object]:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    if service is not None:
        rs.resource.attributes.append(kv("service.name", service))
    rs.resource.attributes.extend(resource or [])
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "corpus.scope", "9.9"
    return req, ss


def _span(ss, i: int, attrs: list | None = None, **fields):
    s = ss.spans.add()
    s.trace_id = struct.pack(">QQ", 0xC0FFEE, i + 1)
    s.span_id = struct.pack(">Q", (i + 1) * 7919)
    s.name = fields.pop("name", f"op {i}")
    s.kind = fields.pop("kind", 2)
    s.start_time_unix_nano = fields.pop("start", _NOW + i * 1000)
    s.end_time_unix_nano = fields.pop("end", _NOW + i * 1000 + 5_000_000)
    for k, v in fields.items():
        setattr(s, k, v)
    s.attributes.extend(attrs or [])
    return s


def _raw(key: str, **value) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


DOUBLES = [0.5, 1.0, -0.0, 0.0, 1e16, 1e15, 9.999e15, 1e-5, 1e-4, 1e-6, 1.5e300, 5e-324, 2 / 3, 123456789012345.6,
           1.7976931348623157e308, -1e-7, math.inf, -math.inf, math.nan, 12345678901234567890.0]
TRICKY_KEYS = ["db.password", "apiKey", "x-api-key", "X-Api-Key", "session_id", "client_secret", "auth.token",
               "gen_ai.usage.input_tokens", "author", "to\u212aen", "\u0130D.password", "PassWord", "passWORDx",
               "set-cookie", "http.request.header.authorization", "AWS_SECRET_ACCESS_KEY", "privateKey", "my.pwd",
               "ſecret", "x.api.key.id"]
TRICKY_VALUES = ["https://u:pw@shop.example/x?token=abc&q=1", "postgres://app:s3cr3t@db:5432/x", "a=b&c=d",
                 "GET /p?api_key=1;sig=2#frag", "user@example.com wrote a = b", "x?to\u212aen=1", "x?\u017fecret=2",
                 "ftp://a\u00a0b:c@d", "https://h/?code=1\u2028x", "quote\"back\\slash", "ctl\x01\x1f\x7f\n\t",
                 "é😀", "", "=", "@", "x" * 300]


def corner_requests() -> list[tuple[str, ExportTraceServiceRequest]]:
    out = []

    req, ss = _req(resource=[kv("service.instance.id", "i-1"), kv("deployment.environment", "test")])
    attrs = [kv("s", "text"), kv("b", True), kv("b0", False), kv("i", -7), kv("imax", 2**63 - 1),
             kv("imin", -2**63), kv("raw", b"\x00\xff\xfe"), kv("empty", ""), KeyValue(key="unset"),
             _raw("strindex", string_value_strindex=3)]
    attrs += [kv(f"d{n}", d) for n, d in enumerate(DOUBLES)]
    _span(ss, 0, attrs)
    _span(ss, 1, [kv(k, "secret-value") for k in TRICKY_KEYS])
    _span(ss, 2, [kv(f"v{n}", v) for n, v in enumerate(TRICKY_VALUES)])
    out.append(("scalars, secrets and urls", req))

    req, ss = _req()
    s = _span(ss, 3, [kv("k", 1)])
    s.trace_state = "vendor=1,other=2"
    s.parent_span_id = b""  # empty: the zero id
    s.status.code, s.status.message = 2, "boom " + "m" * 200
    for n in range(6):
        e = s.events.add()
        e.time_unix_nano, e.name = _NOW + n, f"event-{n}" + ("e" * 150 if n == 1 else "")
        e.attributes.extend([kv("n", n), kv("ratio", DOUBLES[n]), kv("msg", TRICKY_VALUES[n]), kv("token", "t"),
                             kv("raw", b"\x01"), KeyValue(key="none"), kv("dup", 1), kv("dup", 2),
                             kv("long", "L" * 150), kv("k" * 40, "long key")])
    for n in range(4):
        lk = s.links.add()
        lk.trace_id, lk.span_id = struct.pack(">QQ", 7, n), struct.pack(">Q", n + 1)
        if n % 2:
            lk.trace_state = f"ts={n}"
        lk.attributes.extend([kv("why", "follows"), kv("trace_state", "attr"), kv("d", DOUBLES[n + 4]),
                              kv("password", "p"), kv("ctl", "a\x00b\"c")])
    e = s.events.add()  # every tricky text as a value and in a key of event JSON: both write the same escapes
    e.time_unix_nano, e.name = _NOW + 9, "escapes"
    e.attributes.extend([kv(f"t{n}", v) for n, v in enumerate(TRICKY_VALUES)]
                        + [kv("k\u2028\x1f/\\u000b\\\\u001f", "\\u2028 \\\u2029 \x0b")])
    out.append(("events, links, status", req))

    req, ss = _req()
    _span(ss, 4, [kv(f"attr{n}", f"value {n}") for n in range(300)], name="N" * 150)
    _span(ss, 5, [kv("k" * 300, "v"), kv("v", "x" * 20_000)])
    _span(ss, 6, [kv("kind", "bad")], kind=77, start=2**64 - 1, end=5)  # absurd kind and times
    _span(ss, 7, [], kind=5, end=0)  # ends before it starts
    s = _span(ss, 8, [])
    s.status.code = 9
    out.append(("huge counts and absurd values", req))

    # resource attributes nesting arrays and key-value lists of scalars stay native
    req, ss = _req(resource=[kv("process.command_args", ["python", "app.py", "--password=x", "q\"uote"]),
                             kv("host.ip", ["10.0.0.1", "fe80::1"]), kv("texts", TRICKY_VALUES[8:11]), kv("numbers", [1, 2.5, True, b"\x00", ""]),
                             kv("labels", {"team": "a", "token": "t", "n": 1, "dup": 1}),
                             kv("empty_list", []), kv("empty_map", {})])
    _span(ss, 9, [kv("x", 1)])
    _span(ss, 10, [kv("y", 2)])
    ss2 = req.resource_spans[0].scope_spans.add()  # a second scope, and an empty one
    req.resource_spans[0].scope_spans.add()
    _span(ss2, 11, [kv("z", 3)])
    rs2 = req.resource_spans.add()  # a resource without spans (nothing stored, nothing counted)
    rs2.resource.attributes.extend([kv(f"r{n}", "x" * 150) for n in range(300)])
    rs3 = req.resource_spans.add()  # a resource without service.name, with a repeated one
    rs3.resource.attributes.extend([kv("service.name", ""), kv("other", 1)])
    _span(rs3.scope_spans.add(), 12, [])
    rs4 = req.resource_spans.add()
    rs4.resource.attributes.extend([kv("service.name", "first"), kv("service.name", "second")])
    _span(rs4.scope_spans.add(), 13, [])
    out.append(("resource arrays and kvlists, scopes, services", req))

    # nesting the native schema does not unroll: these requests take the Python path
    req, ss = _req()
    _span(ss, 14, [kv("tags", ["a", "b"]), kv("map", {"a": [1, {"b": True}], "password": "p"})])
    out.append(("span attribute arrays and kvlists", req))
    req, ss = _req(resource=[kv("deep", [["nested", ["deeper"]]])])
    _span(ss, 15, [kv("x", 1)])
    out.append(("deeply nested resource attribute", req))
    req, ss = _req()
    s = _span(ss, 16, [])
    e = s.events.add()
    e.name = "with array"
    e.attributes.extend([kv("list", ["x" * 150, 1]), kv("ok", 1)])
    out.append(("event attribute array", req))

    # invalid UTF-8 can only travel in bytes fields (string fields fail the parse at the receiver)
    req, ss = _req()
    _span(ss, 17, [kv("bytes", b"\xff\xfe\xc3\x28\xa0\xa1"), kv("ok", "fine")])
    out.append(("invalid UTF-8 in bytes", req))

    req, _ = traces(40, service="plain", tag="t")
    for n, s in enumerate(req.resource_spans[0].scope_spans[0].spans):
        s.trace_id = struct.pack(">QQ", 0xABC, n // 10)
        s.span_id = struct.pack(">Q", 10_000 + n)
        s.start_time_unix_nano, s.end_time_unix_nano = _NOW + n, _NOW + n + 1000
    out.append(("plain spans", req))
    return out


def sdk_requests() -> list[tuple[str, ExportTraceServiceRequest]]:
    """What the official SDK's OTLP/HTTP exporter sends for spans made by the SDK (its process
    resource detector adds ``process.command_args`` as an array)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import ProcessResourceDetector, Resource, get_aggregated_resources
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    from tests.agent.otlp_sink import Sink

    sink = Sink()
    try:
        resource = get_aggregated_resources([ProcessResourceDetector()],
                                            Resource.create({"service.name": "sdk-shop", "token": "t"}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sink.url + "/v1/traces")))
        tracer = provider.get_tracer("sdk.corpus", "1.0")
        with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER, attributes={
                "http.route": "/cart", "http.response.status_code": 200, "ratio": 0.25, "flag": True,
                "tags": ["a", "b"], "db.password": "hunter2", "url.full": "https://u:pw@h/x?token=abc"}) as root:
            root.add_event("cache miss", {"key": "cart:1", "attempt": 2, "latency": 1.5})
            root.record_exception(ValueError("bad \"value\"\nline"))
            with tracer.start_as_current_span("SELECT carts", kind=SpanKind.CLIENT,
                                              links=[Link(root.get_span_context(), {"why": "follows"})]) as child:
                child.set_attribute("db.system", "postgresql")
                child.set_status(Status(StatusCode.ERROR, "timeout"))
            with tracer.start_as_current_span("plain", attributes={"n": os.getpid() % 7}):
                pass
        provider.shutdown()
    finally:
        sink.close()
    return [(f"sdk request {n}", msg) for n, (path, msg, _) in enumerate(sink.requests) if path == "/v1/traces"]
