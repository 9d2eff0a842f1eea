import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from tests.agent.helpers import Recorder
from tracehouse.agent.asgi import TracehouseASGIMiddleware
from tracehouse.agent.wsgi import ROUTE_KEY, TracehouseWSGIMiddleware

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def rec():
    r = Recorder()
    yield r
    r.close()


class Route:
    path = "/items/{id}"


def asgi_call(app, path="/items/7", method="GET", headers=()):
    scope = {"type": "http", "method": method, "path": path, "scheme": "http", "root_path": "",
             "server": ("10.0.0.1", 8000), "client": ("10.0.0.9", 50000),
             "headers": [(b"host", b"shop.example:8443"), (b"user-agent", b"curl/8"), *headers]}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(msg):
        sent.append(msg)

    asyncio.run(app(scope, receive, send))
    return sent


def make_asgi(status=200, exc=None, seen=None):
    async def app(scope, receive, send):
        scope["route"] = Route()
        if seen is not None:
            seen.append(trace.get_current_span().get_span_context())
        if exc is not None:
            raise exc
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})
    return TracehouseASGIMiddleware(app)


def test_asgi_server_span_attributes_parent_and_histogram(rec):
    seen = []
    asgi_call(make_asgi(seen=seen), headers=[(b"traceparent", f"00-{TRACE_ID}-{PARENT}-01".encode())])
    (span,) = rec.spans.get_finished_spans()
    assert span.kind is SpanKind.SERVER and span.name == "GET /items/{id}"
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT and span.parent.is_remote
    assert seen[0].span_id == span.context.span_id  # the span is current inside the app
    assert dict(span.attributes) == {
        "http.request.method": "GET", "url.path": "/items/7", "url.scheme": "http",
        "server.address": "shop.example", "server.port": 8443, "client.address": "10.0.0.9",
        "user_agent.original": "curl/8", "http.response.status_code": 200, "http.route": "/items/{id}"}
    assert span.status.status_code is StatusCode.UNSET
    (point,) = rec.points("http.server.request.duration")
    assert dict(point.attributes) == {"http.request.method": "GET", "http.response.status_code": 200,
                                      "http.route": "/items/{id}"}
    assert point.count == 1 and 0 < point.sum < 1
    (active,) = rec.points("http.server.active_requests")
    assert active.value == 0


def test_asgi_5xx_and_exceptions(rec):
    asgi_call(make_asgi(status=503))
    boom = KeyError("boom")
    with pytest.raises(KeyError) as info:
        asgi_call(make_asgi(exc=boom))
    assert info.value is boom  # the application's own exception, unchanged
    s503, sexc = rec.spans.get_finished_spans()
    assert s503.status.status_code is StatusCode.ERROR and s503.attributes["error.type"] == "503"
    assert sexc.status.status_code is StatusCode.ERROR and sexc.attributes["error.type"] == "KeyError"
    assert sexc.attributes["http.response.status_code"] == 500
    assert [e.name for e in sexc.events] == ["exception"]
    codes = sorted(p.attributes["http.response.status_code"] for p in rec.points("http.server.request.duration"))
    assert codes == [500, 503]


def test_bad_traceparent_starts_a_new_trace(rec):
    asgi_call(make_asgi(), headers=[(b"traceparent", b"00-zz-11-01")])
    (span,) = rec.spans.get_finished_spans()
    assert span.parent is None


def test_wsgi_span_ends_when_body_closes(rec):
    closed = []

    class Body(list):
        def close(self):
            closed.append(True)

    def app(environ, start_response):
        environ[ROUTE_KEY] = "/users/<id>"
        start_response("500 Internal Server Error", [("content-type", "text/plain")])
        return Body([b"a", b"b"])

    mw = TracehouseWSGIMiddleware(app)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/users/3", "HTTP_HOST": "api:9000",
               "REMOTE_ADDR": "1.2.3.4", "wsgi.url_scheme": "http", "SERVER_PORT": "9000",
               "HTTP_TRACEPARENT": f"00-{TRACE_ID}-{PARENT}-01"}
    statuses = []
    body = mw(environ, lambda s, h, e=None: statuses.append(s))
    assert b"".join(body) == b"ab"
    assert rec.spans.get_finished_spans() == ()
    body.close()
    assert closed == [True] and statuses == ["500 Internal Server Error"]
    (span,) = rec.spans.get_finished_spans()
    assert span.name == "POST /users/<id>" and span.status.status_code is StatusCode.ERROR
    assert span.attributes["server.address"] == "api" and span.attributes["server.port"] == 9000
    assert span.attributes["http.response.status_code"] == 500
    assert format(span.context.trace_id, "032x") == TRACE_ID


def test_wsgi_exception_propagates_unchanged(rec):
    err = ValueError("app bug")

    def app(environ, start_response):
        raise err

    with pytest.raises(ValueError) as info:
        TracehouseWSGIMiddleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda *a: None)
    assert info.value is err
    (span,) = rec.spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR and span.attributes["error.type"] == "ValueError"


def test_starlette_instrumentor_wraps_fastapi_once(rec):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tracehouse.agent.frameworks import StarletteInstrumentor

    inst = StarletteInstrumentor()
    inst.instrument()
    try:
        app = FastAPI()

        @app.get("/hello/{name}")
        def hello(name: str):
            return {"hello": name}

        with TestClient(app) as client:
            assert client.get("/hello/bob").json() == {"hello": "bob"}
    finally:
        inst.uninstrument()
    (span,) = rec.spans.get_finished_spans()
    assert span.name == "GET /hello/{name}" and span.attributes["http.route"] == "/hello/{name}"


def test_duration_histogram_counts_per_thread_and_stays_cumulative(rec):
    import threading

    from tracehouse.agent import http_server as hs

    hist = hs.current().duration
    assert not hist.direct  # the lean path is in use with this SDK

    def work(n):
        for i in range(n):
            hist.record(0.003 if i % 2 else 0.2, "GET", "/a", 200, None)

    threads = [threading.Thread(target=work, args=(100,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hist.record(1.5, "POST", None, 503, "503")
    points = {p.attributes.get("http.route"): p for p in rec.points("http.server.request.duration")}
    a = points["/a"]
    assert a.count == 400 and abs(a.sum - 200 * 0.203) < 1e-9 and a.min == 0.003 and a.max == 0.2
    assert a.explicit_bounds == hs.DURATION_BUCKETS
    assert a.bucket_counts[0] == 200 and a.bucket_counts[hs.DURATION_BUCKETS.index(0.25)] == 200
    assert dict(points[None].attributes) == {"http.request.method": "POST", "http.response.status_code": 503,
                                             "error.type": "503"}
    hist.record(0.003, "GET", "/a", 200, None)
    (a,) = [p for p in rec.points("http.server.request.duration") if p.attributes.get("http.route") == "/a"]
    assert a.count == 401  # cumulative, nothing counted twice


def test_lean_batch_processor_bounds_counts_and_flushes_on_shutdown():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tracehouse.agent import counters
    from tracehouse.agent.batching import LeanBatchSpanProcessor

    counters.reset()
    mem = InMemorySpanExporter()
    proc = LeanBatchSpanProcessor(mem, max_queue_size=10, max_export_batch_size=4, schedule_delay_millis=60_000)
    proc._export_lock.acquire()  # hold the export thread back: the queue fills up
    tp = TracerProvider()
    tp.add_span_processor(proc)
    tracer = tp.get_tracer("t")
    for i in range(15):
        tracer.start_span(f"s{i}").end()
    assert counters.snapshot().get("spans.dropped.queue_full") == 5
    proc._export_lock.release()
    proc.shutdown()
    names = [s.name for s in mem.get_finished_spans()]
    assert sorted(names, key=lambda n: int(n[1:])) == [f"s{i}" for i in range(10)]
    tracer.start_span("late").end()
    assert counters.snapshot().get("spans.dropped.shutdown") == 1
