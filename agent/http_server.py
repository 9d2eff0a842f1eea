"""What the lean ASGI and WSGI middlewares share: instruments, traceparent parsing, recording.

The request path is kept short on purpose (the agent's budget is tens of microseconds per
request): one SDK span, one bump of the agent's own duration bucket counters (fed to the SDK
histogram at collection time, see :class:`DurationHistogram`), one active-requests pair, no
propagator lookup.
"""

from __future__ import annotations

import os
import threading
import weakref
from bisect import bisect_left

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
SERVER = SpanKind.SERVER
ERROR_STATUS = Status(StatusCode.ERROR)
_SPAN_KEY = trace._SPAN_KEY if hasattr(trace, "_SPAN_KEY") else None
_KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))


class Instruments:
    """The tracer and the two HTTP server instruments, created once per provider pair."""

    __slots__ = ("tracer", "duration", "active", "__weakref__")

    def __init__(self, tracer_provider=None, meter_provider=None):
        from opentelemetry import metrics

        from tracehouse.agent import __version__

        self.tracer = trace.get_tracer("tracehouse.agent.http", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("tracehouse.agent.http", __version__, meter_provider=meter_provider)
        self.duration = DurationHistogram(meter.create_histogram(
            "http.server.request.duration", unit="s", description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS)))
        self.active = ActiveRequests()
        duration = self.duration

        def observe_active(options):
            # Collection hook too: the SDK runs observable callbacks before it reads its storages.
            duration.flush()
            return self.active.observe(options)

        meter.create_observable_up_down_counter(
            "http.server.active_requests", callbacks=[observe_active], unit="{request}",
            description="Number of active HTTP server requests.")


class ActiveRequests:
    """In-flight requests by method: a plain dict on the request path, observed at collection."""

    __slots__ = ("counts",)

    def __init__(self):
        self.counts: dict[str, int] = {}

    def add(self, n: int, method: str) -> None:
        self.counts[method] = self.counts.get(method, 0) + n

    def observe(self, options):
        from opentelemetry.metrics import Observation

        return [Observation(v, {"http.request.method": m}) for m, v in list(self.counts.items())]


_N = len(DURATION_BUCKETS) + 1
_SUM, _MIN, _MAX = _N, _N + 1, _N + 2
_MAX_SERIES = 2000  # the SDK's default cardinality limit
_OVERFLOW = ("", None, 0, None)


class DurationHistogram:
    """``http.server.request.duration`` without the SDK on the request path.

    :meth:`record` bumps plain per-thread bucket counters (one list per method/route/status/
    error series and thread: no lock, no ``Measurement``, no attribute hashing). :meth:`flush`
    runs at each metric collection (from an observable callback, which the SDK calls before it
    reads its storages) and adds to the SDK histogram's own explicit-bucket aggregations what
    each of them has not seen yet, so views, temporality, cardinality limits, readers and the
    OTLP encoding stay the SDK's. Counts are cumulative per thread and diffed per SDK stream,
    so a flush that reads a cell mid-update only shifts a fraction of a request to the next
    collection. Limitation: under DELTA temporality min/max are those of the process lifetime.

    When the SDK storage does not look like the one this was written against (another SDK
    version, a view with another aggregation or other buckets), it falls back to
    ``Histogram.record`` per request.
    """

    def __init__(self, instrument):
        self.instrument = instrument
        self.direct = False  # True: plain Histogram.record (fallback)
        self._lock = threading.Lock()  # registration of threads/series and flushes only
        self._reset()
        try:
            self.direct = not all(_supported(m) for m in self._matches())
        except Exception:
            self.direct = True
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def after_in_child():
                h = ref()
                if h is not None:
                    h._reset()

            os.register_at_fork(after_in_child=after_in_child)

    def _reset(self) -> None:
        self._local = threading.local()
        self._stores: list[tuple[threading.Thread, dict]] = []
        self._retired: dict[tuple, list] = {}
        self._attrs: dict[tuple, dict] = {_OVERFLOW: {"otel.metric.overflow": True}}
        self._sent: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()

    def record(self, seconds: float, method: str, route: str | None, status: int, error_type: str | None) -> None:
        if self.direct:
            self.instrument.record(seconds, attributes_of(method, route, status, error_type))
            return
        try:
            cells = self._local.cells
        except AttributeError:
            cells = self._register_thread()
        key = (method, route, status, error_type)
        cell = cells.get(key)
        if cell is None:
            cell = self._new_cell(cells, key)
        cell[bisect_left(DURATION_BUCKETS, seconds)] += 1
        cell[_SUM] += seconds
        if seconds < cell[_MIN]:
            cell[_MIN] = seconds
        if seconds > cell[_MAX]:
            cell[_MAX] = seconds

    def _register_thread(self) -> dict:
        cells: dict = {}
        with self._lock:
            self._stores.append((threading.current_thread(), cells))
        self._local.cells = cells
        return cells

    def _new_cell(self, cells: dict, key: tuple) -> list:
        if key not in self._attrs:
            with self._lock:
                if key not in self._attrs:
                    if len(self._attrs) > _MAX_SERIES:
                        key = _OVERFLOW
                    else:
                        self._attrs[key] = attributes_of(*key)
            cell = cells.get(key)
            if cell is not None:
                return cell
        cell = cells[key] = [0] * _N + [0.0, float("inf"), float("-inf")]
        return cell

    def _matches(self) -> list:
        inst = self.instrument
        storages = inst._measurement_consumer._reader_storages
        return [m for storage in list(storages.values()) for m in storage._get_or_init_view_instrument_match(inst)]

    def totals(self) -> dict[tuple, list]:
        """Cumulative cells per series, summed over threads (dead threads' cells folded in)."""
        out: dict[tuple, list] = {}
        with self._lock:
            stores = list(self._stores)
            live = []
            for thread, cells in stores:
                if thread.is_alive():
                    live.append((thread, cells))
                else:
                    _merge(self._retired, cells)
            self._stores = live
            _merge(out, self._retired)
            for _, cells in live:
                _merge(out, cells)
        return out

    def flush(self) -> None:
        """Add what changed since the last flush to each SDK aggregation of the instrument."""
        if self.direct:
            return
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes

        totals = self.totals()
        if not totals:
            return
        for match in self._matches():
            if not _supported(match):
                self.direct = True  # e.g. a reader added later with another aggregation
                return
            sent = self._sent.get(match)
            if sent is None:
                sent = self._sent[match] = {}
            keys = match._view._attribute_keys
            for key, cell in totals.items():
                before = sent.get(key)
                count = sum(cell[:_N])
                if before is not None and before[0] == count:
                    continue
                attrs = self._attrs.get(key) or attributes_of(*key)
                if keys is not None:
                    attrs = {k: v for k, v in attrs.items() if k in keys}
                with match._lock:
                    agg = match._get_or_create_aggregation(_hash_attributes(attrs), attrs)
                with agg._lock:
                    if agg._value is None:
                        agg._value = agg._get_empty_bucket_counts()
                    value = agg._value
                    for i in range(_N):
                        value[i] += cell[i] - (before[1][i] if before else 0)
                    agg._sum += cell[_SUM] - (before[2] if before else 0.0)
                    agg._min = min(agg._min, cell[_MIN])
                    agg._max = max(agg._max, cell[_MAX])
                sent[key] = (count, tuple(cell[:_N]), cell[_SUM])


def _supported(match) -> bool:
    from opentelemetry.sdk.metrics._internal.aggregation import _ExplicitBucketHistogramAggregation

    agg = match._aggregation
    return type(agg) is _ExplicitBucketHistogramAggregation and tuple(agg._boundaries) == DURATION_BUCKETS and \
        hasattr(match, "_get_or_create_aggregation") and hasattr(match, "_lock")


def _merge(into: dict, cells: dict) -> None:
    for key, cell in list(cells.items()):
        cell = list(cell)  # a stable copy: the owning thread may be writing
        have = into.get(key)
        if have is None:
            into[key] = cell
            continue
        for i in range(_N + 1):
            have[i] += cell[i]
        have[_MIN] = min(have[_MIN], cell[_MIN])
        have[_MAX] = max(have[_MAX], cell[_MAX])


def attributes_of(method: str, route: str | None, status: int, error_type: str | None) -> dict:
    attrs = {"http.request.method": method, "http.response.status_code": status}
    if route:
        attrs["http.route"] = route
    if error_type is not None:
        attrs["error.type"] = error_type
    return attrs


_current: Instruments | None = None


def configure(instruments: Instruments | None) -> None:
    global _current
    _current = instruments


def current() -> Instruments:
    global _current
    if _current is None:
        _current = Instruments()
    return _current


def parent_context(traceparent: str | None, tracestate: str | None = None):
    """A context holding the remote parent from a W3C ``traceparent``, or ``None``."""
    if not traceparent or len(traceparent) < 55:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    if parts[0] == "00" and len(parts) != 4:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    state = None
    if tracestate:
        try:
            state = TraceState.from_header([tracestate])
        except Exception:
            state = None
    ctx = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 1), trace_state=state)
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def method_of(raw: str) -> str:
    return raw if raw in _KNOWN_METHODS else "_OTHER"


def split_host(host: str | None, default_port: int | None) -> tuple[str | None, int | None]:
    if not host:
        return None, default_port
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end], host[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    try:
        return name, int(port) if port else default_port
    except ValueError:
        return name, default_port


def finish(inst: Instruments, span, method: str, route: str | None, status: int, start_ns: int, end_ns: int,
           error: BaseException | None) -> None:
    """Set the final attributes, end the span and record the duration (never raises)."""
    error_type = type(error).__qualname__ if error is not None else str(status) if status >= 500 else None
    if span.is_recording():
        if route:
            span.update_name(f"{method} {route}" if method != "_OTHER" else f"HTTP {route}")
        set_attributes(span, attributes_of(method, route, status, error_type))
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        elif status >= 500:
            span.set_status(ERROR_STATUS)
    span.end(end_ns)
    inst.duration.record((end_ns - start_ns) / 1e9, method, route, status, error_type)


def set_attributes(span, attrs: dict) -> None:
    """Add attributes whose types we control (str/int) without the SDK's per-value validation.

    Falls back to ``span.set_attributes`` whenever the span's attribute store is not the SDK's
    plain, unlimited-length ``BoundedAttributes`` or the count limit would be reached.
    """
    store = getattr(span, "_attributes", None)
    if type(store) is BoundedAttributes and store.max_value_len is None and \
            (store.maxlen is None or len(store) + len(attrs) <= store.maxlen) and not span._end_time:
        with store._lock:
            store._dict.update(attrs)
    else:
        span.set_attributes(attrs)


def attach(span, parent):
    return otel_context.attach(trace.set_span_in_context(span, parent))


detach = otel_context.detach
