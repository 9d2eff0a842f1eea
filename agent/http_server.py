"""What the lean ASGI and WSGI middlewares share: instruments, context extraction, recording.

The request path is kept short on purpose (the agent's budget is tens of microseconds per
request): one SDK span, one bump of the agent's own duration bucket counters (fed to the SDK
histogram at collection time, see :mod:`.duration`), one active-requests pair, and W3C
``traceparent`` parsed here unless ``OTEL_PROPAGATORS`` asks for other formats (then the
configured propagator extracts).
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from tracehouse.agent import server_span
from tracehouse.agent.duration import DURATION_BUCKETS, DurationHistogram, attributes_of
from tracehouse.agent.sdk_private import add_attributes

__all__ = ["DURATION_BUCKETS", "DurationHistogram", "Instruments", "attributes_of", "configure",
           "configure_propagation", "current", "finish", "parent_context"]

SERVER = SpanKind.SERVER
ERROR_STATUS = Status(StatusCode.ERROR)
KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))


class Instruments:
    """The tracer and the two HTTP server instruments, created once per provider pair."""

    __slots__ = ("tracer", "spans", "duration", "active", "__weakref__")

    def __init__(self, tracer_provider=None, meter_provider=None, exemplar_filter: str = "trace_based"):
        from opentelemetry import metrics

        from tracehouse.agent import __version__

        self.tracer = trace.get_tracer("tracehouse.agent.http", __version__, tracer_provider=tracer_provider)
        self.spans = server_span.ServerSpans(self.tracer)
        meter = metrics.get_meter("tracehouse.agent.http", __version__, meter_provider=meter_provider)
        self.duration = DurationHistogram(meter.create_histogram(
            "http.server.request.duration", unit="s", description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS)), exemplar_filter)
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


class Propagation:
    """How the middlewares read an incoming context: ``w3c`` (our own parse of ``traceparent``,
    plus the baggage propagator when a ``baggage`` header came and baggage is configured),
    ``textmap`` (the configured propagator, for b3 and others) or ``none``."""

    __slots__ = ("mode", "baggage", "textmap")

    def __init__(self, mode: str = "w3c", baggage: bool = True, textmap=None):
        self.mode, self.baggage, self.textmap = mode, baggage, textmap


PROPAGATION = Propagation()


def configure_propagation(names: tuple[str, ...], textmap) -> None:
    global PROPAGATION
    if not names:
        PROPAGATION = Propagation("none", False, None)
    elif set(names) <= {"tracecontext", "baggage"}:
        PROPAGATION = Propagation("w3c" if "tracecontext" in names else "none", "baggage" in names, textmap)
        if PROPAGATION.mode == "none" and PROPAGATION.baggage:
            PROPAGATION = Propagation("textmap", True, textmap)
    else:
        PROPAGATION = Propagation("textmap", "baggage" in names, textmap)


def extract(carrier: dict):
    """A context from ``carrier`` (lower-case header names) through the configured propagator."""
    ctx = PROPAGATION.textmap.extract(carrier)
    span = trace.get_current_span(ctx)
    return ctx if span.get_span_context().is_valid or ctx else None


def with_baggage(parent, header: str):
    from opentelemetry.baggage.propagation import W3CBaggagePropagator

    return W3CBaggagePropagator().extract({"baggage": header}, context=parent)


def method_of(raw: str) -> str:
    return raw if raw in KNOWN_METHODS else "_OTHER"


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


_HOSTS: dict[tuple, tuple[str | None, int | None]] = {}
_HOSTS_MAX = 256


def host_and_port(host: str | None, default_port: int | None) -> tuple[str | None, int | None]:
    """:func:`split_host` through a small cache (a server sees few distinct Host headers)."""
    key = (host, default_port)
    hit = _HOSTS.get(key)
    if hit is None:
        if len(_HOSTS) >= _HOSTS_MAX:
            _HOSTS.clear()
        hit = _HOSTS[key] = split_host(host, default_port)
    return hit


def finish(inst: Instruments, span, method: str, route: str | None, status: int, start_ns: int, end_ns: int,
           error: BaseException | None) -> None:
    """Set the final attributes, end the span and record the duration (never raises)."""
    error_type = type(error).__qualname__ if error is not None else str(status) if status >= 500 else None
    attrs = attributes_of(method, route, status, error_type)
    name = (f"{method} {route}" if method != "_OTHER" else f"HTTP {route}") if route else None
    if getattr(type(span), "_tracehouse_lean", False):  # server_span.is_lean, inlined
        final = None
        if error is not None:
            span.record_exception(error)
            final = Status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
        elif status >= 500:
            final = ERROR_STATUS
        span.close(name, attrs, final, end_ns)
    else:
        if span.is_recording():
            if name:
                span.update_name(name)
            set_attributes(span, attrs)
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            elif status >= 500:
                span.set_status(ERROR_STATUS)
        span.end(end_ns)
    inst.duration.record((end_ns - start_ns) / 1e9, method, route, status, error_type, span.get_span_context())


set_attributes = add_attributes


def attach(span, parent):
    return otel_context.attach(trace.set_span_in_context(span, parent))


detach = otel_context.detach
