"""Bad input gets a clear 4xx (or 503/429 with Retry-After), changes nothing else, and never a 500."""

from __future__ import annotations

import copy
import gzip
import json
import os
import time
import zlib

import httpx
import orjson
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from tests.collector.harness import run_collector
from tests.collector.payloads import kv, traces
from tests.support import oneshot
from tracehouse.collector.convert import Limits

PB = {"content-type": "application/x-protobuf"}


@pytest.fixture
def running(chdb_store, tmp_path):
    r = run_collector(chdb_store, str(tmp_path / "buffer"), max_body_bytes=200_000, max_decompressed_bytes=400_000,
                      max_batch_age=0.1, limits=Limits(max_attributes=8, max_value_len=100))
    yield r
    r.stop()


def _count(store) -> int:
    return int(store.query(f"SELECT count() FROM {store.db}.spans").scalar())


def _post(r, body: bytes, headers=None, path="/v1/traces") -> httpx.Response:
    return oneshot.post(r.url + path, content=body, headers=headers if headers is not None else PB, timeout=30)


def _status(resp: httpx.Response) -> status_pb2.Status:
    assert resp.headers["content-type"] == "application/x-protobuf"
    return status_pb2.Status.FromString(resp.content)


def test_every_bad_body_is_refused_and_nothing_is_stored(running, chdb_store):
    m = running.collector.metrics
    good, _ = traces(3)
    cases = [
        (b"\xff\xfe not protobuf", PB, 400, "malformed protobuf"),
        (b"{not json", {"content-type": "application/json"}, 400, "malformed JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
         {"content-type": "application/json"}, 400, "neither hex nor base64"),
        (b'{"resourceSpans": 5}', {"content-type": "application/json"}, 400, "OTLP/JSON"),
        (good.SerializeToString(), {"content-type": "text/plain"}, 415, "unsupported content type"),
        (good.SerializeToString(), {"content-type": "application/x-protobuf", "content-encoding": "br"}, 415,
         "content encoding"),
        (b"\x1f\x8b\x08\x00garbage", {"content-type": "application/x-protobuf", "content-encoding": "gzip"}, 400,
         "gzip"),
        (os.urandom(200_001), PB, 413, "exceeds"),
    ]
    for body, headers, status, text in cases:
        resp = _post(running, body, headers)
        assert resp.status_code == status, (text, resp.content)
        msg = resp.json()["message"] if "json" in headers.get("content-type", "") else _status(resp).message
        assert text in msg
    # String fields must be UTF-8 in protobuf: a span name with invalid UTF-8 fails the parse.
    bad_utf8 = good.SerializeToString().replace(b"op-0", b"op\xff0")
    resp = _post(running, bad_utf8)
    assert resp.status_code == 400 and "UTF-8" in _status(resp).message
    assert _post(running, b"", {"content-type": "application/x-protobuf"}, "/v1/nope").status_code == 404
    assert oneshot.get(running.url + "/v1/traces").status_code == 405
    time.sleep(0.3)
    assert _count(chdb_store) == 0 and running.collector.wal.records == 0
    assert m.get("tracehouse_collector_rejected_requests_total", signal="traces", reason="malformed") == 6
    assert m.get("tracehouse_collector_rejected_requests_total", signal="traces", reason="unsupported") == 2
    assert m.get("tracehouse_collector_rejected_requests_total", signal="traces", reason="too_large") == 1


def test_gzip_bomb_is_cut_off_without_inflating(running):
    bomb = gzip.compress(b"\x00" * (50 << 20), 9)  # 50 MiB of zeros in ~50 kB
    assert len(bomb) < 200_000
    t0 = time.perf_counter()
    resp = _post(running, bomb, {"content-type": "application/x-protobuf", "content-encoding": "gzip"})
    assert resp.status_code == 413 and "decompressed body exceeds 400000" in _status(resp).message
    assert time.perf_counter() - t0 < 2
    zbomb = zlib.compress(b"\x00" * (10 << 20))  # zlib-wrapped, as some clients send with "gzip"
    resp = _post(running, zbomb, {"content-type": "application/x-protobuf", "content-encoding": "gzip"})
    assert resp.status_code == 413


def test_by_default_a_body_inflating_past_20_mib_is_refused_before_it_is_parsed(chdb_store, tmp_path):
    """Parsing takes up to ~26x a body's size in memory (4 MB of empty attributes: +105 MB RSS), so the
    default cap on a decompressed body bounds what one small gzip body can make the collector hold.
    A request within the cap is stored; one past it is refused (413) and stores nothing."""
    def body(n: int) -> bytes:
        req, _ = traces(1)
        req.resource_spans[0].scope_spans[0].spans[0].attributes.extend([kv("blob", "x" * n)])
        return gzip.compress(req.SerializeToString(), 9)

    gz = {"content-type": "application/x-protobuf", "content-encoding": "gzip"}
    r = run_collector(chdb_store, str(tmp_path / "buffer"), max_batch_age=0.05)  # the default settings
    try:
        resp = _post(r, body(21 << 20), gz)
        assert resp.status_code == 413, resp.status_code
        assert "decompressed body exceeds 20971520" in _status(resp).message
        assert _post(r, body(19 << 20), gz).status_code == 200
        r.wait_stored("traces", 1)
    finally:
        r.stop()
    assert _count(chdb_store) == 1


def test_every_member_of_a_multi_member_gzip_body_is_stored_and_trailing_junk_is_refused(running, chdb_store):
    """RFC 1952: a gzip body is a series of members, read as one stream (Go's reader, so the
    OpenTelemetry Collector, and Python's gzip do). Only the first member used to be read: the
    others' spans were dropped behind a 200, and bytes after the gzip data were ignored."""
    gz = {"content-type": "application/x-protobuf", "content-encoding": "gzip"}
    first, ids1 = traces(3, service="gz-a")
    second, ids2 = traces(4, service="gz-b")
    # two serialized requests one after the other are one request holding both (protobuf merge)
    body = gzip.compress(first.SerializeToString()) + gzip.compress(second.SerializeToString())
    resp = _post(running, body, gz)
    assert resp.status_code == 200, resp.content
    assert ExportTraceServiceResponse.FromString(resp.content).partial_success.rejected_spans == 0
    running.wait_stored("traces", 7)
    # junk after the last member (zero padding aside) is refused, with nothing of the request kept
    junk, _ = traces(2, service="gz-junk")
    resp = _post(running, gzip.compress(junk.SerializeToString()) + b"not gzip", gz)
    assert resp.status_code == 400 and "gzip" in _status(resp).message
    padded, ids3 = traces(2, service="gz-padded")
    assert _post(running, gzip.compress(padded.SerializeToString()) + b"\x00" * 64, gz).status_code == 200
    running.wait_stored("traces", 9)
    time.sleep(0.3)
    rows = chdb_store.query(f"SELECT service, span_id FROM {chdb_store.db}.spans").rows
    assert sorted(tuple(r) for r in rows) == sorted([("gz-a", i) for i in ids1] + [("gz-b", i) for i in ids2]
                                  + [("gz-padded", i) for i in ids3])


def test_oversized_body_without_content_length(running):
    def chunks():
        for _ in range(30):
            yield b"\x00" * 10_000

    resp = oneshot.post(running.url + "/v1/traces", content=chunks(), headers=PB)
    assert resp.status_code == 413


def test_partial_success_rejects_only_invalid_spans(running, chdb_store):
    req, ids = traces(6)
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b""  # empty trace id
    spans[1].span_id = b"\x00" * 8  # all-zero span id
    spans[2].parent_span_id = b"\x01\x02"  # wrong length
    resp = _post(running, req.SerializeToString())
    assert resp.status_code == 200
    out = ExportTraceServiceResponse.FromString(resp.content)
    assert out.partial_success.rejected_spans == 3
    assert "invalid trace_id" in out.partial_success.error_message
    assert "invalid span_id" in out.partial_success.error_message
    running.wait_stored("traces", 3)
    stored = {r[0] for r in chdb_store.query(f"SELECT span_id FROM {chdb_store.db}.spans").rows}
    assert stored == set(ids[3:])
    m = running.collector.metrics
    assert m.get("tracehouse_collector_rejected_items_total", signal="traces") == 3
    assert m.get("tracehouse_collector_accepted_items_total", signal="traces") == 3

    # A request where every item is invalid: 200 with everything rejected, nothing buffered.
    records = running.collector.wal.records
    req, _ = traces(2)
    for s in req.resource_spans[0].scope_spans[0].spans:
        s.span_id = b"short"
    out = ExportTraceServiceResponse.FromString(_post(running, req.SerializeToString()).content)
    assert out.partial_success.rejected_spans == 2
    assert running.collector.wal.records == records


def test_absurd_attributes_are_truncated_and_counted(running, chdb_store):
    req, _ = traces(1)
    s = req.resource_spans[0].scope_spans[0].spans[0]
    del s.attributes[:]
    s.attributes.extend(kv(f"k{i}", "v" * (1000 if i == 0 else 1)) for i in range(50))
    s.attributes[1].key = "x" * 1000
    assert _post(running, req.SerializeToString()).status_code == 200
    running.wait_stored("traces", 1)
    keys, values = chdb_store.query(f"SELECT attr_keys, attr_values FROM {chdb_store.db}.spans").rows[0]
    assert len(keys) == 8 and len(values[0]) == 100 and len(keys[1]) == 256
    m = running.collector.metrics
    assert m.get("tracehouse_collector_truncated_total", what="attributes") == 42
    assert m.get("tracehouse_collector_truncated_total", what="attribute values") == 1
    assert m.get("tracehouse_collector_truncated_total", what="attribute keys") == 1


def test_tokens(chdb_store, tmp_path):
    r = run_collector(chdb_store, str(tmp_path / "b"), ingest_tokens=["s3cret", "other"],
                      ingest_token_header="x-tracehouse-token", max_batch_age=0.1)
    try:
        body = traces(2)[0].SerializeToString()
        for headers in ({}, {"authorization": "Bearer wrong"}, {"x-tracehouse-token": "nope"},
                        {"authorization": "s3cret"}):
            resp = _post(r, body, dict(PB, **headers))
            assert resp.status_code == 401 and "token" in _status(resp).message
        assert r.collector.wal.records == 0
        assert _post(r, body, dict(PB, authorization="Bearer s3cret")).status_code == 200
        other = traces(2)[0].SerializeToString()  # the same body again would be a retry, not stored twice
        assert _post(r, other, dict(PB, **{"x-tracehouse-token": "other"})).status_code == 200
        r.wait_stored("traces", 4)
        # health endpoints are not behind the token
        assert oneshot.get(r.url + "/healthz").status_code == 200
        assert oneshot.get(r.url + "/readyz").text.strip() == "ready"
    finally:
        r.stop()
    assert _count(chdb_store) == 4


def test_rate_limit_per_service(chdb_store, tmp_path):
    # 10 items/s: the second request would need a whole second of refill, however slow the host
    r = run_collector(chdb_store, str(tmp_path / "b"), rate_limit_per_service=10.0, max_batch_age=0.1)
    try:
        assert _post(r, traces(10, service="a")[0].SerializeToString()).status_code == 200
        resp = _post(r, traces(10, service="a")[0].SerializeToString())
        assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
        # another service has its own bucket
        assert _post(r, traces(10, service="b")[0].SerializeToString()).status_code == 200
        r.wait_stored("traces", 20)
        assert r.collector.metrics.get("tracehouse_collector_rejected_items_total", signal="traces",
                                       reason="rate_limited") == 10
    finally:
        r.stop()
    assert _count(chdb_store) == 20


def test_a_flood_of_service_names_does_not_lift_the_limit_of_a_throttled_service(chdb_store, tmp_path):
    """The limiter keeps at most 10,000 service buckets; past that it used to clear them all, so a
    request naming 10,000 new services gave every throttled service a full bucket again. Full
    buckets (nothing to remember) and the fullest go first now; an emptied one stays."""
    # one item per 100 s: the victim's bucket cannot refill during the test, however slow the host
    r = run_collector(chdb_store, str(tmp_path / "b"), rate_limit_per_service=0.01, max_batch_age=0.1)
    try:
        assert _post(r, traces(1, service="victim")[0].SerializeToString()).status_code == 200
        assert _post(r, traces(1, service="victim")[0].SerializeToString()).status_code == 429
        flood, _ = traces(1, service="flood-0")
        template = flood.resource_spans[0]
        for i in range(1, 10_000):
            rs = flood.resource_spans.add()
            rs.CopyFrom(template)
            rs.resource.attributes[0].value.string_value = f"flood-{i}"
            rs.scope_spans[0].spans[0].span_id = os.urandom(8)
        assert _post(r, flood.SerializeToString()).status_code == 200
        resp = _post(r, traces(1, service="victim")[0].SerializeToString())
        assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
        r.wait_stored("traces", 10_001)
    finally:
        r.stop()
    assert int(chdb_store.query(f"SELECT count() FROM {chdb_store.db}.spans WHERE service = 'victim'").scalar()) == 1


def test_an_out_of_range_metric_temporality_is_stored_as_unspecified_and_the_writer_goes_on(running, chdb_store):
    """OTLP/JSON may carry any number for an enum; aggregationTemporality -1 once stopped the
    writer thread (the store's client could not encode it as UInt8): nothing was stored after it."""
    now = str(time.time_ns())

    def metric(name: str, temporality: int) -> bytes:
        point = {"timeUnixNano": now, "asDouble": 1.5}
        return orjson.dumps({"resourceMetrics": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "m"}}]}, "scopeMetrics": [{"metrics": [
                {"name": name, "sum": {"dataPoints": [point], "aggregationTemporality": temporality,
                                       "isMonotonic": True}}]}]}]})

    json_headers = {"content-type": "application/json"}
    for name, t in (("negative", -1), ("unknown", 7), ("delta", 1)):
        assert _post(running, metric(name, t), json_headers, "/v1/metrics").status_code == 200
    running.wait_stored("metrics", 3)
    rows = chdb_store.query(f"SELECT name, temporality FROM {chdb_store.db}.metric_points ORDER BY name").rows
    assert [tuple(r) for r in rows] == [("delta", 1), ("negative", 0), ("unknown", 0)]
    req, _ = traces(5)
    assert _post(running, req.SerializeToString()).status_code == 200
    running.wait_stored("traces", 5)


def _paths(node, at=()):
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*at, i))


def _with(doc, at, value):
    out = copy.deepcopy(doc)
    node = out
    for k in at[:-1]:
        node = node[k]
    node[at[-1]] = value
    return out


def test_any_field_of_any_signal_of_the_wrong_type_or_range_is_refused_or_stored(running, chdb_store):
    """OTLP/JSON with every field of a trace, a log and a metric request replaced by hostile
    values: each request is answered 200 or 4xx, and the writer goes on storing (once, a metric's
    ``aggregationTemporality: -1`` stopped it for good)."""
    now = str(time.time_ns())
    attr = [{"key": "k", "value": {"stringValue": "v"}}, {"key": "n", "value": {"intValue": "3"}}]
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "hostile"}}]}
    docs = {
        "/v1/traces": {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "s"}, "spans": [{
            "traceId": "0123456789abcdef0123456789abcdef", "spanId": "0123456789abcdef", "name": "op", "kind": 2,
            "startTimeUnixNano": now, "endTimeUnixNano": now, "attributes": attr,
            "events": [{"timeUnixNano": now, "name": "e", "attributes": attr}],
            "links": [{"traceId": "0123456789abcdef0123456789abcdee", "spanId": "0123456789abcdee"}],
            "status": {"code": 2, "message": "m"}}]}]}]},
        "/v1/logs": {"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": [{
            "timeUnixNano": now, "severityNumber": 9, "body": {"stringValue": "b"}, "attributes": attr}]}]}]},
        "/v1/metrics": {"resourceMetrics": [{"resource": resource, "scopeMetrics": [{"metrics": [
            {"name": "s", "sum": {"dataPoints": [{"timeUnixNano": now, "asDouble": 1.5, "attributes": attr}],
                                  "aggregationTemporality": 2, "isMonotonic": True}},
            {"name": "h", "histogram": {"dataPoints": [{"timeUnixNano": now, "count": "3", "sum": 2.0,
                                                        "bucketCounts": ["1", "2"], "explicitBounds": [1.0]}],
                                        "aggregationTemporality": 1}}]}]}]},
    }
    hostile = [None, -1, 2**64, 1e308, "NaN", "", "zz", [], {}, True, "-5", 3.5, "x" * 300]
    headers = {"content-type": "application/json"}
    answers = {}
    for path, doc in docs.items():
        for at in list(_paths(doc))[1:]:
            for value in hostile:
                r = _post(running, json.dumps(_with(doc, at, value)).encode(), headers, path)
                answers[r.status_code] = answers.get(r.status_code, 0) + 1
                assert r.status_code < 500, (path, at, value, r.status_code, r.text)
    assert answers[200] > 100 and answers[400] > 100
    req, ids = traces(5, service="after-the-storm")
    assert _post(running, req.SerializeToString()).status_code == 200
    wait = time.monotonic() + 60
    while _count_of(chdb_store, "after-the-storm") < 5:
        assert running.collector.writer.running, "the writer stopped"
        assert time.monotonic() < wait, "the spans sent afterwards were not stored"
        time.sleep(0.1)
    m = running.collector.metrics
    assert not m.get("tracehouse_collector_dead_letter_items_total")


def _count_of(store, service: str) -> int:
    return int(store.query(f"SELECT count() FROM {store.db}.spans WHERE service = {{s:String}}", {"s": service}).scalar())


def test_unknown_json_fields_are_ignored_even_when_they_hold_keys_named_like_ids(running, chdb_store):
    """OTLP/JSON receivers MUST ignore fields with unknown names. Ids were turned from hex into
    base64 wherever a key was named traceId/spanId, so an unknown field (a newer OTLP's, or a
    vendor's) holding such a key with another kind of value refused the whole request (400)."""
    js = {"content-type": "application/json"}
    tid, sid, link_tid = os.urandom(16).hex(), os.urandom(8).hex(), os.urandom(16).hex()
    span = {"traceId": tid, "spanId": sid, "name": "known", "kind": 2, "startTimeUnixNano": str(time.time_ns()),
            "endTimeUnixNano": str(time.time_ns() + 1000), "links": [{"traceId": link_tid, "span_id": sid}],
            "futureCause": {"traceId": "not an id at all", "spanId": 42},
            "vendorExtras": [{"parentSpanId": "??"}]}
    doc = {"resourceSpans": [{"resource": {"attributes": [kv_json("service.name", "json-unknown")]},
                              "scopeSpans": [{"spans": [span]}], "schemaExtras": {"span_id": "x"}}],
           "futureTopLevel": {"trace_id": "zz"}}
    resp = _post(running, orjson.dumps(doc), js)
    assert resp.status_code == 200, resp.content
    assert resp.json().get("partialSuccess", {}).get("rejectedSpans", "0") in (0, "0")
    running.wait_stored("traces", 1)
    row = chdb_store.query(f"SELECT trace_id, span_id, links_trace_id FROM {chdb_store.db}.spans "
                           "WHERE service = 'json-unknown'").rows
    assert [(r[0].hex(), r[1].hex(), [x.hex() for x in r[2]]) for r in row] == [(tid, sid, [link_tid])]
    # a known id field is still checked
    bad = copy.deepcopy(doc)
    bad["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "not hex"
    resp = _post(running, orjson.dumps(bad), js)
    assert resp.status_code == 400 and "neither hex nor base64" in resp.json()["message"]


def kv_json(key: str, value: str) -> dict:
    return {"key": key, "value": {"stringValue": value}}


def test_a_json_body_of_countless_tiny_objects_is_refused_before_it_is_parsed(chdb_store, tmp_path):
    """20 MiB of ``{},`` (7 million empty spans, a 20 KB gzip body) held a decode thread for 93 s and
    took 1.1 GB through orjson and ParseDict (an OTLP/JSON body of real spans holds one JSON object or
    array per ~40 bytes; this one per 3); Zipkin's JSON parsed into 480 MB before refusing span 0.
    Both are refused (413) before parsing, past one object or array per 20 bytes of the body cap,
    brackets inside strings not counted; the collector then stores the next request as usual."""
    gz = {"content-type": "application/json", "content-encoding": "gzip"}
    n = (20 << 20) // 3 - 100
    otlp = gzip.compress(b'{"resourceSpans":[{"scopeSpans":[{"spans":[' + b"{}," * n + b"{}]}]}]}", 9)
    zipkin = gzip.compress(b"[" + b"{}," * n + b"{}]", 9)
    assert len(otlp) < 100_000 and len(zipkin) < 100_000
    r = run_collector(chdb_store, str(tmp_path / "buffer"), zipkin=True, max_batch_age=0.05)  # default limits
    try:
        resp = _post(r, otlp, gz)
        assert resp.status_code == 413, resp.status_code
        assert f"holds {n + 7} objects and arrays, more than the 1048576" in orjson.loads(resp.content)["message"]
        resp = oneshot.post(r.zipkin_url + "/api/v2/spans", content=zipkin, headers=gz, timeout=30)
        assert resp.status_code == 413 and "objects and arrays" in resp.text, (resp.status_code, resp.text)
        m = r.collector.metrics
        assert m.get("tracehouse_collector_rejected_requests_total", signal="traces", reason="too_large") == 2
        # brackets inside strings are data, not structure: a name full of them is stored
        req, _ = traces(1)
        req.resource_spans[0].scope_spans[0].spans[0].name = "{[" * 600
        from tracehouse.collector.decode import to_json
        assert _post(r, to_json(req), {"content-type": "application/json"}).status_code == 200
        r.wait_stored("traces", 1)
    finally:
        r.stop()
    assert _count(chdb_store) == 1


def test_a_json_body_of_real_spans_at_the_size_cap_is_within_the_object_budget():
    from tracehouse.collector.decode import _containers, json_budget, to_json

    body = to_json(traces(64_000)[0])  # ~21 MB: spans with three attributes each
    assert _containers(body, 0) * 1.8 < json_budget(len(body))


def test_histogram_points_with_more_buckets_than_any_sdk_makes_are_refused_and_the_rest_stored(running, chdb_store):
    """A point's buckets had no limit: one JSON point of ten million zero counts (a 20 MB body) was
    stored as one 84 MB row. Past 16,384 buckets (a side) a point is refused, as partial success."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    )
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    now = time.time_ns()
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend([kv("service.name", "buckets")])
    sm = rm.scope_metrics.add()
    h = sm.metrics.add(name="latency")
    for n in (3, 17_000):
        p = h.histogram.data_points.add(time_unix_nano=now, count=n, sum=1.0)
        p.bucket_counts.extend([1] * n)
        if n < 10:
            p.explicit_bounds.extend(float(i) for i in range(n - 1))
    e = sm.metrics.add(name="latency_exp")
    for n in (5, 16_385):
        p = e.exponential_histogram.data_points.add(time_unix_nano=now, count=n, scale=2)
        p.positive.bucket_counts.extend([1] * n)
    assert isinstance(e.exponential_histogram.data_points[0], metrics_pb2.ExponentialHistogramDataPoint)
    body = gzip.compress(req.SerializeToString())  # within the fixture's body cap
    resp = _post(running, body, {"content-type": "application/x-protobuf", "content-encoding": "gzip"},
                 path="/v1/metrics")
    assert resp.status_code == 200, resp.content
    partial = ExportMetricsServiceResponse.FromString(resp.content).partial_success
    assert partial.rejected_data_points == 2 and "more than 16,384 buckets" in partial.error_message
    running.wait_stored("metrics", 2)
    rows = chdb_store.query(f"SELECT name, length(bucket_counts) + length(exp_positive_counts) "
                            f"FROM {chdb_store.db}.metric_points ORDER BY name").rows
    assert [tuple(r) for r in rows] == [("latency", 3), ("latency_exp", 5)]


def test_a_metric_s_name_description_and_unit_are_cut_like_span_names_and_counted(running, chdb_store):
    """Every point's row repeats its metric's name, description and unit, which were stored whole:
    a 100 kB description on 2,000 points (a 140 kB body) became 200 MB of rows and took the writer
    1.7 GB to insert. They are cut at the value length (the fixture's 100), once per metric."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    now = time.time_ns()
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend([kv("service.name", "verbose")])
    m = rm.scope_metrics.add().metrics.add(name="n" * 150, description="d" * 20_000, unit="u" * 101)
    for i in range(3):
        m.gauge.data_points.add(time_unix_nano=now + i, as_double=float(i))
    short = rm.scope_metrics[0].metrics.add(name="short", description="d" * 100, unit="ms")
    short.gauge.data_points.add(time_unix_nano=now, as_double=1.0)
    resp = _post(running, req.SerializeToString(), path="/v1/metrics")
    assert resp.status_code == 200, resp.content
    running.wait_stored("metrics", 4)
    rows = chdb_store.query(f"SELECT name, length(description), unit FROM {chdb_store.db}.metric_points "
                            "ORDER BY name, ts_ns").rows
    assert [tuple(r) for r in rows] == [("n" * 100, 100, "u" * 100)] * 3 + [("short", 100, "ms")]
    m = running.collector.metrics
    for what in ("metric names", "metric descriptions", "metric units"):
        assert m.get("tracehouse_collector_truncated_total", what=what) == 1, what
