"""Every use the agent makes of the OpenTelemetry SDK's private state, in one place.

Three shortcuts keep the request path short; each is used only with an SDK release inside
:data:`SUPPORTED` (the range ``tests/agent/test_sdk_private.py`` installs and checks, and
``pyproject.toml`` pins), and each has a public-API fallback for any other release:

* :class:`HistogramStreams` adds pre-counted request durations (bucket counts, sum, min, max
  and exemplars) to the explicit-bucket aggregations of ``http.server.request.duration``. The
  SDK creates each aggregation itself: the first flush of a series records its minimum through
  the public ``Histogram.record`` (a real observation) and adds the rest.
  Fallback: ``Histogram.record`` per request, with the request's span context for exemplars.
* :func:`add_attributes` updates a live span's attribute store in one locked ``dict.update``
  (the values are str/int we built, so the SDK's per-value validation has nothing to do).
  Fallback: ``Span.set_attributes``.
* :func:`update_resource` gives a provider the forked child's resource (a new
  ``service.instance.id``). Spans and metrics do not need it (the agent's exporters stamp the
  current resource); for logs the fallback keeps the parent's resource.

* :func:`counting_log_processor` counts the log records the SDK's batch processor drops when its
  queue is full (it drops the oldest without a count), reading the length of its queue.
  Fallback (no queue found): nothing counted, as before.

One more lives in its own module for its size: :mod:`.server_span` builds the middlewares'
SERVER span as a subclass of the SDK's ``Span`` (its private fields, the tracer's span limits,
scope and processors, the SDK samplers' decisions), only when :func:`supported` says so.
Fallback: ``Tracer.start_span``.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

__all__ = ["SUPPORTED", "HistogramStreams", "add_attributes", "counting_log_processor", "guard_collection_against_fork",
           "sdk_version", "supported",
           "update_resource"]

SUPPORTED = ((1, 30), (1, 46))
"""Lowest SDK release (inclusive) and first release not known (exclusive), as (major, minor)."""

_log = logging.getLogger("tracehouse.agent")
_version: tuple[int, int] | None = None
_override: bool | None = None


def sdk_version() -> tuple[int, int]:
    global _version
    if _version is None:
        try:
            parts = _dist_version("opentelemetry-sdk").split(".")
            _version = (int(parts[0]), int(parts[1]))
        except (PackageNotFoundError, ValueError, IndexError):
            _version = (0, 0)
    return _version


def supported() -> bool:
    if _override is not None:
        return _override
    lo, hi = SUPPORTED
    ok = lo <= sdk_version() < hi
    if not ok:
        from tracehouse.agent import environment

        v = sdk_version()
        environment.warn_once("sdk range", f"tracehouse: opentelemetry-sdk {v[0]}.{v[1]} is outside the range this "
                              f"agent was tested with ({lo[0]}.{lo[1]} to before {hi[0]}.{hi[1]}); it uses the SDK's "
                              "public API only, which costs a few microseconds more per request")
    return ok


def force(value: bool | None) -> None:
    """Tests: pretend the SDK is (True) or is not (False) in the supported range; None resets."""
    global _override
    _override = value


# -- the request-duration histogram -------------------------------------------------------------

class HistogramStreams:
    """The SDK aggregations behind one histogram instrument (one per reader/view), or ``None``
    from :meth:`of` when the private path does not apply."""

    def __init__(self, instrument):
        self.instrument = instrument
        self._found: dict[int, dict] = {}

    @classmethod
    def of(cls, instrument, boundaries: tuple[float, ...]) -> HistogramStreams | None:
        if not supported():
            return None
        try:
            streams = cls(instrument)
            if all(_is_plain_histogram(m, boundaries) for m in streams.matches()):
                return streams
        except Exception as exc:  # an SDK shaped otherwise than the releases we test
            _log.debug("tracehouse: private histogram path unavailable: %r", exc)
        return None

    def matches(self) -> list:
        inst = self.instrument
        storages = inst._measurement_consumer._reader_storages
        return [m for storage in list(storages.values()) for m in storage._get_or_init_view_instrument_match(inst)]

    def still_plain(self, boundaries: tuple[float, ...]) -> bool:
        return all(_is_plain_histogram(m, boundaries) for m in self.matches())

    def find(self, match, attrs: dict):
        """The SDK aggregation of ``attrs`` in ``match`` (filtered by the view), or ``None``."""
        keys = match._view._attribute_keys
        if keys is not None:
            attrs = {k: v for k, v in attrs.items() if k in keys}
        cache = self._found.setdefault(id(match), {})
        ck = tuple(attrs.items())
        table = match._attributes_aggregation
        hit = cache.get(ck)
        if hit is not None and table.get(hit[0]) is hit[1]:
            return hit[1]
        with match._lock:
            for k, agg in list(table.items()):
                if agg._attributes == attrs:
                    cache[ck] = (k, agg)
                    return agg
        return None

    @staticmethod
    def add(agg, buckets: list[int], total: float, lo: float, hi: float,
            exemplars: list[tuple[float, int, int, int]]) -> None:
        """Add ``buckets``/``total`` to an aggregation; ``lo``/``hi`` fold into min/max;
        ``exemplars`` are (value, time ns, trace id, span id) offered to its reservoir."""
        with agg._lock:
            if agg._value is None:
                agg._value = agg._get_empty_bucket_counts()
            value = agg._value
            for i, n in enumerate(buckets):
                if n:
                    value[i] += n
            agg._sum += total
            if getattr(agg, "_record_min_max", True):
                agg._min = min(agg._min, lo)
                agg._max = max(agg._max, hi)
        if exemplars:
            reservoir = getattr(agg, "_reservoir", None)
            if reservoir is not None:
                for v, t, tid, sid in exemplars:
                    reservoir.offer(v, t, agg._attributes, exemplar_context(tid, sid))


def _is_plain_histogram(match, boundaries: tuple[float, ...]) -> bool:
    from opentelemetry.sdk.metrics._internal.aggregation import _ExplicitBucketHistogramAggregation

    agg = match._aggregation
    return type(agg) is _ExplicitBucketHistogramAggregation and tuple(agg._boundaries) == boundaries and \
        isinstance(getattr(match, "_attributes_aggregation", None), dict) and hasattr(match, "_lock")


def exemplar_context(trace_id: int, span_id: int):
    """A context whose current span is the (sampled) request span, for an exemplar."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    return trace.set_span_in_context(NonRecordingSpan(SpanContext(trace_id, span_id, False,
                                                                  TraceFlags(TraceFlags.SAMPLED))))


# -- span attributes ----------------------------------------------------------------------------

def add_attributes(span, attrs: dict) -> None:
    """Add str/int attributes to a live span (the SDK's store directly when that is safe)."""
    if _attributes_fast is None:
        refresh()
    if _attributes_fast:
        store = getattr(span, "_attributes", None)
        if type(store) is _Bounded and store.max_value_len is None and \
                (store.maxlen is None or len(store) + len(attrs) <= store.maxlen) and not span._end_time:
            with store._lock:
                store._dict.update(attrs)
            return
    span.set_attributes(attrs)


def _init_attributes() -> tuple[bool, type | None]:
    if not supported():
        return False, None
    from opentelemetry.attributes import BoundedAttributes

    return True, BoundedAttributes


_attributes_fast: bool | None = None  # decided on first use (no work at import)
_Bounded: type | None = None


def refresh() -> None:
    """Re-read the version decision (at agent start, and in tests after :func:`force`)."""
    global _attributes_fast, _Bounded
    _attributes_fast, _Bounded = _init_attributes()


# -- resources after a fork ---------------------------------------------------------------------

def update_resource(provider, resource) -> bool:
    """Merge ``resource`` into a provider's resource (a forked child's identity)."""
    if supported() and hasattr(provider, "_update_resource"):
        provider._update_resource(resource)
        return True
    return False


# -- no fork in the middle of a metric collection --------------------------------------------------

def guard_collection_against_fork(reader) -> bool:
    """Make a fork wait until the SDK is not collecting metrics through ``reader``.

    A collection holds the SDK's storage and aggregation locks; a process forked while another
    thread holds them (a uWSGI or gunicorn master whose reader thread is collecting) starts with
    them locked for good, and its first request that records a new metric stream waits forever.
    The collection runs under a lock that a before-fork hook takes; the parent releases it and the
    child gets a new one. Call before the reader is given to a MeterProvider (which installs the
    collect callback). Only the collection is guarded, not the export that follows it: an export
    can take the exporter's whole timeout, and a fork must not wait for that. A
    ``PeriodicExportingMetricReader`` exports under its own ``_export_lock``, which its after-fork
    hook does not renew: a child forked while the parent exported would start with it held and
    never export a metric. The child gets a new one."""
    import os
    import threading

    if not hasattr(os, "register_at_fork") or not hasattr(reader, "_set_collect_callback"):
        return False
    state = {"lock": threading.Lock()}
    install = reader._set_collect_callback

    def set_collect_callback(func):
        def collect(*args, **kwargs):
            with state["lock"]:
                return func(*args, **kwargs)

        install(collect)

    reader._set_collect_callback = set_collect_callback

    def child() -> None:
        state["lock"] = threading.Lock()
        if hasattr(reader, "_export_lock"):
            reader._export_lock = threading.Lock()

    os.register_at_fork(before=lambda: state["lock"].acquire(), after_in_parent=lambda: state["lock"].release(),
                        after_in_child=child)
    return True


def counting_log_processor():
    """The SDK's ``BatchLogRecordProcessor``, counting ``logs.dropped.queue_full``.

    When its queue is full the SDK's processor drops the oldest record (a bounded deque) and
    counts nothing the agent can report, so a burst of host log records or snapshots past the
    queue vanished from ``stats()``. The queue is ``_queue`` up to SDK 1.3x and
    ``_batch_processor._queue`` since; records arrive through ``emit`` (older) or ``on_emit``."""
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    from tracehouse.agent import counters

    def full(proc) -> bool:
        inner = getattr(proc, "_batch_processor", proc)
        if getattr(inner, "_shutdown", False):  # the record is refused, not queued
            return False
        q = getattr(inner, "_queue", None)
        maxlen = getattr(q, "maxlen", None)
        return maxlen is not None and len(q) >= maxlen  # type: ignore[arg-type]

    name = "on_emit" if hasattr(BatchLogRecordProcessor, "on_emit") else "emit"
    parent = getattr(BatchLogRecordProcessor, name)

    def emit(self, record) -> None:
        if full(self):
            counters.add("logs.dropped.queue_full")
        return parent(self, record)

    return type("CountingBatchLogRecordProcessor", (BatchLogRecordProcessor,), {name: emit})
