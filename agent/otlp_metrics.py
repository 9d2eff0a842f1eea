"""``ExportMetricsServiceRequest`` bytes from the SDK's ``MetricsData``, written directly.

Same content as the stock ``encode_metrics(...).SerializeToString()`` (compared in the tests),
exemplars included (trace and span id of a sampled request, which is how the dashboard jumps
from a latency point to its trace). ``pause()`` runs between metrics, as in :mod:`.otlp_spans`.
"""

from __future__ import annotations

from collections.abc import Callable

from tracehouse.agent.otlp_wire import (
    attributes,
    double,
    fixed64,
    ld,
    packed_double,
    packed_fixed64,
    resource,
    scope,
    sfixed64,
    string,
    tag,
    varint,
)

__all__ = ["encode"]

_L1, _L2, _L3 = tag(1, 2), tag(2, 2), tag(3, 2)
# Metric: name 1, description 2, unit 3, gauge 5, sum 7, histogram 9, exponential_histogram 10
_GAUGE, _SUM, _HIST, _EXPO = tag(5, 2), tag(7, 2), tag(9, 2), tag(10, 2)
_TEMPORALITY, _MONOTONIC = tag(2, 0), tag(3, 0)
# NumberDataPoint: start 2, time 3, as_double 4, exemplars 5, as_int 6, attributes 7, flags 8
_F2_64, _F3_64, _F4_D, _F4_64 = tag(2, 1), tag(3, 1), tag(4, 1), tag(4, 1)
_NDP_EX, _NDP_INT, _NDP_ATTRS, _NDP_FLAGS = tag(5, 2), tag(6, 1), tag(7, 2), tag(8, 0)
# HistogramDataPoint: count 4, sum 5, bucket_counts 6, explicit_bounds 7, exemplars 8, attributes 9,
# flags 10, min 11, max 12
_H_SUM, _H_BUCKETS, _H_BOUNDS, _H_EX, _H_ATTRS = tag(5, 1), tag(6, 2), tag(7, 2), tag(8, 2), tag(9, 2)
_H_FLAGS, _H_MIN, _H_MAX = tag(10, 0), tag(11, 1), tag(12, 1)
# ExponentialHistogramDataPoint: attributes 1, start 2, time 3, count 4, sum 5, scale 6 (sint32),
# zero_count 7, positive 8, negative 9, flags 10, exemplars 11, min 12, max 13, zero_threshold 14
_E_SCALE, _E_ZERO, _E_POS, _E_NEG, _E_FLAGS = tag(6, 0), tag(7, 1), tag(8, 2), tag(9, 2), tag(10, 0)
_E_EX, _E_MIN, _E_MAX, _E_ZT = tag(11, 2), tag(12, 1), tag(13, 1), tag(14, 1)
# Exemplar: time 2, as_double 3, span_id 4, trace_id 5, as_int 6, filtered_attributes 7
_X_DOUBLE, _X_SPAN, _X_TRACE, _X_INT, _X_ATTRS = tag(3, 1), tag(4, 2), tag(5, 2), tag(6, 1), tag(7, 2)
_V1, _V2 = tag(1, 0), tag(2, 2)


def _zigzag32(n: int) -> int:
    return (n << 1) ^ (n >> 31)


def _exemplars(tag_bytes: bytes, exemplars) -> bytes:
    out = []
    for e in exemplars or ():
        body = attributes(_X_ATTRS, e.filtered_attributes) + fixed64(_F2_64, e.time_unix_nano)
        v = e.value
        if isinstance(v, float):
            body += double(_X_DOUBLE, v)
        elif isinstance(v, int):
            body += sfixed64(_X_INT, v)
        else:
            raise ValueError("Exemplar value must be an int or float")
        if e.span_id is not None and e.trace_id is not None:
            body += ld(_X_SPAN, e.span_id.to_bytes(8, "big")) + ld(_X_TRACE, e.trace_id.to_bytes(16, "big"))
        out.append(ld(tag_bytes, body))
    return b"".join(out)


def _number_point(p, with_start: bool) -> bytes:
    body = attributes(_NDP_ATTRS, p.attributes)
    if with_start and p.start_time_unix_nano:
        body += fixed64(_F2_64, p.start_time_unix_nano)
    if p.time_unix_nano:
        body += fixed64(_F3_64, p.time_unix_nano)
    v = p.value
    body += sfixed64(_NDP_INT, v) if isinstance(v, int) else double(_F4_D, v)
    return body + _exemplars(_NDP_EX, p.exemplars)


def _hist_point(p) -> bytes:
    body = attributes(_H_ATTRS, p.attributes)
    if p.start_time_unix_nano:
        body += fixed64(_F2_64, p.start_time_unix_nano)
    if p.time_unix_nano:
        body += fixed64(_F3_64, p.time_unix_nano)
    if p.count:
        body += fixed64(_F4_64, p.count)
    if p.sum is not None:
        body += double(_H_SUM, p.sum)
    body += packed_fixed64(_H_BUCKETS, p.bucket_counts) + packed_double(_H_BOUNDS, p.explicit_bounds)
    body += _exemplars(_H_EX, p.exemplars)
    if p.min is not None:
        body += double(_H_MIN, p.min)
    if p.max is not None:
        body += double(_H_MAX, p.max)
    return body


def _buckets(tag_bytes: bytes, b) -> bytes:
    if not b.bucket_counts:
        return b""
    body = (_V1 + varint(_zigzag32(b.offset)) if b.offset else b"") + \
        ld(_V2, b"".join(varint(c) for c in b.bucket_counts))
    return ld(tag_bytes, body)


def _expo_point(p) -> bytes:
    body = attributes(_L1, p.attributes)
    if p.start_time_unix_nano:
        body += fixed64(_F2_64, p.start_time_unix_nano)
    if p.time_unix_nano:
        body += fixed64(_F3_64, p.time_unix_nano)
    if p.count:
        body += fixed64(_F4_64, p.count)
    if p.sum is not None:
        body += double(_H_SUM, p.sum)
    if p.scale:
        body += _E_SCALE + varint(_zigzag32(p.scale))
    if p.zero_count:
        body += fixed64(_E_ZERO, p.zero_count)
    body += _buckets(_E_POS, p.positive) + _buckets(_E_NEG, p.negative)
    if p.flags:
        body += _E_FLAGS + varint(p.flags)
    body += _exemplars(_E_EX, p.exemplars)
    if p.min is not None:
        body += double(_E_MIN, p.min)
    if p.max is not None:
        body += double(_E_MAX, p.max)
    return body


def _data(metric) -> bytes:
    data = metric.data
    kind = type(data).__name__
    points = data.data_points
    if kind == "Gauge":
        return ld(_GAUGE, b"".join(ld(_L1, _number_point(p, False)) for p in points))
    temporality = getattr(data, "aggregation_temporality", None)
    temp = _TEMPORALITY + varint(int(temporality)) if temporality else b""
    if kind == "Sum":
        mono = _MONOTONIC + b"\x01" if data.is_monotonic else b""
        return ld(_SUM, b"".join(ld(_L1, _number_point(p, True)) for p in points) + temp + mono)
    if kind == "Histogram":
        return ld(_HIST, b"".join(ld(_L1, _hist_point(p)) for p in points) + temp)
    if kind == "ExponentialHistogram":
        return ld(_EXPO, b"".join(ld(_L1, _expo_point(p)) for p in points) + temp)
    return b""  # an unknown point type: the metric goes out with its name only, as the stock encoder does


def encode_metric(metric) -> bytes:
    body = string(_L1, metric.name) if metric.name else b""
    if metric.description:
        body += string(_L2, metric.description)
    if metric.unit:
        body += string(_L3, metric.unit)
    return body + _data(metric)


def encode(metrics_data, pause: Callable[[], None] | None = None) -> bytes:
    out = []
    for rm in metrics_data.resource_metrics:
        body = [ld(_L1, resource(rm.resource))]
        for sm in rm.scope_metrics:
            sc = sm.scope
            parts = [ld(_L1, scope(sc))]
            for m in sm.metrics:
                parts.append(ld(_L2, encode_metric(m)))
                if pause is not None:
                    pause()
            schema = getattr(sc, "schema_url", "") or ""
            if schema:
                parts.append(string(_L3, schema))
            body.append(ld(_L2, b"".join(parts)))
        schema = getattr(rm.resource, "schema_url", "") or ""
        if schema:
            body.append(string(_L3, schema))
        out.append(ld(_L1, b"".join(body)))
    return b"".join(out)
