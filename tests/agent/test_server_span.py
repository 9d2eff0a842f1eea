"""The middlewares' lean SERVER span (``tracehouse.agent.server_span``) against the SDK's own span:
the same requests through the same middleware, once with the lean span and once with
``Tracer.start_span``, export the same spans; children parent on it; the provider's sampler,
processors and limits are honoured."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from tests.agent.helpers import Recorder
from tracehouse.agent import http_server, otlp_spans, sdk_private
from tracehouse.agent.asgi import TracehouseASGIMiddleware
from tracehouse.agent.sampling import ErrorKeepingProcessor, make_sampler
from tracehouse.agent.server_span import ServerSpans
from tracehouse.agent.wsgi import TracehouseWSGIMiddleware

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class Route:
    path = "/items/{id}"


def asgi_call(app, traceparent: str | None = None, path="/items/7"):
    headers = [(b"host", b"shop.example:8443"), (b"user-agent", b"curl/8")]
    if traceparent:
        headers.append((b"traceparent", traceparent.encode()))
    scope = {"type": "http", "method": "GET", "path": path, "scheme": "http", "root_path": "",
             "server": ("10.0.0.1", 8000), "client": ("10.0.0.9", 50000), "headers": headers}

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(msg):
        pass

    asyncio.run(app(scope, receive, send))


def busy_app(tp, status=200, exc=None):
    """An app that writes to the server span the way user code and instrumentations do."""
    child_tracer = tp.get_tracer("db-client")

    async def app(scope, receive, send):
        scope["route"] = Route()
        span = trace.get_current_span()
        span.set_attribute("user.ids", [1, 2, 3])  # a list: stored as a tuple
        span.set_attribute("odd", object())  # not a valid type: the SDK's own rule applies (its str())
        span.set_attributes({"tenant": "acme", "ratio": 0.5})
        span.add_event("cache miss", {"key": "k1"})
        span.add_link(SpanContext(7, 8, True, TraceFlags(1)), {"why": "batch"})
        with child_tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
            pass
        if exc is not None:
            raise exc
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})
    return app


def shape(spans):
    """What an exporter sees, ids replaced by their role (the ids themselves are random)."""
    ids = {s.context.span_id: s.name for s in spans}
    out = []
    for s in spans:
        out.append({
            "name": s.name, "kind": s.kind, "parent": ids.get(s.parent.span_id, "remote") if s.parent else None,
            "sampled": s.context.trace_flags.sampled, "attributes": dict(s.attributes),
            "dropped_attributes": s.dropped_attributes, "status": (s.status.status_code, s.status.description),
            "events": [(e.name, {k: v for k, v in e.attributes.items() if k != "exception.stacktrace"})
                       for e in s.events],
            "links": [(link.context.span_id, dict(link.attributes)) for link in s.links],
            "scope": s.instrumentation_scope.name, "resource": dict(s.resource.attributes),
            "timed": 0 < s.start_time <= s.end_time})
    return out


def run_requests(tp=None):
    rec = Recorder(tp)
    try:
        app = busy_app(rec.tp)
        asgi_call(TracehouseASGIMiddleware(app))
        asgi_call(TracehouseASGIMiddleware(busy_app(rec.tp, status=503)))
        with pytest.raises(KeyError):
            asgi_call(TracehouseASGIMiddleware(busy_app(rec.tp, exc=KeyError("gone"))))
        asgi_call(TracehouseASGIMiddleware(app), f"00-{TRACE_ID}-00f067aa0ba902b7-01")
        lean = http_server.current().spans.lean
        return lean, rec.spans.get_finished_spans()
    finally:
        rec.close()


@pytest.fixture
def sdk_spans_only():
    sdk_private.force(False)
    sdk_private.refresh()
    yield
    sdk_private.force(None)
    sdk_private.refresh()


def test_lean_and_sdk_server_spans_export_the_same(sdk_spans_only):
    sdk_lean, sdk = run_requests()
    sdk_private.force(None)
    sdk_private.refresh()
    lean, ours = run_requests()
    assert lean and not sdk_lean
    assert shape(ours) == shape(sdk)
    server = [s for s in ours if s.kind is SpanKind.SERVER]
    assert all(type(s).__name__ == "LeanServerSpan" and isinstance(s, Span) for s in server)
    first = shape(ours)[1]
    assert first["attributes"]["user.ids"] == (1, 2, 3) and "odd" in first["attributes"]
    assert first["events"] == [("cache miss", {"key": "k1"})] and first["links"] == [(8, {"why": "batch"})]
    assert [s["status"][0] for s in shape(ours) if s["kind"] is SpanKind.SERVER] == \
        [StatusCode.UNSET, StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert format(server[-1].context.trace_id, "032x") == TRACE_ID


def test_children_parent_on_the_lean_span_and_both_encoders_agree():
    lean, spans = run_requests()
    assert lean
    by_id = {s.context.span_id: s for s in spans}
    children = [s for s in spans if s.name == "SELECT"]
    assert len(children) == 4
    for child in children:
        parent = by_id[child.parent.span_id]
        assert parent.kind is SpanKind.SERVER and parent.context.trace_id == child.context.trace_id
    assert all(isinstance(s, ReadableSpan) for s in spans)
    ours = ExportTraceServiceRequest()
    ours.ParseFromString(otlp_spans.encode(spans))
    for link in (x for rs in ours.resource_spans for ss in rs.scope_spans for s in ss.spans for x in s.links):
        link.ClearField("trace_state")  # the stock encoder drops it (see test_otlp_encoding)
    assert ours == encode_spans(spans)


def test_the_providers_sampler_decides():
    # A remote parent that did not sample: no span is recorded, its children follow.
    rec = Recorder(TracerProvider(sampler=make_sampler(1.0)))
    try:
        assert http_server.current().spans.lean
        asgi_call(TracehouseASGIMiddleware(busy_app(rec.tp)), f"00-{TRACE_ID}-00f067aa0ba902b7-00")
        assert rec.spans.get_finished_spans() == ()
        (point,) = rec.points("http.server.request.duration")
        assert point.count == 1 and not point.exemplars
    finally:
        rec.close()
    rec = Recorder(TracerProvider(sampler=ALWAYS_OFF))
    try:
        asgi_call(TracehouseASGIMiddleware(busy_app(rec.tp)))
        assert rec.spans.get_finished_spans() == ()
    finally:
        rec.close()


def test_unsampled_traces_with_an_error_are_kept_whole():
    mem = InMemorySpanExporter()
    tp = TracerProvider(sampler=make_sampler(0.0))
    tp.add_span_processor(ErrorKeepingProcessor(SimpleSpanProcessor(mem)))
    rec = Recorder(tp)
    rec.spans.clear()
    try:
        asgi_call(TracehouseASGIMiddleware(busy_app(tp)))
        assert mem.get_finished_spans() == ()
        asgi_call(TracehouseASGIMiddleware(busy_app(tp, status=500)))
        kept = mem.get_finished_spans()
        assert sorted(s.name for s in kept) == ["GET /items/{id}", "SELECT"]
        assert all(s.context.trace_flags.sampled for s in kept)
        assert len({s.context.trace_id for s in kept}) == 1
    finally:
        rec.close()


def test_processors_see_start_and_end_and_the_span_is_frozen_after_end():
    seen = []

    class Watch(SpanProcessor):
        def on_start(self, span, parent_context=None):
            span.set_attribute("from.on_start", 1)
            seen.append(("start", span.name))

        def on_end(self, span):
            seen.append(("end", span.name, span.end_time is not None))

    tp = TracerProvider()
    tp.add_span_processor(Watch())
    rec = Recorder(tp)
    try:
        asgi_call(TracehouseASGIMiddleware(busy_app(tp)))
        (server,) = [s for s in rec.spans.get_finished_spans() if s.kind is SpanKind.SERVER]
        assert server.attributes["from.on_start"] == 1
        assert ("start", "GET") in seen and ("end", "GET /items/{id}", True) in seen
        server.set_attribute("late", 1)
        server.add_event("late")
        server.set_status(Status(StatusCode.ERROR))
        server.update_name("renamed")
        server.end()
        assert "late" not in server.attributes and not [e for e in server.events if e.name == "late"]
        assert server.status.status_code is StatusCode.UNSET and server.name == "GET /items/{id}"
        assert sum(1 for s in seen if s[0] == "end" and s[1] == "GET /items/{id}") == 1
    finally:
        rec.close()


def test_limits_the_lean_span_would_not_honour_send_it_to_the_sdk():
    tp = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=4))
    assert not ServerSpans(tp.get_tracer("t")).lean
    rec = Recorder(tp)
    try:
        asgi_call(TracehouseASGIMiddleware(busy_app(tp)))
        (server,) = [s for s in rec.spans.get_finished_spans() if s.kind is SpanKind.SERVER]
        assert type(server).__name__ != "LeanServerSpan"
        assert server.attributes["server.address"] == "shop" and server.attributes["user_agent.original"] == "curl"
    finally:
        rec.close()
    assert ServerSpans(TracerProvider(span_limits=SpanLimits(max_span_attributes=8)).get_tracer("t")).lean is False
    assert ServerSpans(TracerProvider().get_tracer("t")).lean is True


def test_wsgi_uses_the_lean_span_too():
    rec = Recorder()
    try:
        def app(environ, start_response):
            trace.get_current_span().add_link(SpanContext(1, 2, False, TraceFlags(1)))
            start_response("200 OK", [])
            return [b"ok"]

        body = TracehouseWSGIMiddleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/w", "wsgi.url_scheme": "http",
                                              "HTTP_HOST": "h:1"}, lambda *a: None)
        assert b"".join(body) == b"ok"
        body.close()
        (span,) = rec.spans.get_finished_spans()
        assert type(span).__name__ == "LeanServerSpan" and [link.context.span_id for link in span.links] == [2]
        assert dict(span.attributes) == {"http.request.method": "GET", "url.path": "/w", "url.scheme": "http",
                                         "server.address": "h", "server.port": 1, "http.response.status_code": 200}
    finally:
        rec.close()


def test_a_disabled_tracer_makes_no_span():
    from opentelemetry.sdk.trace import _TracerConfig

    tracer = TracerProvider().get_tracer("t")
    spans = ServerSpans(tracer)
    assert spans.lean
    tracer._set_tracer_config(_TracerConfig(is_enabled=False))
    assert not spans.start("GET", None, 1, {"a": 1}).is_recording()
