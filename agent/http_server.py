"""What the lean ASGI and WSGI middlewares share: instruments, traceparent parsing, recording.

The request path is kept short on purpose (the agent's budget is tens of microseconds per
request): one SDK span, one histogram record, one up-down counter pair, no propagator lookup.
"""

from __future__ import annotations

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
        self.duration = meter.create_histogram(
            "http.server.request.duration", unit="s", description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))
        self.active = ActiveRequests()
        meter.create_observable_up_down_counter(
            "http.server.active_requests", callbacks=[self.active.observe], unit="{request}",
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
    attrs = {"http.request.method": method, "http.response.status_code": status}
    if route:
        attrs["http.route"] = route
    if error is not None:
        attrs["error.type"] = type(error).__qualname__
    elif status >= 500:
        attrs["error.type"] = str(status)
    if span.is_recording():
        if route:
            span.update_name(f"{method} {route}" if method != "_OTHER" else f"HTTP {route}")
        set_attributes(span, attrs)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        elif status >= 500:
            span.set_status(ERROR_STATUS)
    span.end(end_ns)
    inst.duration.record((end_ns - start_ns) / 1e9, attrs)


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
