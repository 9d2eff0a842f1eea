"""Zipkin v2 → OTLP, the pure mapping: kinds, endpoints, tags, status, annotations, shared spans."""

from __future__ import annotations

import orjson
import pytest
from py_zipkin.encoding.protobuf import zipkin_pb2

from tracehouse.collector.decode import BadRequest
from tracehouse.collector.zipkin import (
    shared_server_id,
    spans_from_json,
    spans_from_proto,
    to_otlp,
)

TRACE = "463ac35c9f6413ad48485a3953bb6124"
T = bytes.fromhex(TRACE)


def _attrs(span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value"))
    return out


def _map(spans: list[dict]):
    req = to_otlp(spans_from_json(orjson.dumps(spans)), now_us=1_700_000_000_000_000)
    out = {}
    for rs in req.resource_spans:
        svc = rs.resource.attributes[0].value.string_value
        for ss in rs.scope_spans:
            for s in ss.spans:
                out[s.name] = (svc, ss.scope, s)
    return req, out


def test_fields_endpoints_tags_status_and_annotations():
    _, spans = _map([
        {"traceId": TRACE, "id": "a2fb4a1d1a96d312", "parentId": "0020000000000001", "name": "get /api",
         "kind": "CLIENT", "timestamp": 1_700_000_000_000_123, "duration": 2_500,
         "localEndpoint": {"serviceName": "frontend", "ipv4": "10.0.0.1", "port": 8080},
         "remoteEndpoint": {"serviceName": "backend", "ipv6": "2001:db8::c001", "port": 9000},
         "tags": {"http.method": "GET", "otel.status_code": "ERROR", "error": "connection refused",
                  "otel.scope.name": "my.lib", "otel.scope.version": "1.2", "otel.dropped_events_count": "3",
                  "service.name": "frontend"},
         "annotations": [{"timestamp": 1_700_000_000_000_200, "value": "ws"},
                         {"timestamp": 1_700_000_000_000_300, "value": '{"retry": {"attempt": 2, "why": "x"}}'},
                         {"timestamp": 1_700_000_000_000_400, "value": '"spec form": {"k": "v"}'}]},
        {"traceId": TRACE[16:], "id": "1", "name": "internal work", "timestamp": 1_700_000_000_000_000,
         "duration": 1, "kind": None},
        {"traceId": TRACE, "id": "b2fb4a1d1a96d312", "name": "handle", "kind": "server", "timestamp": 5,
         "duration": 1, "localEndpoint": {"serviceName": "backend", "ipv4": "10.0.0.2", "port": 9000},
         "tags": {"error": "true"}},
        {"traceId": TRACE, "id": "c2fb4a1d1a96d312", "name": "ok one", "timestamp": 5, "kind": "PRODUCER",
         "tags": {"otel.status_code": "OK", "count": 5, "flag": True}},
    ])
    svc, scope, s = spans["get /api"]
    assert svc == "frontend" and (scope.name, scope.version) == ("my.lib", "1.2")
    assert s.trace_id == T and s.span_id.hex() == "a2fb4a1d1a96d312" and s.parent_span_id.hex() == "0020000000000001"
    assert s.kind == 3  # CLIENT
    assert s.start_time_unix_nano == 1_700_000_000_000_123_000 and s.end_time_unix_nano - s.start_time_unix_nano == 2_500_000
    assert _attrs(s) == {"http.method": "GET", "peer.service": "backend", "network.peer.address": "2001:db8::c001",
                         "network.peer.port": 9000, "network.local.address": "10.0.0.1", "network.local.port": 8080}
    assert s.status.code == 2 and s.status.message == "connection refused"
    assert s.dropped_events_count == 3
    assert [(e.name, e.time_unix_nano) for e in s.events] == [
        ("ws", 1_700_000_000_000_200_000), ("retry", 1_700_000_000_000_300_000), ("spec form", 1_700_000_000_000_400_000)]
    assert _attrs(s.events[1]) == {"attempt": 2, "why": "x"} and _attrs(s.events[2]) == {"k": "v"}
    svc, _, s = spans["internal work"]
    assert svc == "unknown_service" and s.kind == 1  # no kind: INTERNAL
    assert s.trace_id == b"\x00" * 8 + T[8:] and s.span_id == b"\x00" * 7 + b"\x01"  # 64-bit ids left-padded
    _, _, s = spans["handle"]
    assert s.kind == 2 and s.status.code == 2 and s.status.message == ""
    # a server's own address is how callers' host:port targets resolve to it on the service map
    assert _attrs(s) == {"network.local.address": "10.0.0.2", "network.local.port": 9000,
                         "server.address": "10.0.0.2", "server.port": 9000}
    _, _, s = spans["ok one"]
    assert s.kind == 4 and s.status.code == 1 and _attrs(s) == {"count": "5", "flag": "true"}


def test_tags_win_over_endpoints_and_a_span_without_timestamp_uses_its_annotations():
    _, spans = _map([
        {"traceId": TRACE, "id": "a2fb4a1d1a96d312", "name": "c", "kind": "CLIENT",
         "remoteEndpoint": {"serviceName": "from-endpoint"}, "tags": {"peer.service": "from-tag"},
         "annotations": [{"timestamp": 2_000, "value": "cs"}, {"timestamp": 5_000, "value": "cr"}]},
        {"traceId": TRACE, "id": "b2fb4a1d1a96d312", "name": "late"},
    ])
    s = spans["c"][2]
    assert _attrs(s)["peer.service"] == "from-tag"
    assert s.start_time_unix_nano == 2_000_000 and s.end_time_unix_nano == 5_000_000
    late = spans["late"][2]
    assert late.start_time_unix_nano == late.end_time_unix_nano == 1_700_000_000_000_000_000  # when received


def test_shared_span_gets_its_own_id_under_its_client():
    client = {"traceId": TRACE, "id": "000000000000000a", "parentId": "0000000000000001", "name": "call",
              "kind": "CLIENT", "timestamp": 10, "duration": 9, "localEndpoint": {"serviceName": "front"}}
    server = {"traceId": TRACE, "id": "000000000000000a", "parentId": "0000000000000001", "name": "serve",
              "kind": "SERVER", "shared": True, "timestamp": 11, "duration": 7, "localEndpoint": {"serviceName": "back"}}
    child = {"traceId": TRACE, "id": "000000000000000b", "parentId": "000000000000000a", "name": "db",
             "kind": "CLIENT", "timestamp": 12, "duration": 2, "localEndpoint": {"serviceName": "back"}}
    _, spans = _map([client, server, child])
    new = shared_server_id(T, bytes.fromhex("000000000000000a"), "back")
    assert spans["call"][2].span_id.hex() == "000000000000000a"
    assert spans["serve"][2].span_id == new and spans["serve"][2].parent_span_id.hex() == "000000000000000a"
    # the server's child is stored as it came, whatever came with it: the trace view puts it under
    # the server (tests/collector/test_zipkin.py, whatever the order of arrival)
    assert spans["db"][2].parent_span_id.hex() == "000000000000000a"
    _, spans = _map([server])  # a retry maps the same way
    assert spans["serve"][2].span_id == new


def test_proto3_bodies_map_like_json():
    lst = zipkin_pb2.ListOfSpans()
    s = lst.spans.add()
    s.trace_id, s.id, s.parent_id = T, bytes.fromhex("a2fb4a1d1a96d312"), bytes.fromhex("0020000000000001")
    s.kind, s.name, s.timestamp, s.duration = zipkin_pb2.Span.CLIENT, "get", 1_000, 500
    s.local_endpoint.service_name, s.local_endpoint.ipv4, s.local_endpoint.port = "front", bytes([10, 0, 0, 1]), 80
    s.remote_endpoint.service_name = "back"
    s.tags["k"] = "v"
    a = s.annotations.add()
    a.timestamp, a.value = 1_100, "ws"
    req = to_otlp(spans_from_proto(lst.SerializeToString()))
    rs = req.resource_spans[0]
    span = rs.scope_spans[0].spans[0]
    assert rs.resource.attributes[0].value.string_value == "front"
    assert span.kind == 3 and span.trace_id == T and span.start_time_unix_nano == 1_000_000
    assert _attrs(span) == {"k": "v", "peer.service": "back", "network.local.address": "10.0.0.1",
                            "network.local.port": 80}
    assert [e.name for e in span.events] == ["ws"]


@pytest.mark.parametrize("body, text", [
    (b"[{", "malformed JSON"),
    (b'{"traceId": "1"}', "JSON list of spans"),
    (b"[5]", "span 0: must be an object"),
    (b'[{"traceId": 5, "id": "1"}]', "traceId must be a string"),
    (b'[{"traceId": "zz", "id": "1"}]', "is not hex"),
    (b'[{"traceId": "' + b"1" * 33 + b'", "id": "1"}]', "1 to 32 hex"),
    (b'[{"traceId": "1", "id": "1", "kind": "SIDEWAYS"}]', "kind"),
    (b'[{"traceId": "1", "id": "1", "timestamp": "yesterday"}]', "timestamp must be a number"),
    (b'[{"traceId": "1", "id": "1", "timestamp": -1}]', "out of range"),
    (b'[{"traceId": "1", "id": "1", "tags": {"a": {"b": 1}}}]', "must have a string value"),
    (b'[{"traceId": "1", "id": "1", "tags": ["a"]}]', "tags must be an object"),
    (b'[{"traceId": "1", "id": "1", "localEndpoint": {"port": 70000}}]', "port"),
    (b'[{"traceId": "1", "id": "1", "localEndpoint": {"ipv4": "999.1.1.1"}}]', "not an IP address"),
    (b'[{"traceId": "1", "id": "1", "annotations": [{"timestamp": 1}]}]', "annotation value"),
    (b'[{"traceId": "1", "id": "1", "shared": "yes"}]', "shared must be true or false"),
])
def test_malformed_json_is_refused_naming_the_field(body, text):
    with pytest.raises(BadRequest) as e:
        spans_from_json(body)
    assert e.value.status == 400 and text in e.value.message


def test_a_huge_timestamp_is_refused_in_a_short_message():
    """1e300 became a 301-digit number in the error message (and the log line that shows it)."""
    for v in (b"1e300", b"-1e300", b"18446744073709551615"):
        with pytest.raises(BadRequest) as e:
            spans_from_json(b'[{"traceId": "1", "id": "1", "duration": ' + v + b"}]")
        assert "duration" in e.value.message and "out of range" in e.value.message
        assert len(e.value.message) < 120, e.value.message


def test_malformed_proto3_is_refused():
    with pytest.raises(BadRequest, match="malformed protobuf"):
        spans_from_proto(b"\xff\xff\xff")
    lst = zipkin_pb2.ListOfSpans()
    lst.spans.add(trace_id=b"\x01" * 3, id=b"\x01" * 8)
    with pytest.raises(BadRequest, match="trace_id must be 8 or 16 bytes"):
        spans_from_proto(lst.SerializeToString())


def test_proto3_annotation_timestamps_out_of_range_are_named():
    # a fixed64 past what nanoseconds hold: refused naming the field, not "cannot decode the body"
    lst = zipkin_pb2.ListOfSpans()
    s = lst.spans.add(trace_id=b"\x01" * 16, id=b"\x02" * 8, timestamp=1_000)
    s.annotations.add(timestamp=(1 << 64) - 1, value="late")
    with pytest.raises(BadRequest) as e:
        spans_from_proto(lst.SerializeToString())
    assert e.value.status == 400 and "span 0: annotation timestamp" in e.value.message


@pytest.mark.parametrize("count", ["²", "1³", "٣", "9" * 5000, "-1", " 3", "3.0"])
def test_a_dropped_count_tag_that_is_not_a_plain_number_is_ignored_not_fatal_to_the_request(count):
    # "²".isdigit() is true and int() refuses it; 5,000 digits are past int()'s limit: either made
    # the whole request (every span of it) a 400
    _, spans = _map([{"traceId": TRACE, "id": "a2fb4a1d1a96d312", "name": "odd", "timestamp": 5, "duration": 1,
                      "tags": {"otel.dropped_events_count": count, "otel.dropped_links_count": "7"}},
                     {"traceId": TRACE, "id": "b2fb4a1d1a96d312", "name": "neighbour", "timestamp": 5,
                      "duration": 1}])
    span = spans["odd"][2]
    assert span.dropped_events_count == 0 and span.dropped_links_count == 7
    assert "neighbour" in spans


def _many_tags(n: int) -> dict:
    """``n`` plain tags, then tags the mapping reads (status, peer.service), last."""
    tags = {f"t{i:05d}": str(i) for i in range(n)}
    return dict(tags, **{"otel.status_code": "ERROR", "error": "boom", "peer.service": "late-peer"})


@pytest.mark.parametrize("encoding", ["json", "proto"])
def test_tags_past_the_attribute_limit_are_counted_not_converted(encoding):
    """The writer keeps a span's first MAX_TAGS attributes: a span of 5,000 tags became 5,000
    attribute messages for it to drop (1.5M tags: 3.1 s). Now the first MAX_TAGS plain tags become
    attributes, and so do the tags the mapping reads, wherever they are; the rest are counted."""
    from tracehouse.collector.zipkin import MAX_TAGS

    tags = _many_tags(5_000)
    if encoding == "json":
        spans = spans_from_json(orjson.dumps([{"traceId": TRACE, "id": "a2fb4a1d1a96d312", "name": "op",
                                               "timestamp": 1_700_000_000_000_000, "duration": 5,
                                               "localEndpoint": {"serviceName": "many"},
                                               "remoteEndpoint": {"serviceName": "db"}, "tags": tags}]))
    else:
        s = zipkin_pb2.Span(trace_id=T, id=bytes.fromhex("a2fb4a1d1a96d312"), name="op",
                            timestamp=1_700_000_000_000_000, duration=5)
        s.local_endpoint.service_name, s.remote_endpoint.service_name = "many", "db"
        s.tags.update(tags)
        spans = spans_from_proto(zipkin_pb2.ListOfSpans(spans=[s]).SerializeToString())
    cut: dict[str, int] = {}
    span = to_otlp(spans, cut=cut).resource_spans[0].scope_spans[0].spans[0]
    keys = [kv.key for kv in span.attributes]
    if encoding == "json":  # JSON keeps the sender's order; a proto map has none of its own
        assert keys == [f"t{i:05d}" for i in range(MAX_TAGS)] + ["peer.service"]
    else:
        assert len(keys) == MAX_TAGS + 1 and keys[-1] == "peer.service" and len(set(keys)) == len(keys)
    assert _attrs(span)["peer.service"] == "late-peer"  # the tag, not the remote endpoint's name
    assert span.status.code == span.status.STATUS_CODE_ERROR and span.status.message == "boom"
    # what the writer then cuts (the attributes past MAX_TAGS) and this count make what it cut of
    # every tag before: 5,001 attributes, of which MAX_TAGS stored
    assert cut == {"attributes": 5_000 - MAX_TAGS}
    assert cut["attributes"] + len(keys) - MAX_TAGS == 5_001 - MAX_TAGS
