"""Exporters wrapped so that the host never pays for a broken collector.

Each wrapper builds its real OTLP exporter lazily through a factory, re-creates it in a
forked child (an HTTP connection pool must not be shared across processes), swallows every
failure at the export boundary, counts dropped items with a reason, and stops trying for a
growing pause after a failure (a circuit breaker), so that a dead or hung collector costs one
timed-out request per pause, and a shutdown never waits for more than one.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tracehouse.agent import counters, errors
from tracehouse.agent.otlp_transport import ExportFailed
from tracehouse.agent.sdk_names import LogRecordExporter, LogRecordExportResult

__all__ = ["ExportFailed", "GuardedLogExporter", "GuardedMetricExporter", "GuardedSpanExporter", "otlp_factories"]

MAX_PAUSE = 30.0


class _Guard:
    """Fork-aware, failure-absorbing holder of one real exporter."""

    def __init__(self, signal: str, factory: Callable[[], object]):
        self.signal = signal
        self._factory = factory
        self._inner = None
        self._pid = -1
        self._lock = threading.Lock()
        self._failures = 0
        self._paused_until = 0.0
        self._shutdown = False

    def inner(self):
        pid = os.getpid()
        if self._inner is None or self._pid != pid:
            self._inner = self._factory()
            self._pid = pid
            self._failures = 0
            self._paused_until = 0.0
        return self._inner

    def run(self, n: int, call: Callable[[object], bool]) -> bool:
        if self._shutdown:
            counters.add(f"{self.signal}.dropped.shutdown", n)
            return False
        if time.monotonic() < self._paused_until:
            counters.add(f"{self.signal}.dropped.collector_unavailable", n)
            return False
        try:
            ok = call(self.inner())
            err: BaseException | None = None if ok else ExportFailed(f"{self.signal} export was not accepted")
        except Exception as exc:
            ok, err = False, exc
        if ok:
            self._failures = 0
            counters.add(f"{self.signal}.exported", n)
            return True
        self._failures += 1
        self._paused_until = time.monotonic() + min(MAX_PAUSE, 2.0 ** (self._failures - 1))
        counters.add(f"{self.signal}.dropped.export_failed", n)
        errors.swallow(f"export {self.signal}", err)
        return False

    def shutdown(self) -> None:
        self._shutdown = True
        inner = self._inner
        if inner is not None and self._pid == os.getpid():
            try:
                inner.shutdown()
            except Exception as exc:
                errors.swallow(f"shutdown {self.signal} exporter", exc)


def takes_timeout(export: Callable) -> bool:
    """Whether an exporter's ``export`` takes ``timeout_millis`` (the SDK's span exporters do not)."""
    try:
        return "timeout_millis" in inspect.signature(export).parameters
    except (TypeError, ValueError):
        return False


def export_within(exporter, batch: Sequence, timeout_millis: float | None):
    """``exporter.export(batch)``, given ``timeout_millis`` when it is set and the exporter takes it."""
    if timeout_millis is not None and takes_timeout(exporter.export):
        return exporter.export(batch, timeout_millis=timeout_millis)
    return exporter.export(batch)


class GuardedSpanExporter(SpanExporter):
    def __init__(self, factory: Callable[[], SpanExporter]):
        self._guard = _Guard("spans", factory)

    def export(self, spans: Sequence, timeout_millis: float | None = None) -> SpanExportResult:
        """``timeout_millis``: a shorter bound on this export than the exporter's own (a flush's
        time left), passed on when the real exporter takes it."""
        ok = self._guard.run(len(spans),
                             lambda e: export_within(e, spans, timeout_millis) == SpanExportResult.SUCCESS)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._guard.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class GuardedLogExporter(LogRecordExporter):
    def __init__(self, factory: Callable[[], LogRecordExporter]):
        self._guard = _Guard("logs", factory)

    def export(self, batch: Sequence) -> LogRecordExportResult:
        ok = self._guard.run(len(batch), lambda e: e.export(batch) == LogRecordExportResult.SUCCESS)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        self._guard.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class GuardedMetricExporter(MetricExporter):
    """Takes the temporality and aggregation preferences of the exporter it wraps."""

    def __init__(self, factory: Callable[[], MetricExporter], temporality: dict | None = None,
                 aggregation: dict | None = None):
        super().__init__(preferred_temporality=temporality, preferred_aggregation=aggregation)
        self._guard = _Guard("metrics", factory)

    def export(self, metrics_data: MetricsData, timeout_millis: float | None = None, **kwargs) -> MetricExportResult:
        n = sum(len(sm.metrics) for rm in metrics_data.resource_metrics for sm in rm.scope_metrics)
        # the reader's bound for this export (its export timeout, or a flush's time left)
        ok = self._guard.run(n, lambda e: export_within(e, metrics_data, timeout_millis) == MetricExportResult.SUCCESS)
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self._guard.shutdown()


def otlp_factories(exports: dict, resource: Callable[[], object] | None = None) -> dict[str, Callable[[], object]]:
    """Factories of the agent's OTLP exporters, one per signal (see :mod:`.otlp_exporters`)."""
    from tracehouse.agent import otlp_exporters as ox

    def spans():
        return ox.LeanSpanExporter(ox.transport("spans", exports["spans"]), resource)

    def metrics():
        return ox.LeanMetricExporter(ox.transport("metrics", exports["metrics"]), resource)

    def logs():
        return ox.log_exporter(exports["logs"])

    return {"spans": spans, "metrics": metrics, "logs": logs}
