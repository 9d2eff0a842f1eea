"""The agent's OTLP exporters: lean encoding, HTTP/protobuf or gRPC, the GIL left to requests.

Spans and metrics are written by :mod:`.otlp_spans`/:mod:`.otlp_metrics` (about a fifth of the
stock encoder's CPU). How an export shares the GIL with the application's requests is chosen by
``TRACEHOUSE_EXPORT_YIELD`` (read when the exporter is built; ``bench/agent_overhead.py
--agent-variants`` compares them in one run):

* ``none`` (default): the export thread encodes a batch in one go (~7.5-9 µs per span, so a
  512-span batch holds the GIL ~4-5 ms once per 512 spans).
* ``switch``: the same with the interpreter's switch interval lowered from 5 ms to 0.5 ms while it
  runs (:func:`gil_share`): GIL waits of another thread under ~0.8 ms, but ~+20 µs p50 per request.
* ``end``: spans are encoded when their local root ends, on the thread that ends it (a server
  span ends after its response went out), see :class:`.batching.LeanBatchSpanProcessor`; the
  export thread only concatenates bytes and sends them (what it still encodes, it encodes as in
  ``requests``): no long GIL hold and the best p99.9, for ~+10-25 µs p50 per request.
* ``requests``: the export thread encodes in slices of :data:`~.otlp_spans.SLICE` spans; between
  two slices :func:`yield_to_requests` sleeps briefly (a waiting thread takes the GIL) and, while
  a request is in flight (:data:`.watchdog.INFLIGHT`), keeps waiting for at most
  :data:`BUSY_MAX_S` (its polling cost ~+70 µs p50 in the bench).

Nine same-run measurements of the bench (three runs each of three sessions; figures in
README.md): ``none`` met the issue's targets (added p50 ≤ 1/10 of stock's, added p99 ≤ 1 ms,
added CPU ≤ 1/8 of stock's) most often, so it is the default.

Logs (a trickle: warnings and snapshots) are encoded by the SDK's own log encoder and sent over
the same transports, so their exports have the same whole-exchange deadline and the same retries.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData, ResourceMetrics
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tracehouse.agent import environment as env
from tracehouse.agent import otlp_metrics, otlp_spans
from tracehouse.agent.config_otlp import GRPC, SignalExport
from tracehouse.agent.forklocks import renew_in_child
from tracehouse.agent.otlp_transport import GrpcTransport, HttpTransport, grpc_available
from tracehouse.agent.sdk_names import LogRecordExporter, LogRecordExportResult
from tracehouse.agent.watchdog import INFLIGHT

__all__ = ["BUSY_MAX_S", "LeanLogExporter", "LeanMetricExporter", "LeanSpanExporter", "PAUSE_S", "SWITCH_S", "gil_share",
           "log_exporter", "metric_preferences", "pause", "span_encoder", "transport", "yield_to_requests"]

PAUSE_S = 0.00005
"""Sleep between two encoding slices (gives the GIL to a thread waiting for it)."""
BUSY_WAIT_S = 0.0005
"""Poll period while requests are in flight."""
BUSY_MAX_S = 0.005
"""Longest wait for in-flight requests between two slices."""
YIELD_VAR = "TRACEHOUSE_EXPORT_YIELD"
YIELD_MODES = ("none", "switch", "end", "requests")
SWITCH_S = 0.0005
"""The interpreter's switch interval while an export runs (the default is 5 ms)."""
_share_lock = threading.Lock()
_share_depth = 0
_share_saved = 0.005


def _share_after_fork() -> None:
    """A child forked while an export ran with the short interval: no export runs in it now."""
    global _share_depth
    if _share_depth and sys.getswitchinterval() == SWITCH_S and _share_saved > SWITCH_S:
        sys.setswitchinterval(_share_saved)
    _share_depth = 0


renew_in_child(globals(), "_share_lock", then=_share_after_fork)

_log = logging.getLogger("tracehouse.agent")
_GRPC_MISSING = ("tracehouse: OTLP/gRPC was asked for ({var}=grpc) but grpcio is not installed "
                 '(pip install "tracehouse[grpc]"); exporting {signal} over HTTP/protobuf to {url} instead')


def pause() -> None:
    time.sleep(PAUSE_S)


def yield_to_requests() -> None:
    """Between two slices of an export: let a waiting thread have the GIL, and wait (bounded)
    while the application serves a request."""
    time.sleep(PAUSE_S)
    if INFLIGHT:
        deadline = time.monotonic() + BUSY_MAX_S
        while INFLIGHT and time.monotonic() < deadline:
            time.sleep(BUSY_WAIT_S)


def yield_mode() -> str:
    raw = (os.environ.get(YIELD_VAR) or "none").strip().lower()
    if raw not in YIELD_MODES:
        env.warn_once(f"{YIELD_VAR}={raw}", f"tracehouse: {YIELD_VAR}={raw!r} is not one of "
                                            f"{', '.join(YIELD_MODES)}; using none")
        return "none"
    return raw


def span_encoder():
    """What the batch processor runs on ended spans: :func:`.otlp_spans.encoded` in ``end`` mode,
    nothing in the others (the export thread encodes)."""
    return otlp_spans.encoded if yield_mode() == "end" else None


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _yielding() -> tuple[Callable[[], object], Callable[[], None] | None]:
    """(context manager around an export, pause after each slice encoded) for the configured mode
    (``end``: for the few spans the export thread still encodes, see :mod:`.batching`)."""
    mode = yield_mode()
    if mode == "switch":
        return gil_share, None
    if mode == "none":
        return _nothing, None
    return _nothing, yield_to_requests


@contextmanager
def gil_share() -> Iterator[None]:
    """Run the body with a 0.5 ms switch interval (nested and concurrent uses share one)."""
    global _share_depth, _share_saved
    with _share_lock:
        if _share_depth == 0:
            _share_saved = sys.getswitchinterval()
            if _share_saved > SWITCH_S:
                sys.setswitchinterval(SWITCH_S)
        _share_depth += 1
    try:
        yield
    finally:
        with _share_lock:
            _share_depth -= 1
            if _share_depth == 0 and sys.getswitchinterval() == SWITCH_S and _share_saved > SWITCH_S:
                sys.setswitchinterval(_share_saved)


def _http_fallback(signal: str, cfg: SignalExport) -> str:
    from tracehouse.agent.config_otlp import DEFAULT_GRPC, DEFAULT_HTTP, SIGNALS

    return (DEFAULT_HTTP if cfg.url == DEFAULT_GRPC else cfg.url.rstrip("/")) + SIGNALS[signal][1]


def transport(signal: str, cfg: SignalExport):
    """The transport for ``signal``: gRPC when asked for and installed, HTTP/protobuf otherwise."""
    if cfg.protocol == GRPC:
        if grpc_available():
            return GrpcTransport(cfg.url, signal, cfg.headers, cfg.timeout, cfg.compression, cfg.insecure,
                                 cfg.certificate)
        url = _http_fallback(signal, cfg)
        env.warn_once(f"grpc missing {signal}", _GRPC_MISSING.format(var=cfg.protocol_from, signal=signal, url=url))
        return HttpTransport(url, cfg.headers, cfg.timeout, cfg.compression, cfg.certificate)
    return HttpTransport(cfg.url, cfg.headers, cfg.timeout, cfg.compression, cfg.certificate)


class LeanSpanExporter(SpanExporter):
    """Spans → lean OTLP bytes → transport. ``resource()``, when given, replaces the spans' own
    resource (a forked worker's identity, without touching the SDK's state)."""

    def __init__(self, transport, resource: Callable[[], object] | None = None):
        self._transport = transport
        self._resource = resource
        self._around, self._pause = _yielding()

    def export(self, spans, timeout_millis: float | None = None) -> SpanExportResult:
        """``spans``: SDK spans, or :class:`~.otlp_spans.EncodedSpan` records (``end`` mode);
        ``timeout_millis``: a shorter bound than the transport's own (a flush's time left)."""
        with self._around():
            self._transport.send(otlp_spans.encode(spans, self._pause,
                                                   resource=self._resource() if self._resource else None),
                                 None if timeout_millis is None else timeout_millis / 1000.0)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._transport.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _temporality():
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    name = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
    raw = (os.environ.get(name) or "cumulative").strip().lower()
    cumulative, delta = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA
    if raw not in ("cumulative", "delta", "lowmemory"):
        env.warn_once(f"{name}={raw}", f"tracehouse: {name}={raw!r} is not supported (cumulative, delta, "
                                       "lowmemory); using cumulative")
        raw = "cumulative"
    if raw == "cumulative":
        return {}
    sync_delta = {Counter: delta, Histogram: delta, ObservableCounter: delta if raw == "delta" else cumulative,
                  UpDownCounter: cumulative, ObservableUpDownCounter: cumulative, ObservableGauge: cumulative}
    if raw == "lowmemory":
        sync_delta[ObservableCounter] = cumulative
    return sync_delta


def _histogram_aggregation():
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

    name = "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION"
    raw = (os.environ.get(name) or "explicit_bucket_histogram").strip().lower()
    if raw == "base2_exponential_bucket_histogram":
        return {Histogram: ExponentialBucketHistogramAggregation()}
    if raw != "explicit_bucket_histogram":
        env.warn_once(f"{name}={raw}", f"tracehouse: {name}={raw!r} is not supported; using "
                                       "explicit_bucket_histogram")
    return {}


class LeanMetricExporter(MetricExporter):
    """Metrics → lean OTLP bytes → transport, stamped with the current resource."""

    def __init__(self, transport, resource: Callable[[], object] | None = None):
        super().__init__(*metric_preferences())
        self._transport = transport
        self._resource = resource
        self._around, self._pause = _yielding()

    def export(self, metrics_data: MetricsData, timeout_millis: float | None = None, **kwargs) -> MetricExportResult:
        """``timeout_millis``: the reader's bound for this export (its export timeout, or a flush's
        time left), kept when shorter than the transport's own."""
        if self._resource is not None:
            res = self._resource()
            metrics_data = MetricsData(resource_metrics=[
                ResourceMetrics(resource=res, scope_metrics=rm.scope_metrics, schema_url=rm.schema_url)
                for rm in metrics_data.resource_metrics])
        with self._around():
            self._transport.send(otlp_metrics.encode(metrics_data, self._pause),
                                 None if timeout_millis is None else timeout_millis / 1000.0)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self._transport.close()


def metric_preferences() -> tuple[dict, dict]:
    """(temporality, aggregation) preferences from the OTLP metrics exporter variables."""
    return _temporality(), _histogram_aggregation()


class LeanLogExporter(LogRecordExporter):
    """Log records → OTLP bytes (the SDK's own encoder) → transport. The stock HTTP exporter's
    timeout bounded each read, not the exchange: a collector answering a byte at a time held the
    log export thread for as long as it liked. Records keep their own resource."""

    def __init__(self, transport):
        self._transport = transport
        self._around, _ = _yielding()

    def export(self, batch) -> LogRecordExportResult:
        from tracehouse.agent.otlp_logs import encoded

        with self._around():
            self._transport.send(encoded(batch))
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        self._transport.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def log_exporter(cfg: SignalExport) -> LeanLogExporter:
    """The log exporter for ``cfg``: the same transports as spans and metrics."""
    return LeanLogExporter(transport("logs", cfg))
