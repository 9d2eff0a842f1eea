"""OTLP protobuf bodies of countless empty elements, written at the wire level: each shape fills
about ``size`` bytes with one repeated message field's empty elements (``tag 00``) at one level of a
request, every outer level holding one element. Field numbers come from the generated descriptors."""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_ROOTS = {"traces": ExportTraceServiceRequest, "metrics": ExportMetricsServiceRequest,
          "logs": ExportLogsServiceRequest}

#: shape name → (signal, field path from the request; the last field's elements are repeated)
SHAPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "resource_spans": ("traces", ("resource_spans",)),
    "scope_spans": ("traces", ("resource_spans", "scope_spans")),
    "spans": ("traces", ("resource_spans", "scope_spans", "spans")),
    "span_attributes": ("traces", ("resource_spans", "scope_spans", "spans", "attributes")),
    "span_events": ("traces", ("resource_spans", "scope_spans", "spans", "events")),
    "span_links": ("traces", ("resource_spans", "scope_spans", "spans", "links")),
    "resource_attributes": ("traces", ("resource_spans", "resource", "attributes")),
    "log_records": ("logs", ("resource_logs", "scope_logs", "log_records")),
    "metrics": ("metrics", ("resource_metrics", "scope_metrics", "metrics")),
    "gauge_points": ("metrics", ("resource_metrics", "scope_metrics", "metrics", "gauge", "data_points")),
    "histogram_points": ("metrics", ("resource_metrics", "scope_metrics", "metrics", "histogram", "data_points")),
    "exemplars": ("metrics", ("resource_metrics", "scope_metrics", "metrics", "sum", "data_points", "exemplars")),
    # inside a span, a log record or a data point
    "event_attributes": ("traces", ("resource_spans", "scope_spans", "spans", "events", "attributes")),
    "link_attributes": ("traces", ("resource_spans", "scope_spans", "spans", "links", "attributes")),
    "array_values": ("traces", ("resource_spans", "scope_spans", "spans", "attributes", "value", "array_value",
                                "values")),
    "kvlist_values": ("traces", ("resource_spans", "scope_spans", "spans", "attributes", "value", "kvlist_value",
                                 "values")),
    "log_attributes": ("logs", ("resource_logs", "scope_logs", "log_records", "attributes")),
    "gauge_point_attributes": ("metrics", ("resource_metrics", "scope_metrics", "metrics", "gauge", "data_points",
                                           "attributes")),
    "histogram_point_attributes": ("metrics", ("resource_metrics", "scope_metrics", "metrics", "histogram",
                                               "data_points", "attributes")),
    "exponential_histogram_point_attributes": ("metrics", ("resource_metrics", "scope_metrics", "metrics",
                                                           "exponential_histogram", "data_points", "attributes")),
    "summary_point_attributes": ("metrics", ("resource_metrics", "scope_metrics", "metrics", "summary",
                                             "data_points", "attributes")),
    "exemplar_attributes": ("metrics", ("resource_metrics", "scope_metrics", "metrics", "sum", "data_points",
                                        "exemplars", "filtered_attributes")),
}


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _numbers(signal: str, path: tuple[str, ...]) -> list[int]:
    desc = _ROOTS[signal].DESCRIPTOR
    out = []
    for name in path:
        f = desc.fields_by_name[name]
        out.append(f.number)
        desc = f.message_type
    return out


def empty_elements(shape: str, size: int, payload: bytes = b"") -> tuple[str, bytes]:
    """(signal, a protobuf body of about ``size`` bytes) for one of ``SHAPES``; ``payload``: what
    each element holds instead of nothing (``08 00``: one unknown field)."""
    signal, path = SHAPES[shape]
    nums = _numbers(signal, path)
    one = field(nums[-1], payload)
    body = one * max(1, (size - 16) // len(one))
    for n in reversed(nums[:-1]):
        body = field(n, body)
    return signal, body
