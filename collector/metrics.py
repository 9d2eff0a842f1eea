"""The collector's own metrics, on ``prometheus_client`` with a registry per collector (no global
registry: several collectors in one test process each count their own).

The small API the collector calls everywhere stays: ``inc(name, n, **labels)``,
``observe(name, value, **labels)``, ``gauge(name, fn)`` (read at scrape time), ``get(name,
**labels)`` and ``render()``. A metric is created on first use with the label names of that call;
its kind, help text and buckets come from ``HELP`` (undeclared names are counters and summaries).
``exposed`` is the registry ``render()`` writes: the collector's own, or the process-wide one the
server composes from every role (so each port's ``/metrics`` shows the whole process).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["Registry", "CONTENT_TYPE", "LATENCY_BUCKETS"]

log = logging.getLogger("tracehouse.collector")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Seconds: from a fast insert (a few ms) to a stalled store.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

HELP: dict[str, tuple[str, str]] = {
    "tracehouse_collector_requests_total": ("counter", "OTLP requests by signal and HTTP status."),
    "tracehouse_collector_received_items_total": ("counter", "Items (spans, data points, log records) received."),
    "tracehouse_collector_accepted_items_total": ("counter", "Items made durable and acknowledged."),
    "tracehouse_collector_rejected_items_total": ("counter", "Items refused, by reason."),
    "tracehouse_collector_rejected_requests_total": ("counter", "Requests refused as a whole, by reason."),
    "tracehouse_collector_dropped_items_total": ("counter", "Acknowledged items the writer could not store."),
    "tracehouse_collector_truncated_total": ("counter", "Attributes, values and names cut to the limits."),
    "tracehouse_collector_written_items_total": ("counter", "Items written to the store."),
    "tracehouse_collector_writer_batches_total": ("counter", "Batches written to the store."),
    "tracehouse_collector_writer_batches_side_by_side_total": ("counter", "Times two batches were stored side by side (a backlog waited)."),
    "tracehouse_collector_writer_errors_total": ("counter", "Failed inserts, by kind."),
    "tracehouse_collector_writer_batches_already_stored_total": (
        "counter", "Replayed or retried batches the store already had (not written twice)."),
    "tracehouse_collector_writer_batch_items": ("summary", "Rows per insert."),
    "tracehouse_collector_writer_batch_seconds": (
        "histogram", "Insert latency: time to store one converted batch (all its inserts and retries)."),
    "tracehouse_collector_writer_convert_seconds": ("histogram", "Time to convert one batch to columns."),
    "tracehouse_collector_duplicate_requests_total": (
        "counter", "Requests whose content was acknowledged before (client retries): answered, not stored again."),
    "tracehouse_collector_duplicate_items_total": ("counter", "Items in those requests."),
    "tracehouse_collector_dead_letter_items_total": (
        "counter", "Acknowledged items the store kept rejecting, kept in dead-letter files."),
    "tracehouse_collector_dead_letter_batches_total": ("counter", "Batch parts written to dead-letter files."),
    "tracehouse_collector_dead_letter_bytes": ("gauge", "Size of the dead-letter files on disk."),
    "tracehouse_collector_store_waiting": (
        "gauge", "1 while the store could not be used since start (unreachable, or its migrations not run): "
        "what arrives is buffered, nothing is written yet."),
    "tracehouse_collector_native_python_requests_total": (
        "counter", "Requests the native decoders left to the Python path (values they do not format), by signal."),
    "tracehouse_collector_native_rewritten_requests_total": (
        "counter", "Requests re-encoded for a native decoder after it refused their batch (fields sent with "
        "another wire type than the schema's), by signal."),
    "tracehouse_collector_native_fallback_batches_total": (
        "counter", "Batch parts a native decoder failed repeatedly, stored through the Python path, by signal."),
    "tracehouse_collector_native_small_batches_total": (
        "counter", "Batches of a native signal stored through the Python path for being small (decoder auto), by signal."),
    "tracehouse_collector_inflight_bytes": (
        "gauge", "Request bytes read or being read and not yet answered (capped by TRACEHOUSE_MAX_INFLIGHT_BYTES)."),
    "tracehouse_collector_buffer_bytes": ("gauge", "Bytes in the durable buffer (WAL) not yet stored."),
    "tracehouse_collector_buffer_max_bytes": ("gauge", "Cap of the durable buffer."),
    "tracehouse_collector_buffer_age_seconds": ("gauge", "Age of the oldest data not yet stored (writer lag)."),
    "tracehouse_collector_wal_fsyncs_total": ("counter", "Group commits (fsyncs) of the WAL."),
    "tracehouse_collector_wal_records_total": ("counter", "Records appended to the WAL."),
}


class _Readings:
    """Gauges and counters whose value a function gives at scrape time. One that cannot be read is
    left out of that scrape (never a failed scrape)."""

    def __init__(self) -> None:
        self.fns: dict[str, Callable[[], float]] = {}

    def collect(self) -> Iterator[Metric]:
        for name, fn in sorted(self.fns.items()):
            kind, text = HELP.get(name, ("gauge", name))
            try:
                value = float(fn())
            except Exception as e:  # noqa: BLE001 - any reader failure only hides this reading
                log.debug("metric %s unreadable: %r", name, e)
                continue
            if kind == "counter":
                yield CounterMetricFamily(name.removesuffix("_total"), text, value=value)
            else:
                yield GaugeMetricFamily(name, text, value=value)


class Registry:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.exposed: CollectorRegistry = self.registry
        self._metrics: dict[str, tuple[tuple[str, ...], object]] = {}
        self._lock = threading.Lock()
        self._readings = _Readings()
        self.registry.register(self._readings)

    def _metric(self, name: str, default_kind: str, labels: dict[str, str]):
        names = tuple(sorted(labels))
        found = self._metrics.get(name)
        if found is None:
            with self._lock:
                found = self._metrics.get(name)
                if found is None:
                    kind, text = HELP.get(name, (default_kind, name))
                    if kind == "counter":
                        m: object = Counter(name, text, names, registry=self.registry)
                    elif kind == "histogram":
                        m = Histogram(name, text, names, registry=self.registry, buckets=LATENCY_BUCKETS)
                    else:
                        m = Summary(name, text, names, registry=self.registry)
                    found = self._metrics[name] = (names, m)
        if found[0] != names:
            raise ValueError(f"metric {name} has labels {found[0]}, not {names}")
        m = found[1]
        return m.labels(**labels) if labels else m  # type: ignore[attr-defined]

    def inc(self, name: str, n: float = 1, **labels: str) -> None:
        self._metric(name, "counter", labels).inc(n)

    def observe(self, name: str, v: float, **labels: str) -> None:
        self._metric(name, "summary", labels).observe(v)

    def gauge(self, name: str, fn: Callable[[], float]) -> None:
        self._readings.fns[name] = fn

    def get(self, name: str, **labels: str) -> float:
        """The sum of the series of ``name`` that carry the given labels (counters and readings)."""
        found = self._metrics.get(name)
        families = list(found[1].collect()) if found else []  # type: ignore[attr-defined]
        if name in self._readings.fns:
            families.extend(f for f in self._readings.collect() if name.startswith(f.name))
        want = set(labels.items())
        return sum(s.value for f in families for s in f.samples
                   if s.name == name and want <= set(s.labels.items()))

    def render(self) -> bytes:
        return generate_latest(self.exposed)
