"""The pure parts: redaction, rate limits, gzip limits, conversion of every AnyValue kind and
metric type, batch ids."""

from __future__ import annotations

import gzip
import json

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tests.collector.payloads import kv, traces
from tracehouse.collector.convert import (
    Limits,
    Stats,
    convert_logs,
    convert_metrics,
    convert_traces,
    new_batch,
)
from tracehouse.collector.decode import SIGNALS, BadRequest, decode_body, gunzip, to_json
from tracehouse.collector.ratelimit import RateLimiter
from tracehouse.collector.redact import Redactor
from tracehouse.collector.wal import Wal
from tracehouse.collector.writer import batch_id_for
from tracehouse.storage.attrs import ARRAY, BOOL, BYTES, DOUBLE, EMPTY, INT, KVLIST, STR, decode_map


@pytest.mark.parametrize("key,secret", [
    ("db.password", True), ("passwd", True), ("client_secret", True), ("auth.token", True),
    ("http.request.header.authorization", True), ("Cookie", True), ("apiKey", True), ("x-api-key", True),
    ("API_KEY", True), ("private_key", True), ("session_id", True), ("aws.secret.access.key", True),
    ("gen_ai.usage.input_tokens", False), ("author", False), ("http.route", False), ("url.full", False),
])
def test_secret_keys(key, secret):
    assert Redactor().key_is_secret(key) is secret


def test_configurable_keys_and_urls():
    r = Redactor(["tenant_pin"])
    assert r.key_is_secret("app.tenant_pin") and not Redactor().key_is_secret("app.tenant_pin")
    assert r.text("postgres://app:s3cr3t@db:5432/x") == "postgres://app:[REDACTED]@db:5432/x"
    assert r.text("https://h/p?a=1&access_token=xyz&key=k#frag") == "https://h/p?a=1&access_token=[REDACTED]&key=[REDACTED]#frag"
    assert r.text("GET /p?tenant_pin=1234") == "GET /p?tenant_pin=[REDACTED]"
    assert r.text("user@example.com wrote a = b") == "user@example.com wrote a = b"


def test_rate_limiter_with_a_clock():
    now = [100.0]
    rl = RateLimiter(10, clock=lambda: now[0])
    assert rl.admit({"a": 10}) == 0
    wait = rl.admit({"a": 5})
    assert wait == pytest.approx(0.5) and RateLimiter.retry_after(wait) == 1
    now[0] += 0.5
    assert rl.admit({"a": 5}) == 0
    assert rl.admit({"b": 1}) == 0  # services have their own buckets
    now[0] += 10
    assert rl.admit({"a": 50}) == 0  # bigger than the burst: admitted from a full bucket...
    assert rl.admit({"a": 1}) == pytest.approx(4.1)  # ...and paid back before the next one
    assert RateLimiter(0).admit({"a": 10**9}) == 0


def test_gunzip_limits():
    data = b"abc" * 1000
    assert gunzip(gzip.compress(data), 3000) == data
    with pytest.raises(BadRequest) as e:
        gunzip(gzip.compress(data), 2999)
    assert e.value.status == 413
    with pytest.raises(BadRequest) as e:
        gunzip(gzip.compress(data)[:-12], 10_000)
    assert e.value.status == 400


def test_json_decoding_accepts_both_field_spellings():
    req, ids = traces(2)
    doc = json.loads(to_json(req))
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["trace_id"] = span.pop("traceId")  # the proto field name is accepted too
    span["unknownField"] = 1
    msg, is_json = decode_body(SIGNALS["traces"], "application/json; charset=utf-8", "", json.dumps(doc).encode(),
                               1 << 20)
    assert is_json and msg == req


def _one_span_attrs(values: dict, lim: Limits = Limits()):
    req, _ = traces(1)
    s = req.resource_spans[0].scope_spans[0].spans[0]
    del s.attributes[:]
    s.attributes.extend(kv(k, v) for k, v in values.items())
    b = new_batch("spans")
    assert convert_traces(req, b, Redactor(), lim, Stats()) == 1
    cols = b.columns()
    return cols["attr_keys"][0], cols["attr_values"][0], cols["attr_types"][0], cols


def test_every_anyvalue_kind_keeps_its_meaning():
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    values = {"s": "text", "b": False, "i": -7, "d": 2.5, "raw": b"\x01\x02", "arr": ["x", 1, True, 1.5],
              "kv": {"inner": {"deep": [1]}, "password": "p"}}
    keys, vals, types, _ = _one_span_attrs(values)
    assert list(types) == [STR, BOOL, INT, DOUBLE, BYTES, ARRAY, KVLIST]
    decoded = decode_map(keys, vals, types)
    assert decoded["raw"] == "AQI=" and decoded["arr"] == ["x", 1, True, 1.5]
    assert decoded["kv"] == {"inner": {"deep": [1]}, "password": "[REDACTED]"}
    assert {k: decoded[k] for k in ("s", "b", "i", "d")} == {"s": "text", "b": False, "i": -7, "d": 2.5}
    # an attribute with no value at all
    req, _ = traces(1)
    s = req.resource_spans[0].scope_spans[0].spans[0]
    s.attributes.append(KeyValue(key="nothing", value=AnyValue()))
    b = new_batch("spans")
    convert_traces(req, b, Redactor(), Limits(), Stats())
    assert b.columns()["attr_types"][0][-1] == EMPTY


def test_logs_keep_trace_context_and_structured_bodies():
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend([kv("service.name", "l"), kv("service.instance.id", "i")])
    sl = rl.scope_logs.add()
    sl.scope.name = "log.scope"
    r = sl.log_records.add()
    r.observed_time_unix_nano = 5_000_000_000
    r.trace_id, r.span_id = b"t" * 16, b"s" * 8
    r.body.kvlist_value.values.append(kv("token", "abc"))
    r.event_name = "exception.snapshot"
    b = new_batch("logs")
    assert convert_logs(req, b, Redactor(), Limits(), Stats()) == 1
    row = {k: v[0] for k, v in b.columns().items()}
    assert row["timestamp"] == 5 and row["ts_ns"] == 5_000_000_000  # observed time when time is unset
    assert row["trace_id"] == b"t" * 16 and row["span_id"] == b"s" * 8
    assert json.loads(row["body"]) == {"token": "[REDACTED]"}
    assert row["event_name"] == "exception.snapshot" and row["instance"] == "i" and row["scope_name"] == "log.scope"


def test_metric_types_and_exemplars():
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    g = sm.metrics.add(name="g")
    p = g.gauge.data_points.add(as_int=4, time_unix_nano=3_000_000_000)
    ex = p.exemplars.add(as_double=1.5, time_unix_nano=1, trace_id=b"a" * 16, span_id=b"b" * 8)
    ex.filtered_attributes.append(kv("x", 1))
    p.exemplars.add(as_int=2)  # without trace context: zero ids
    h = sm.metrics.add(name="h").histogram
    h.aggregation_temporality = 1
    h.data_points.add(count=3, sum=6, bucket_counts=[1, 2], explicit_bounds=[5.0])  # no min/max
    e = sm.metrics.add(name="e").exponential_histogram
    ep = e.data_points.add(count=4, scale=3, zero_count=1)
    ep.positive.offset, ep.negative.offset = -2, 1
    ep.positive.bucket_counts.extend([1, 1])
    ep.negative.bucket_counts.extend([1])
    b = new_batch("metric_points")
    assert convert_metrics(req, b, Redactor(), Limits(), Stats()) == 3
    rows = [dict(zip(b.names, row, strict=True)) for row in b.rows]
    gr, hr, er = rows
    assert gr["value"] == 4.0 and gr["type"] == 1 and gr["service"] == "unknown_service"
    assert gr["exemplar_trace_ids"] == [b"a" * 16, b"\x00" * 16] and gr["exemplar_values"] == [1.5, 2.0]
    assert hr["type"] == 3 and hr["temporality"] == 1 and hr["bucket_counts"] == [1, 2] and hr["min"] == 0.0
    assert er["exp_scale"] == 3 and er["exp_zero_count"] == 1 and er["exp_positive_offset"] == -2
    assert er["exp_positive_counts"] == [1, 1] and er["exp_negative_counts"] == [1]


def test_batch_ids_are_stable_per_buffer_and_distinct_across_buffers(tmp_path):
    a, b = Wal(str(tmp_path / "a")), Wal(str(tmp_path / "b"))
    a.open()
    b.open()
    assert batch_id_for(a.ident, (1, 0)) != batch_id_for(b.ident, (1, 0))
    assert batch_id_for(a.ident, (1, 0)) != batch_id_for(a.ident, (1, 13))
    a.stop()
    again = Wal(str(tmp_path / "a"))
    again.open()
    assert batch_id_for(again.ident, (1, 0)) == batch_id_for(a.ident, (1, 0)) > 0
    again.stop()
    b.stop()


def test_spans_with_the_same_attribute_keys_share_one_key_list():
    req, _ = traces(3)
    b = new_batch("spans")
    convert_traces(req, b, Redactor(), Limits(), Stats())
    cols = b.columns()
    keys, types = cols["attr_keys"], cols["attr_types"]
    assert keys[0] == keys[1] and keys[0] is keys[1] and types[0] is types[1]
    # a different key set is its own object, with its own content
    req.resource_spans[0].scope_spans[0].spans[2].attributes.add(key="extra").value.string_value = "x"
    b2 = new_batch("spans")
    convert_traces(req, b2, Redactor(), Limits(), Stats())
    k2 = b2.columns()["attr_keys"]
    assert k2[2] == (*keys[0], "extra") and k2[0] is keys[0]


def test_event_and_link_attributes_are_capped_like_span_attributes():
    lim = Limits(max_attributes=3, max_value_len=10, max_key_len=5)
    req, _ = traces(1)
    s = req.resource_spans[0].scope_spans[0].spans[0]
    e = s.events.add(name="e")
    e.attributes.extend([kv("msg", "x" * 50), kv("longkey", "v"), kv("n", 1), kv("extra", "dropped")])
    lk = s.links.add(trace_id=b"t" * 16, span_id=b"s" * 8)
    lk.attributes.extend([kv(f"k{i}", "y" * 30) for i in range(5)] + [kv("nested", ["z" * 40])])
    b, st = new_batch("spans"), Stats()
    convert_traces(req, b, Redactor(), lim, st)
    cols = b.columns()
    assert json.loads(cols["events_attrs"][0][0]) == {"msg": "x" * 10, "longk": "v", "n": 1}
    assert json.loads(cols["links_attrs"][0][0]) == {"k0": "y" * 10, "k1": "y" * 10, "k2": "y" * 10}
    assert st.truncated == {"event attribute values": 1, "event attribute keys": 1, "event attributes": 1,
                            "attribute keys": 3,  # the span's and its resource's own keys
                            "link attributes": 3, "link attribute values": 3}


def test_a_metric_point_past_2106_is_stored_at_the_end_of_the_time_range(chdb_store):
    """Like spans and logs: a point time past the DateTime range sits at its end instead of failing
    the insert of its whole batch (which the writer would retry, then send to dead letters)."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", "far-future"))
    m = rm.scope_metrics.add().metrics.add()
    m.name = "queue.depth"
    p = m.gauge.data_points.add()
    p.time_unix_nano = (1 << 64) - 1
    p.as_int = 7
    b = new_batch("metric_points")
    assert convert_metrics(req, b, Redactor(), Limits(), Stats()) == 1
    chdb_store.insert("metric_points", b.columns(), batch_id=1)
    rows = chdb_store.query(f"SELECT toUnixTimestamp(timestamp), ts_ns, value FROM {chdb_store.db}.metric_points "
                            "WHERE service = 'far-future'").rows
    assert rows == [(0xFFFFFFFF, (1 << 64) - 1, 7.0)]


def test_each_invalid_span_is_removed_with_its_reason_and_the_valid_ones_counted_per_service():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tracehouse.collector.validate import check_traces

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "shop"
    spans = rs.scope_spans.add().spans
    good_tid, good_sid = b"\x01" * 16, b"\x02" * 8
    cases = [  # (trace_id, span_id, parent_span_id, links, reason or None)
        (good_tid, good_sid, b"", [], None),
        (good_tid, good_sid, b"\x00" * 8, [], None),  # a zero parent is a root, not an error
        (good_tid, good_sid, b"\x03" * 8, [(good_tid, good_sid)], None),
        (b"\x01" * 15, good_sid, b"", [], "spans with an invalid trace_id"),
        (b"\x00" * 16, good_sid, b"", [], "spans with an invalid trace_id"),
        (b"", good_sid, b"", [], "spans with an invalid trace_id"),
        (good_tid, b"\x02" * 9, b"", [], "spans with an invalid span_id"),
        (good_tid, b"\x00" * 8, b"", [], "spans with an invalid span_id"),
        (good_tid, good_sid, b"\x03" * 4, [], "spans with an invalid parent_span_id"),
        (good_tid, good_sid, b"", [(good_tid, good_sid), (b"\x01" * 8, good_sid)], "spans with an invalid link"),
        (good_tid, good_sid, b"", [(good_tid, b"")], "spans with an invalid link"),
    ]
    for i, (tid, sid, pid, links, _) in enumerate(cases):
        s = spans.add(trace_id=tid, span_id=sid, parent_span_id=pid, name=f"s{i}")
        for ltid, lsid in links:
            s.links.add(trace_id=ltid, span_id=lsid)
    out = check_traces(req)
    reasons: dict[str, int] = {}
    for *_, reason in cases:
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
    assert out.reasons == reasons and out.rejected == 8 and out.modified
    assert out.per_service == {"shop": 3}
    assert [s.name for s in req.resource_spans[0].scope_spans[0].spans] == ["s0", "s1", "s2"]


def test_a_json_body_that_starts_with_a_byte_order_mark_is_read_like_one_without():
    from tracehouse.collector.zipkin import spans_from_json

    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0102030405060708090a0b0c0d0e0f10",
                                                          "spanId": "0102030405060708", "name": "bom"}]}]}]}
    body = json.dumps(doc).encode()
    plain, _ = decode_body(SIGNALS["traces"], "application/json", "", body, 1 << 20)
    with_bom, _ = decode_body(SIGNALS["traces"], "application/json", "", b"\xef\xbb\xbf" + body, 1 << 20)
    assert with_bom == plain and with_bom.resource_spans[0].scope_spans[0].spans[0].name == "bom"
    zipkin = json.dumps([{"traceId": "0102030405060708", "id": "0a0b0c0d0e0f1011", "name": "z"}]).encode()
    assert [s.name for s in spans_from_json(b"\xef\xbb\xbf" + zipkin)] == ["z"]
    for bad in (b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf" + body, b"\xef\xbb" + body):
        with pytest.raises(BadRequest) as e:
            decode_body(SIGNALS["traces"], "application/json", "", bad, 1 << 20)
        assert e.value.status == 400 and "malformed JSON" in e.value.message
