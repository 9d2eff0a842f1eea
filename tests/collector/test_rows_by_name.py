"""Producers' rows are bound to table columns by name: every field of a span, log record and metric
point, each with a value of its own, lands in the column of that name; storage rejects a row layout
that does not name exactly the columns a producer must fill."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.collector.payloads import kv
from tracehouse.collector.convert import (
    LOG_ROW,
    METRIC_ROW,
    SPAN_ROW,
    Limits,
    Stats,
    convert_logs,
    convert_metrics,
    convert_traces,
    new_batch,
)
from tracehouse.collector.redact import Redactor
from tracehouse.storage.attrs import INT, STR
from tracehouse.storage.tables import LOGS, METRIC_POINTS, SPANS, STORE_FILLED

RES_KEYS = ("service.name", "service.instance.id", "r")
RES_VALS = ["svc", "inst-1", "rv"]


def _resource(resource) -> None:
    resource.attributes.extend([kv("service.name", "svc"), kv("service.instance.id", "inst-1"), kv("r", "rv")])


def _row(batch) -> dict:
    cols = batch.columns()
    assert set(cols) == {c for c in batch.names}
    return {k: v[0] for k, v in cols.items()}


def test_every_span_field_lands_in_its_column():
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    _resource(rs.resource)
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "scope-n", "scope-v"
    s = ss.spans.add(trace_id=b"T" * 16, span_id=b"S" * 8, parent_span_id=b"P" * 8, trace_state="ts=1",
                     name="op", kind=3, start_time_unix_nano=7_000_000_001, end_time_unix_nano=7_000_000_501)
    s.status.code, s.status.message = 2, "boom"
    s.attributes.extend([kv("a", "x"), kv("n", 5)])
    s.events.add(time_unix_nano=7_000_000_100, name="ev")
    s.links.add(trace_id=b"L" * 16, span_id=b"M" * 8)
    b = new_batch("spans")
    assert convert_traces(req, b, Redactor(), Limits(), Stats()) == 1
    row = _row(b)
    assert row == {
        "timestamp": 7, "trace_id": b"T" * 16, "span_id": b"S" * 8, "parent_span_id": b"P" * 8,
        "trace_state": "ts=1", "service": "svc", "name": "op", "kind": 3, "status_code": 2,
        "status_message": "boom", "start_ns": 7_000_000_001, "duration_ns": 500,
        "attr_keys": ("a", "n"), "attr_values": ["x", "5"], "attr_types": (STR, INT),
        "resource_keys": RES_KEYS, "resource_values": RES_VALS, "scope_name": "scope-n", "scope_version": "scope-v",
        "events_time_ns": [7_000_000_100], "events_name": ["ev"], "events_attrs": ["{}"],
        "links_trace_id": [b"L" * 16], "links_span_id": [b"M" * 8], "links_attrs": ["{}"],
    }
    assert set(row) == set(SPANS.column_names) - STORE_FILLED


def test_every_log_field_lands_in_its_column():
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    _resource(rl.resource)
    sl = rl.scope_logs.add()
    sl.scope.name, sl.scope.version = "scope-n", "scope-v"
    r = sl.log_records.add(time_unix_nano=9_000_000_001, observed_time_unix_nano=9_000_000_002, trace_id=b"T" * 16,
                           span_id=b"S" * 8, flags=1, severity_number=17, severity_text="ERROR", event_name="evt")
    r.body.string_value = "hello"
    r.attributes.append(kv("a", "x"))
    b = new_batch("logs")
    assert convert_logs(req, b, Redactor(), Limits(), Stats()) == 1
    row = _row(b)
    assert row == {
        "timestamp": 9, "ts_ns": 9_000_000_001, "observed_ns": 9_000_000_002, "trace_id": b"T" * 16,
        "span_id": b"S" * 8, "flags": 1, "severity_number": 17, "severity_text": "ERROR", "service": "svc",
        "instance": "inst-1", "event_name": "evt", "body": "hello",
        "attr_keys": ("a",), "attr_values": ["x"], "attr_types": (STR,),
        "resource_keys": RES_KEYS, "resource_values": RES_VALS, "scope_name": "scope-n", "scope_version": "scope-v",
    }
    assert set(row) == set(LOGS.column_names) - STORE_FILLED


def test_every_metric_point_field_lands_in_its_column():
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    _resource(rm.resource)
    sm = rm.scope_metrics.add()
    sm.scope.name, sm.scope.version = "scope-n", "scope-v"
    m = sm.metrics.add(name="lat", description="latency", unit="ms")
    m.histogram.aggregation_temporality = 2
    p = m.histogram.data_points.add(time_unix_nano=11_000_000_001, start_time_unix_nano=10_000_000_000, flags=1,
                                    count=3, sum=6.5, min=0.5, max=4.0, bucket_counts=[1, 2], explicit_bounds=[2.0])
    p.attributes.append(kv("a", "x"))
    p.exemplars.add(as_double=1.25, time_unix_nano=11_000_000_000, trace_id=b"T" * 16, span_id=b"S" * 8)
    b = new_batch("metric_points")
    assert convert_metrics(req, b, Redactor(), Limits(), Stats()) == 1
    row = _row(b)
    assert row == {
        "timestamp": 11, "ts_ns": 11_000_000_001, "start_ns": 10_000_000_000, "service": "svc", "instance": "inst-1",
        "name": "lat", "description": "latency", "unit": "ms", "type": 3, "temporality": 2, "is_monotonic": 0,
        "flags": 1, "attr_keys": ("a",), "attr_values": ["x"], "attr_types": (STR,),
        "resource_keys": RES_KEYS, "resource_values": RES_VALS, "scope_name": "scope-n", "scope_version": "scope-v",
        "value": 0.0, "count": 3, "sum": 6.5, "min": 0.5, "max": 4.0, "bucket_counts": [1, 2],
        "explicit_bounds": [2.0], "exp_scale": 0, "exp_zero_count": 0, "exp_positive_offset": 0,
        "exp_positive_counts": [], "exp_negative_offset": 0, "exp_negative_counts": [], "quantiles": [],
        "quantile_values": [], "exemplar_trace_ids": [b"T" * 16], "exemplar_span_ids": [b"S" * 8],
        "exemplar_values": [1.25], "exemplar_times_ns": [11_000_000_000],
    }
    # the other histogram kinds fill the columns a histogram leaves empty
    e = sm.metrics.add(name="exp").exponential_histogram
    ep = e.data_points.add(count=4, scale=3, zero_count=1)
    ep.positive.offset, ep.negative.offset = -2, 1
    ep.positive.bucket_counts.extend([1, 1])
    ep.negative.bucket_counts.extend([2])
    q = sm.metrics.add(name="sum").summary.data_points.add(count=2, sum=3.0)
    q.quantile_values.add(quantile=0.5, value=1.5)
    b = new_batch("metric_points")
    convert_metrics(req, b, Redactor(), Limits(), Stats())
    _, er, qr = (dict(zip(b.names, r, strict=True)) for r in b.rows)
    assert (er["exp_scale"], er["exp_zero_count"], er["exp_positive_offset"], er["exp_positive_counts"],
            er["exp_negative_offset"], er["exp_negative_counts"]) == (3, 1, -2, [1, 1], 1, [2])
    assert (qr["quantiles"], qr["quantile_values"], qr["count"], qr["sum"]) == ([0.5], [1.5], 2, 3.0)
    assert set(row) == set(METRIC_POINTS.column_names) - STORE_FILLED


def test_layouts_name_what_storage_expects():
    for layout, table in ((SPAN_ROW, SPANS), (LOG_ROW, LOGS), (METRIC_ROW, METRIC_POINTS)):
        assert layout.table is table
        assert sorted(layout.names) == sorted(set(table.column_names) - STORE_FILLED)
    names = [c for c in SPANS.column_names if c != "batch_id"]
    for bad, word in ((names[:-1], "missing"), (names + ["nope"], "unknown"), (names + names[:1], "repeated"),
                      (names + ["batch_id"], "filled by the store")):
        with pytest.raises(ValueError, match=rf"{word} \['") as e:
            SPANS.row_layout(*bad)
        assert "row layout for spans" in str(e.value)
    # any order the producer likes: columns come out by name
    layout = SPANS.row_layout(*reversed(names))
    assert list(layout.columns([tuple(reversed(names))])) == list(reversed(names))
    assert layout.columns([tuple(reversed(names))])["trace_id"] == ["trace_id"]
