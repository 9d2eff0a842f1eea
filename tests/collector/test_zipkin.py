"""Zipkin v2 on its own port with real Zipkin clients: py_zipkin (a Zipkin instrumentation library,
proto3 and JSON, shared server spans) and OpenTelemetry's Zipkin JSON exporter, in one trace with a
service that speaks OTLP/gRPC: one waterfall, the right parents, edges on the map, RED rollups.
Then bad input on the Zipkin receiver."""

from __future__ import annotations

import gzip
import os
import time

import orjson
import pytest
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from py_zipkin import Kind
from py_zipkin.encoding import Encoding
from py_zipkin.request_helpers import create_http_headers
from py_zipkin.transport import BaseTransportHandler
from py_zipkin.zipkin import ZipkinAttrs, zipkin_span
from starlette.testclient import TestClient

from tests.collector.harness import run_collector
from tests.support import oneshot
from tracehouse.collector.zipkin import shared_server_id
from tracehouse.config import Settings
from tracehouse.dashboard import create_app
from tracehouse.storage import queries_traces as qtr

ORDERS_PORT = 18081  # the address zk-orders reports as its local endpoint (nothing listens there)


class HttpTransport(BaseTransportHandler):
    """py_zipkin leaves the transport to the application: POST each encoded batch to Zipkin's API."""

    def __init__(self, url: str, content_type: str, headers: dict | None = None):
        self.url, self.content_type, self.headers = url, content_type, headers or {}
        self.statuses: list[int] = []

    def get_max_payload_bytes(self):
        return None

    def send(self, payload):
        body = payload if isinstance(payload, bytes) else payload.encode()
        r = oneshot.post(self.url, content=body, headers={"content-type": self.content_type, **self.headers},
                       timeout=30)
        self.statuses.append(r.status_code)


def _provider(service: str, exporter) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p


@pytest.fixture
def running(store, tmp_path):
    r = run_collector(store, str(tmp_path / "buffer"), grpc=True, zipkin=True, max_batch_age=0.2)
    yield r
    r.stop()


def test_one_trace_across_otlp_and_zipkin_services(running, store):
    zipkin_spans = running.zipkin_url + "/api/v2/spans"
    # web: OpenTelemetry SDK, OTLP/gRPC
    web = _provider("web", OTLPSpanExporter(endpoint=running.grpc_target, insecure=True))
    tracer = web.get_tracer("web.http")
    with tracer.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
        with tracer.start_as_current_span("GET /orders", kind=SpanKind.CLIENT, attributes={
                "server.address": "127.0.0.1", "server.port": ORDERS_PORT}) as call:
            ctx = call.get_span_context()
            # zk-orders: py_zipkin, proto3; it joins the caller's span (a shared server span) as
            # Zipkin's B3 instrumentation does with the X-B3-* headers of the request
            attrs = ZipkinAttrs(trace_id=f"{ctx.trace_id:032x}", span_id=f"{ctx.span_id:016x}",
                                parent_span_id=f"{root.get_span_context().span_id:016x}", flags="0",
                                is_sampled=True)
            orders_transport = HttpTransport(zipkin_spans, "application/x-protobuf")
            with zipkin_span(service_name="zk-orders", span_name="GET /orders", zipkin_attrs=attrs,
                             transport_handler=orders_transport, encoding=Encoding.V2_PROTO3, kind=Kind.SERVER,
                             host="127.0.0.1", port=ORDERS_PORT) as server:
                server.update_binary_annotations({"http.route": "/orders"})
                with zipkin_span(service_name="zk-orders", span_name="POST /pay", kind=Kind.CLIENT) as pay:
                    pay.add_sa_binary_annotation(port=18082, service_name="zk-payments", host="127.0.0.1")
                    b3 = create_http_headers()
                    # zk-payments: OpenTelemetry SDK with the Zipkin JSON exporter, continuing from B3
                    parent = SpanContext(int(b3["X-B3-TraceId"], 16), int(b3["X-B3-SpanId"], 16), is_remote=True,
                                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
                    payments = _provider("zk-payments", ZipkinExporter(endpoint=zipkin_spans))
                    ptracer = payments.get_tracer("payments.http", "2.0")
                    with ptracer.start_as_current_span(
                            "POST /pay", kind=SpanKind.SERVER,
                            context=trace_api.set_span_in_context(NonRecordingSpan(parent))):
                        with ptracer.start_as_current_span("charge card") as charge:
                            charge.add_event("card declined", {"code": 51})
                            charge.set_status(Status(StatusCode.ERROR, "declined"))
                    payments.shutdown()
    web.shutdown()
    assert orders_transport.statuses == [202]
    running.wait_stored("traces", 6)

    trace_hex = f"{ctx.trace_id:032x}"
    with TestClient(create_app(Settings(), store)) as client:
        t = client.get(f"/api/traces/{trace_hex}").json()
        smap = client.get("/api/service-map?since=1h").json()
        services = {s["service"]: s for s in client.get("/api/services?since=1h").json()["services"]}
    assert t["span_count"] == 6 and t["services"] == ["web", "zk-orders", "zk-payments"]
    by_name = {(s["service"], s["name"]): s for s in t["spans"]}
    web_root = by_name[("web", "GET /checkout")]
    web_call = by_name[("web", "GET /orders")]
    orders_server = by_name[("zk-orders", "GET /orders")]
    orders_call = by_name[("zk-orders", "POST /pay")]
    pay_server = by_name[("zk-payments", "POST /pay")]
    charge_span = by_name[("zk-payments", "charge card")]
    # the waterfall: web → (shared span, now its own) zk-orders → zk-payments
    assert web_root["parent_span_id"] in ("", None, "0" * 16)
    assert web_call["parent_span_id"] == web_root["span_id"]
    assert orders_server["span_id"] == shared_server_id(bytes.fromhex(trace_hex),
                                                        bytes.fromhex(web_call["span_id"]), "zk-orders").hex()
    assert orders_server["parent_span_id"] == web_call["span_id"] and orders_server["kind"] == "server"
    assert orders_call["parent_span_id"] == orders_server["span_id"] and orders_call["kind"] == "client"
    assert pay_server["parent_span_id"] == orders_call["span_id"] and pay_server["kind"] == "server"
    assert charge_span["parent_span_id"] == pay_server["span_id"] and charge_span["kind"] == "internal"
    # Zipkin fields, mapped
    assert orders_server["attributes"]["http.route"] == "/orders"
    assert orders_server["attributes"]["server.port"] == ORDERS_PORT
    assert orders_call["attributes"]["peer.service"] == "zk-payments"
    assert charge_span["status"] == {"code": "error", "message": "declined"}
    assert [(e["name"], e["attributes"]) for e in charge_span["events"]] == [("card declined", {"code": 51})]
    assert charge_span["scope"] == {"name": "payments.http", "version": "2.0"}
    # edges on the map: web → zk-orders (its host:port resolves through zk-orders' own address),
    # zk-orders → zk-payments (remoteEndpoint.serviceName)
    edges = {(e["source"], e["target"]) for e in smap["edges"]}
    assert {("web", "zk-orders"), ("zk-orders", "zk-payments")} <= edges
    # RED rollups: the Zipkin services' server spans count as requests
    assert services["zk-orders"]["requests"] == 1 and services["zk-payments"]["requests"] == 1


def _shared_trace(trace_hex: str) -> dict[str, dict]:
    """A client span of zk-front, the shared server span of zk-back joining it, the server's child
    (zk-back, parent = the shared id) and a child of the client's own (zk-front, same parent)."""
    now = time.time_ns() // 1000
    common = {"traceId": trace_hex, "parentId": "00000000000000f1"}
    return {
        "client": dict(common, id="00000000000000aa", name="call back", kind="CLIENT", timestamp=now,
                       duration=90, localEndpoint={"serviceName": "zk-front"}),
        "server": dict(common, id="00000000000000aa", name="serve", kind="SERVER", shared=True,
                       timestamp=now + 10, duration=70, localEndpoint={"serviceName": "zk-back"}),
        "child": {"traceId": trace_hex, "id": "00000000000000bb", "parentId": "00000000000000aa", "name": "db",
                  "kind": "CLIENT", "timestamp": now + 20, "duration": 20, "localEndpoint": {"serviceName": "zk-back"}},
        "sibling": {"traceId": trace_hex, "id": "00000000000000cc", "parentId": "00000000000000aa",
                    "name": "front work", "timestamp": now + 20, "duration": 20,
                    "localEndpoint": {"serviceName": "zk-front"}},
    }


@pytest.mark.parametrize("order", [
    [["client", "server", "child", "sibling"]],  # one request, the server first
    [["child", "sibling", "client", "server"]],  # one request, the child first
    [["client", "server"], ["child", "sibling"]],  # two requests, the server first
    [["child", "sibling"], ["client", "server"]],  # two requests, the child first
    [["child"], ["sibling"], ["server"], ["client"]],
])
def test_shared_span_children_follow_their_server_whatever_the_order(store, tmp_path, order):
    r = run_collector(store, str(tmp_path / "b"), zipkin=True, max_batch_age=0.1)
    trace_hex = os.urandom(16).hex()
    spans = _shared_trace(trace_hex)
    try:
        for batch in order:
            resp = oneshot.post(r.zipkin_url + "/api/v2/spans", content=orjson.dumps([spans[k] for k in batch]),
                              headers={"content-type": "application/json"}, timeout=30)
            assert resp.status_code == 202, resp.text
        r.wait_stored("traces", 4)
    finally:
        r.stop()
    server_id = shared_server_id(bytes.fromhex(trace_hex), bytes.fromhex("00000000000000aa"), "zk-back").hex()
    expected = {"call back": ("00000000000000aa", "00000000000000f1"), "serve": (server_id, "00000000000000aa"),
                "db": ("00000000000000bb", server_id), "front work": ("00000000000000cc", "00000000000000aa")}
    with TestClient(create_app(Settings(), store)) as client:
        t = client.get(f"/api/traces/{trace_hex}").json()
        o = client.get(f"/api/traces/{trace_hex}/outline").json()
        db = client.get(f"/api/traces/{trace_hex}/spans/00000000000000bb").json()
        front = client.get(f"/api/traces/{trace_hex}/spans/00000000000000cc").json()
    assert {s["name"]: (s["span_id"], s["parent_span_id"]) for s in t["spans"]} == expected
    assert {s["name"]: (s["span_id"], s["parent_span_id"]) for s in o["spans"]} == expected
    assert db["parent_span_id"] == server_id and front["parent_span_id"] == "00000000000000aa"


def test_json_gzip_token_and_partial_refusal(store, tmp_path):
    r = run_collector(store, str(tmp_path / "b"), zipkin=True, ingest_tokens=["zk"], max_batch_age=0.1)
    try:
        url = r.zipkin_url + "/api/v2/spans"
        span = {"traceId": os.urandom(16).hex(), "id": os.urandom(8).hex(), "name": "get", "kind": "SERVER",
                "timestamp": time.time_ns() // 1000, "duration": 10, "localEndpoint": {"serviceName": "z"},
                "tags": {"db.password": "hunter2", "http.url": "https://u:pw@shop.example/x?token=abc&q=1"}}
        zero = dict(span, id="0000000000000000")
        body = gzip.compress(orjson.dumps([span, zero]))
        headers = {"content-type": "application/json", "content-encoding": "gzip"}
        assert oneshot.post(url, content=body, headers=headers).status_code == 401
        resp = oneshot.post(url, content=body, headers=dict(headers, authorization="Bearer zk"))
        assert resp.status_code == 202 and "1 spans rejected" in resp.text and "invalid span_id" in resp.text
        r.wait_stored("traces", 1)
    finally:
        r.stop()
    row = store.query(f"SELECT attr_keys, attr_values FROM {store.db}.spans").rows[0]
    attrs = dict(zip(row[0], row[1]))
    # the same redaction as OTLP: credential-looking keys, and credentials inside URLs
    assert attrs["db.password"] == "[REDACTED]" and "pw" not in attrs["http.url"] and "abc" not in attrs["http.url"]


def test_bad_input_is_refused_clearly_and_nothing_is_stored(chdb_store, tmp_path):
    r = run_collector(chdb_store, str(tmp_path / "b"), zipkin=True, max_body_bytes=200_000,
                      max_decompressed_bytes=400_000, max_batch_age=0.1)
    try:
        url = r.zipkin_url + "/api/v2/spans"
        js = {"content-type": "application/json"}
        cases = [
            (b"[{", js, 400, "malformed JSON"),
            (b"{}", js, 400, "JSON list of spans"),
            (b'[{"traceId": 1, "id": "1"}]', js, 400, "traceId must be a string"),
            (b'[{"traceId": "1", "id": "1", "tags": {"a": [1]}}]', js, 400, "string value"),
            (b'[{"traceId": "1", "id": "1", "duration": "long"}]', js, 400, "duration must be a number"),
            (b"\xff\xff\xff", {"content-type": "application/x-protobuf"}, 400, "malformed protobuf"),
            (b"[]", {"content-type": "application/x-thrift"}, 415, "unsupported content type"),
            (b"[]", {"content-type": "application/json", "content-encoding": "br"}, 415, "content encoding"),
            (b"\x1f\x8b\x08\x00garbage", dict(js, **{"content-encoding": "gzip"}), 400, "gzip"),
            (gzip.compress(b" " * (50 << 20)), dict(js, **{"content-encoding": "gzip"}), 413, "decompressed"),
            (b"[" + b" " * 200_001 + b"]", js, 413, "exceeds"),
            (b'[{"traceId": "1", "id": "1", "name": "\xff"}]', js, 400, "malformed JSON"),
        ]
        for body, headers, status, text in cases:
            resp = oneshot.post(url, content=body, headers=headers, timeout=30)
            assert resp.status_code == status and text in resp.text, (text, resp.status_code, resp.text)
        assert oneshot.get(url).status_code == 405
        assert oneshot.post(r.zipkin_url + "/api/v1/spans", content=b"[]", headers=js).status_code == 404
        assert r.collector.wal.records == 0
        # still serving: no content type is JSON, as Zipkin assumes
        good = [{"traceId": "1", "id": "2", "name": "fine", "timestamp": time.time_ns() // 1000, "duration": 1}]
        assert oneshot.post(url, content=orjson.dumps(good)).status_code == 202
        r.wait_stored("traces", 1)
    finally:
        r.stop()
    assert chdb_store.query(f"SELECT count() FROM {chdb_store.db}.spans").scalar() == 1
    m = r.collector.metrics
    assert m.get("tracehouse_collector_rejected_requests_total", reason="malformed") == 8
    assert m.get("tracehouse_collector_rejected_requests_total", reason="too_large") == 2


def test_an_annotation_holding_a_number_past_int64_does_not_refuse_the_batch(chdb_store, tmp_path):
    """An annotation's text of the form ``{"name": {attributes}}`` becomes an event with attributes;
    a number in it past int64 (an unsigned 64-bit id, say) used to raise on the int64 attribute
    (ValueError), which refused the whole batch with "cannot decode the body: ValueError". It is now
    kept exactly, as text, and every span of the batch is stored."""
    r = run_collector(chdb_store, str(tmp_path / "b"), zipkin=True, max_batch_age=0.1)
    try:
        now = time.time_ns() // 1000
        trace = os.urandom(16).hex()
        spans = [{"traceId": trace, "id": os.urandom(8).hex(), "name": f"op{i}", "timestamp": now, "duration": 5,
                  "localEndpoint": {"serviceName": "zk-big"}} for i in range(3)]
        spans[1]["annotations"] = [{"timestamp": now + 1,
                                    "value": '{"retry": {"id": 18446744073709551615, "ok": 7}}'}]
        _store_json(r, spans)
    finally:
        r.stop()
    db = chdb_store.db
    assert chdb_store.query(f"SELECT count() FROM {db}.spans WHERE service = 'zk-big'").scalar() == 3
    name, attrs = chdb_store.query(f"SELECT events_name, events_attrs FROM {db}.spans WHERE name = 'op1'").rows[0]
    assert list(name) == ["retry"]
    ev = orjson.loads(attrs[0])
    assert str(ev["id"]) == "18446744073709551615" and str(ev["ok"]) == "7"


def _store_json(r, spans: list[dict]) -> None:
    """Post Zipkin v2 JSON spans, expect 202, and wait until all of them are stored."""
    resp = oneshot.post(r.zipkin_url + "/api/v2/spans", content=orjson.dumps(spans),
                      headers={"content-type": "application/json"}, timeout=30)
    assert resp.status_code == 202, resp.text
    r.wait_stored("traces", len(spans))


def test_a_json_span_with_timestamp_0_is_a_span_without_timestamp(chdb_store, tmp_path):
    """Zipkin's model reads a timestamp of 0 as absent ("zero means null"; times at or before the
    epoch are invalid), and the proto3 path here did too; a JSON span with ``"timestamp": 0`` was
    stored as starting in 1970 instead of at its first annotation (or when received)."""
    r = run_collector(chdb_store, str(tmp_path / "b"), zipkin=True, max_batch_age=0.1)
    try:
        before = time.time_ns()
        first = before // 1000 - 5_000
        spans = [{"traceId": os.urandom(16).hex(), "id": os.urandom(8).hex(), "name": "annotated", "timestamp": 0,
                  "duration": 0, "localEndpoint": {"serviceName": "zk-zero"},
                  "annotations": [{"timestamp": first + 300, "value": "ws"}, {"timestamp": first, "value": "cs"}]},
                 {"traceId": os.urandom(16).hex(), "id": os.urandom(8).hex(), "name": "bare", "timestamp": 0,
                  "localEndpoint": {"serviceName": "zk-zero"}}]
        _store_json(r, spans)
    finally:
        r.stop()
    rows = dict((name, (start, dur)) for name, start, dur in chdb_store.query(
        f"SELECT name, start_ns, duration_ns FROM {chdb_store.db}.spans WHERE service = 'zk-zero'").rows)
    assert rows["annotated"] == (first * 1000, 300_000)
    assert before // 1000 * 1000 <= rows["bare"][0] <= time.time_ns() and rows["bare"][1] == 0


def test_a_retried_body_with_spans_without_timestamp_is_stored_once(chdb_store, tmp_path):
    """A span without timestamp or annotations starts when it is received, so each send of the same
    body converted to another OTLP request, whose digest the dedup window had not seen: a client's
    retry after a lost answer stored the spans twice. The body itself is now what identifies a
    Zipkin request: the retry (here gzipped) is acknowledged again and not stored."""
    r = run_collector(chdb_store, str(tmp_path / "b"), zipkin=True, max_batch_age=0.1)
    spans = [{"traceId": os.urandom(16).hex(), "id": os.urandom(8).hex(), "name": f"bare {i}",
              "localEndpoint": {"serviceName": "zk-retry"}} for i in range(3)]
    spans.append({"traceId": os.urandom(16).hex(), "id": os.urandom(8).hex(), "name": "timed",
                  "timestamp": time.time_ns() // 1000, "duration": 5, "localEndpoint": {"serviceName": "zk-retry"}})
    body = orjson.dumps(spans)
    try:
        _store_json(r, spans)
        time.sleep(0.002)  # the retry is received at another microsecond
        resp = oneshot.post(r.zipkin_url + "/api/v2/spans", content=gzip.compress(body), timeout=30,
                          headers={"content-type": "application/json", "content-encoding": "gzip"})
        assert resp.status_code == 202, resp.text
        assert r.collector.metrics.get("tracehouse_collector_duplicate_requests_total", signal="traces") == 1
        other = [dict(spans[0], id=os.urandom(8).hex())]  # another body is another request
        _store_json(r, other)
        r.wait_stored("traces", 5)
    finally:
        r.stop()
    counts = dict(chdb_store.query(
        f"SELECT hex(span_id), count() FROM {chdb_store.db}.spans WHERE service = 'zk-retry' GROUP BY span_id").rows)
    assert {k.lower(): v for k, v in counts.items()} == {s["id"]: 1 for s in spans + other}


def test_a_shared_server_span_with_an_all_zero_id_is_refused_like_any_other(chdb_store, tmp_path):
    """A shared server span gets an id of its own derived from the shared one; with the shared id all
    zeros (invalid, and refused span by span for any other span) it got a valid made-up id, lost its
    zero parent and was stored as a root span, answered as accepted. It is now refused and named in
    the answer, and the rest of the batch is stored."""
    r = run_collector(chdb_store, str(tmp_path / "b"), zipkin=True, max_batch_age=0.1)
    now = time.time_ns() // 1000
    trace = os.urandom(16).hex()
    good = {"traceId": trace, "id": os.urandom(8).hex(), "name": "fine", "kind": "CLIENT", "timestamp": now,
            "duration": 5, "localEndpoint": {"serviceName": "zk-zero-shared"}}
    bad = {"traceId": trace, "id": "0000000000000000", "parentId": "0000000000000000", "name": "zero",
           "kind": "SERVER", "shared": True, "timestamp": now, "duration": 3,
           "localEndpoint": {"serviceName": "zk-zero-shared"}}
    try:
        resp = oneshot.post(r.zipkin_url + "/api/v2/spans", content=orjson.dumps([bad, good]),
                          headers={"content-type": "application/json"}, timeout=30)
        assert resp.status_code == 202 and "1 spans rejected" in resp.text and "invalid span_id" in resp.text, resp.text
        r.wait_stored("traces", 1)
        m = r.collector.metrics
        assert m.get("tracehouse_collector_rejected_items_total", signal="traces") == 1
        assert m.get("tracehouse_collector_accepted_items_total", signal="traces") == 1
    finally:
        r.stop()
    names = [n for (n,) in chdb_store.query(f"SELECT name FROM {chdb_store.db}.spans").rows]
    assert names == ["fine"]


def test_two_servers_joining_one_client_span_get_an_id_each(chdb_store, tmp_path):
    """A proxy and the service behind it may both join the client's span (both report a shared
    server span with the client's id). Each server side's own id was derived from the trace and the
    shared id alone, so the two got the same id: two spans stored under one id, one of them hidden
    from the waterfall, and their children under whichever. The id now depends on the service too."""
    r = run_collector(chdb_store, str(tmp_path / "b"), zipkin=True, max_batch_age=0.1)
    now = time.time_ns() // 1000
    trace, shared = os.urandom(16).hex(), os.urandom(8).hex()

    def span(name: str, service: str, **kw) -> dict:
        return {"traceId": trace, "name": name, "timestamp": now, "duration": 5,
                "localEndpoint": {"serviceName": service}, **kw}

    spans = [span("call", "zk-front", id=shared, kind="CLIENT"),
             span("proxy", "zk-proxy", id=shared, kind="SERVER", shared=True),
             span("route", "zk-proxy", id=os.urandom(8).hex(), parentId=shared),
             span("serve", "zk-back", id=shared, kind="SERVER", shared=True),
             span("db", "zk-back", id=os.urandom(8).hex(), parentId=shared, kind="CLIENT")]
    try:
        _store_json(r, spans)
    finally:
        r.stop()
    # the trace as it is read (each server's children are put under it then: storage.shared_spans)
    rows = {s["name"]: (s["span_id"], s["parent_span_id"]) for s in qtr.trace(chdb_store, trace)["spans"]}
    assert len({sid for sid, _ in rows.values()}) == 5, rows
    assert rows["proxy"][1] == rows["serve"][1] == shared
    assert rows["route"][1] == rows["proxy"][0] and rows["db"][1] == rows["serve"][0]


def test_a_span_of_more_tags_than_the_limit_is_stored_and_counted_as_before(chdb_store, tmp_path):
    """Tags past the attribute limit are no longer turned into attributes the writer drops: what
    is stored and counted as cut is what it was (the first MAX_TAGS tags; every other one counted in
    ``tracehouse_collector_truncated_total{what="attributes"}``), counted once when a retried body
    is acknowledged again."""
    from tracehouse.collector.zipkin import MAX_TAGS

    r = run_collector(chdb_store, str(tmp_path / "b"), zipkin=True, max_batch_age=0.1)
    try:
        tags = {f"t{i:05d}": str(i) for i in range(5_000)}
        tags["peer.service"] = "late-peer"
        span = {"traceId": os.urandom(16).hex(), "id": os.urandom(8).hex(), "name": "many-tags",
                "timestamp": time.time_ns() // 1000, "duration": 5, "localEndpoint": {"serviceName": "zk-many"},
                "remoteEndpoint": {"serviceName": "db"}, "tags": tags}
        body = gzip.compress(orjson.dumps([span]))
        headers = {"content-type": "application/json", "content-encoding": "gzip"}
        for _ in range(2):  # the second is a client's retry: acknowledged, not stored again
            resp = oneshot.post(r.zipkin_url + "/api/v2/spans", content=body, headers=headers, timeout=30)
            assert resp.status_code == 202, resp.text
        r.wait_stored("traces", 1)
        cut = r.collector.metrics.get("tracehouse_collector_truncated_total", what="attributes")
        dup = r.collector.metrics.get("tracehouse_collector_duplicate_requests_total", signal="traces")
    finally:
        r.stop()
    keys, values = chdb_store.query(f"SELECT attr_keys, attr_values FROM {chdb_store.db}.spans "
                                    "WHERE name = 'many-tags'").rows[0]
    assert list(keys) == [f"t{i:05d}" for i in range(MAX_TAGS)] and list(values) == [str(i) for i in range(MAX_TAGS)]
    assert dup == 1 and cut == 5_001 - MAX_TAGS  # as when every tag was converted and the writer cut them
