"""``tracehouse serve --self-observe``: the server's own traces and metrics, sent over OTLP/HTTP to
its own collector, so the product's pages show its own health under the reserved service name
``tracehouse``.

* Traces: an OpenTelemetry SDK tracer provider of its own (never the global one) with a batch
  processor and the OTLP/HTTP exporter. What it traces: dashboard and API requests (by route), alert
  group and rule evaluations, retention runs, and inside them every storage statement (a client
  span per ClickHouse query, only under such a parent: the ingest path is not traced).
* Metrics: every ``interval_s`` the process's Prometheus registry (all roles) is read and sent as
  OTLP metrics: counters as cumulative monotonic sums, gauges as gauges, histograms with their
  buckets, summaries as summaries.

Both leave through the collector's front door (the durable buffer, the same conversion as any
client), with the ingestion token when one is configured.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from . import __version__

__all__ = ["SELF_SERVICE", "SelfObserver", "metrics_request"]

log = logging.getLogger("tracehouse.self_observe")

SELF_SERVICE = "tracehouse"
TIMEOUT_S = 5.0


def _resource_attrs() -> dict[str, str]:
    return {"service.name": SELF_SERVICE, "service.version": __version__,
            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}", "telemetry.sdk.language": "python"}


def _attrs(labels: dict[str, str]) -> list:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    return [KeyValue(key=k, value=AnyValue(string_value=str(v))) for k, v in sorted(labels.items())]


def _counter(metric, fam, start_ns: int, now_ns: int, temporality: int) -> None:
    metric.sum.aggregation_temporality, metric.sum.is_monotonic = temporality, True
    for s in fam.samples:
        if s.name.endswith("_total"):
            metric.name = s.name
            metric.sum.data_points.add(start_time_unix_nano=start_ns, time_unix_nano=now_ns,
                                       as_double=s.value, attributes=_attrs(s.labels))


def _series(samples, drop: str = "") -> dict[tuple, dict[str, Any]]:
    """Samples grouped by their labels (less ``drop``): labels, ``_count``, ``_sum`` and buckets."""
    series: dict[tuple, dict[str, Any]] = {}
    for s in samples:
        labels = {k: v for k, v in s.labels.items() if k != drop}
        d = series.setdefault(tuple(sorted(labels.items())), {"labels": labels, "buckets": []})
        if s.name.endswith("_bucket"):
            d["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            d["count"] = s.value
        elif s.name.endswith("_sum"):
            d["sum"] = s.value
    return series


def _histogram(metric, fam, start_ns: int, now_ns: int, temporality: int) -> None:
    metric.histogram.aggregation_temporality = temporality
    for d in _series(fam.samples, drop="le").values():
        bounds = sorted(d["buckets"])
        counts, prev = [], 0.0
        for _, cum in bounds:  # Prometheus buckets are cumulative, OTLP's are not
            counts.append(int(cum - prev))
            prev = cum
        metric.histogram.data_points.add(
            start_time_unix_nano=start_ns, time_unix_nano=now_ns, count=int(d.get("count", prev)),
            sum=d.get("sum", 0.0), bucket_counts=counts,
            explicit_bounds=[b for b, _ in bounds if b != float("inf")], attributes=_attrs(d["labels"]))


def _summary(metric, fam, start_ns: int, now_ns: int, temporality: int) -> None:
    for d in _series(fam.samples).values():
        metric.summary.data_points.add(start_time_unix_nano=start_ns, time_unix_nano=now_ns,
                                       count=int(d.get("count", 0)), sum=d.get("sum", 0.0),
                                       attributes=_attrs(d["labels"]))


def _gauge(metric, fam, start_ns: int, now_ns: int, temporality: int) -> None:
    """Gauge, info, stateset, unknown: the sample values as they are."""
    for s in fam.samples:
        if not s.name.endswith("_created"):
            metric.name = s.name
            metric.gauge.data_points.add(time_unix_nano=now_ns, as_double=s.value, attributes=_attrs(s.labels))


_BY_TYPE = {"counter": _counter, "histogram": _histogram, "summary": _summary}


def metrics_request(registry: CollectorRegistry, start_ns: int, now_ns: int):
    """The registry's current samples as one ``ExportMetricsServiceRequest`` (pure)."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(_attrs(_resource_attrs()))
    sm = rm.scope_metrics.add()
    sm.scope.name, sm.scope.version = "tracehouse.self_observe", __version__
    cumulative = m.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    for fam in registry.collect():
        metric = m.Metric(name=fam.name, description=fam.documentation[:500], unit=fam.unit or "")
        _BY_TYPE.get(fam.type, _gauge)(metric, fam, start_ns, now_ns, cumulative)
        kind = metric.WhichOneof("data")
        if kind is not None and len(getattr(metric, kind).data_points):
            sm.metrics.append(metric)
    return req


class SelfObserver:
    """Background: the tracer provider (``tracer`` for the roles to use) and the metric sender."""

    def __init__(self, endpoint: str, registry: CollectorRegistry, headers: dict[str, str] | None = None,
                 interval_s: float = 15.0, own: CollectorRegistry | None = None):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.endpoint, self.registry, self.headers = endpoint.rstrip("/"), registry, dict(headers or {})
        self.interval_s = interval_s
        self.provider = TracerProvider(resource=Resource.create(_resource_attrs()))
        self._spans = _CountingExporter(OTLPSpanExporter(endpoint=self.endpoint + "/v1/traces", headers=self.headers,
                                                         timeout=TIMEOUT_S), self)
        self.provider.add_span_processor(BatchSpanProcessor(self._spans, max_queue_size=2048))
        self.tracer = self.provider.get_tracer("tracehouse.server", __version__)
        self.start_ns = time.time_ns()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        reg = own or registry
        self.exported = Counter("tracehouse_self_observe_exported", "Items of its own telemetry the server sent.",
                                ["signal"], registry=reg)
        self.failed = Counter("tracehouse_self_observe_failures", "Failed sends of the server's own telemetry.",
                              ["signal"], registry=reg)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="tracehouse-self-observe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sending. Called once the servers stopped: what is still queued is dropped, not sent
        to a collector that no longer listens (the server's own telemetry is best effort)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=TIMEOUT_S + 1)
            self._thread = None
        self._spans.closed = True
        self.provider.shutdown()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.send_metrics()

    def send_metrics(self) -> int:
        import httpx

        req = metrics_request(self.registry, self.start_ns, time.time_ns())
        points = sum(len(getattr(mt, mt.WhichOneof("data")).data_points)
                     for rm in req.resource_metrics for sm in rm.scope_metrics for mt in sm.metrics)
        try:
            r = httpx.post(self.endpoint + "/v1/metrics", content=req.SerializeToString(), timeout=TIMEOUT_S,
                           headers={"content-type": "application/x-protobuf", **self.headers}, trust_env=False)
            ok = r.status_code == 200
        except httpx.HTTPError as e:
            log.info("self-observe: metrics not sent: %s", e)
            ok = False
        if ok:
            self.exported.labels(signal="metrics").inc(points)
        else:
            self.failed.labels(signal="metrics").inc()
        return points if ok else 0


class _CountingExporter:
    """The OTLP span exporter, counting what it sent into the observer's metrics."""

    def __init__(self, inner: Any, owner: SelfObserver):
        self.inner, self.owner = inner, owner
        self.closed = False

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self.closed:
            return SpanExportResult.FAILURE
        result = self.inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            self.owner.exported.labels(signal="traces").inc(len(spans))
        else:
            self.owner.failed.labels(signal="traces").inc()
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
