"""What ``--self-observe`` sends for each kind of Prometheus metric (``metrics_request``, pure)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, Summary

from tracehouse.self_observe import metrics_request


def _points(registry: CollectorRegistry) -> dict[str, tuple[str, list]]:
    req = metrics_request(registry, 10, 20)
    (rm,) = req.resource_metrics
    assert {a.key: a.value.string_value for a in rm.resource.attributes}["service.name"] == "tracehouse"
    out = {}
    for metric in rm.scope_metrics[0].metrics:
        kind = metric.WhichOneof("data")
        out[metric.name] = (kind, getattr(metric, kind))
    return out


def test_every_prometheus_type_becomes_its_otlp_counterpart():
    r = CollectorRegistry()
    c = Counter("requests", "d", ["route"], registry=r)
    c.labels("/a").inc(3)
    c.labels("/b").inc()
    h = Histogram("latency_seconds", "d", ["route"], buckets=(0.1, 1, 5), registry=r)
    for v in (0.05, 0.5, 0.7, 3, 10):
        h.labels("/a").observe(v)
    s = Summary("size_bytes", "d", registry=r)
    s.observe(4)
    s.observe(6)
    Gauge("queue", "d", registry=r).set(7)
    Info("build", "d", registry=r).info({"version": "1.2"})
    Counter("unused", "d", ["x"], registry=r)  # no series yet: not sent

    got = _points(r)
    assert set(got) == {"requests_total", "latency_seconds", "size_bytes", "queue", "build_info"}

    kind, total = got["requests_total"]
    assert kind == "sum" and total.is_monotonic and total.aggregation_temporality == 2  # cumulative
    assert {p.attributes[0].value.string_value: p.as_double for p in total.data_points} == {"/a": 3.0, "/b": 1.0}
    assert {(p.start_time_unix_nano, p.time_unix_nano) for p in total.data_points} == {(10, 20)}

    kind, hist = got["latency_seconds"]
    (p,) = hist.data_points
    assert kind == "histogram" and hist.aggregation_temporality == 2
    # Prometheus buckets are cumulative (1, 3, 4, 5 up to +Inf); OTLP's count each bucket alone
    assert list(p.explicit_bounds) == [0.1, 1.0, 5.0] and list(p.bucket_counts) == [1, 2, 1, 1]
    assert p.count == 5 and p.sum == 14.25
    assert [(a.key, a.value.string_value) for a in p.attributes] == [("route", "/a")]

    kind, summ = got["size_bytes"]
    assert kind == "summary" and [(q.count, q.sum) for q in summ.data_points] == [(2, 10.0)]

    kind, gauge = got["queue"]
    assert kind == "gauge" and [q.as_double for q in gauge.data_points] == [7.0]
    kind, info = got["build_info"]
    assert kind == "gauge" and [(a.key, a.value.string_value) for a in info.data_points[0].attributes] == [
        ("version", "1.2")]
