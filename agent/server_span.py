"""The middlewares' SERVER span, made without the SDK's per-span machinery and still an SDK span.

``Tracer.start_span`` + ``Span.end`` cost ~15 µs on this kind of machine (~25 µs inside a busy
server): a ``BoundedAttributes`` that validates every value, two ``BoundedList``\\ s, a lock,
``start()``, and at the end a fresh ``ReadableSpan`` copy for the processors. :class:`ServerSpans`
makes the same span — trace id from the parent or the provider's id generator, the provider's
sampler asked with the request attributes, the provider's span processors called with
``on_start``/``_on_ending``/``on_end`` — as a :class:`LeanServerSpan`, in ~3 µs:

* it *is* an SDK ``Span`` (so ``isinstance`` checks, ``set_status``, ``update_name``,
  ``record_exception``, ``add_event``, ``add_link``, ``__exit__``, ``to_json`` are the SDK's own
  methods) and a ``ReadableSpan`` for every exporter;
* its attributes are a plain dict of the str/int values the middleware built, until anyone else
  writes an attribute: then they move into the SDK's ``BoundedAttributes`` with the provider's
  limits, which validate that write as the SDK always does;
* events and links get their ``BoundedList`` on first use;
* :meth:`LeanServerSpan.close` sets the final name, attributes and status and ends the span in one
  lock, and the processors receive the span itself (nothing writes to it after its end).

The span is put into the OpenTelemetry context by the middleware, so auto-instrumented children
parent on it and follow its sampling decision; the SDK's own span counters (``otel.sdk.span.*``,
where the release has them on) count it. The lean path is used only with an SDK release inside
:data:`.sdk_private.SUPPORTED`, an SDK ``Tracer`` and no attribute length or low count limit;
otherwise (and for a tracer a tracer configurator disabled) ``Tracer.start_span`` makes the span.
"""

from __future__ import annotations

from random import getrandbits as _getrandbits

from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    get_current_span,
)
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

__all__ = ["LeanServerSpan", "ServerSpans", "is_lean"]

_SERVER = SpanKind.SERVER
_UNSET = Status(StatusCode.UNSET)
_OK = StatusCode.OK
_MIN_COUNT_LIMIT = 32  # below this a request's own attributes could exceed the provider's limit
_NO_STATE = DEFAULT_TRACE_STATE
_MAX_TRACE_ID, _MAX_SPAN_ID = 2 ** 128 - 1, 2 ** 64 - 1
_tuple = tuple.__new__


def _span_class():
    """The :class:`LeanServerSpan` class (imported on first use: no SDK import at import time)."""
    global LeanServerSpan
    if LeanServerSpan is None:
        from tracehouse.agent.lean_span import LeanServerSpan
    return LeanServerSpan


LeanServerSpan = None  # the class, once :func:`_span_class` has built it


def _lean_usable(tracer) -> bool:
    from tracehouse.agent import sdk_private

    if not sdk_private.supported():
        return False
    try:
        from opentelemetry.sdk.trace import Tracer

        if type(tracer) is not Tracer:
            return False
        limits = tracer._span_limits
        count = limits.max_span_attributes
        if limits.max_span_attribute_length is not None or (count is not None and count < _MIN_COUNT_LIMIT):
            return False
        processor = tracer.span_processor
        return all(hasattr(processor, m) for m in ("on_start", "on_end")) and \
            hasattr(tracer, "_instrumentation_scope") and hasattr(tracer, "id_generator")
    except Exception:  # an SDK shaped otherwise than the releases we test
        return False


def _static_decision(sampler):
    """``(decision, recording, sampled)`` of an SDK ``ALWAYS_ON``/``ALWAYS_OFF`` sampler, else ``None``."""
    from opentelemetry.sdk.trace.sampling import StaticSampler

    if type(sampler) is not StaticSampler:
        return None
    decision = sampler._decision
    return decision, decision.is_recording(), decision.is_sampled()


def _parent_based(sampler):
    """``(root, remote sampled, remote not sampled, local sampled, local not sampled)`` of an SDK
    ``ParentBased`` sampler, else ``None``."""
    from opentelemetry.sdk.trace.sampling import ParentBased

    if type(sampler) is not ParentBased:
        return None
    return (sampler._root, sampler._remote_parent_sampled, sampler._remote_parent_not_sampled,
            sampler._local_parent_sampled, sampler._local_parent_not_sampled)


def _quiet(processor, hook: str) -> bool:
    """Whether ``processor.<hook>(span)`` is known to do nothing (the SDK base class's no-op, the
    agent's batch processor, the error keeper over quiet processors)."""
    from opentelemetry.sdk.trace import SpanProcessor

    from tracehouse.agent.batching import LeanBatchSpanProcessor
    from tracehouse.agent.sampling import ErrorKeepingProcessor

    impl = getattr(type(processor), hook, None)
    if impl is None or impl is getattr(SpanProcessor, hook, None):
        return True
    if type(processor) is LeanBatchSpanProcessor:
        return hook != "on_end"
    if type(processor) is ErrorKeepingProcessor and hook == "on_start":
        return _quiet(processor._downstream, hook)
    return False


class ServerSpans:
    """Starts SERVER spans for one tracer: :class:`LeanServerSpan` when it can, else the SDK's.

    For the SDK's ``SynchronousMultiSpanProcessor`` the registered processors are called
    directly, skipping hooks known to do nothing (refreshed when a processor is added). The SDK's
    own samplers ``ALWAYS_ON``/``ALWAYS_OFF`` and ``ParentBased`` over them are decided here as
    they decide (any other sampler is asked)."""

    __slots__ = ("tracer", "lean", "_flags", "_random", "_enabled", "_metrics", "_procs", "_on_start",
                 "_on_ending", "_on_end", "_sampler", "_parent_based", "_static", "_cls", "_fast_ids", "__weakref__")

    def __init__(self, tracer):
        self.tracer = tracer
        self.lean = _lean_usable(tracer)
        self._procs = self._sampler = self._cls = None
        self._on_start = self._on_ending = self._on_end = ()
        self._fast_ids = False
        if self.lean:
            from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

            # The span class of this tracer: what every span of it shares is a class attribute.
            self._cls = type("LeanServerSpan", (_span_class(),), {
                "_instrumentation_scope": tracer._instrumentation_scope,
                "_instrumentation_info": tracer.instrumentation_info, "_limits": tracer._span_limits,
                "_span_processor": tracer.span_processor, "_owner": self})
            self._fast_ids = type(tracer.id_generator) is RandomIdGenerator
        self._enabled = getattr(tracer, "_is_enabled", None)  # SDK >= 1.38: a tracer configurator
        # The SDK's own span counters: on in 1.38-1.42, opt-in (OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED) later.
        metrics = getattr(tracer, "_tracer_metrics", None)
        self._metrics = None if metrics is None or type(metrics).__name__ == "NoOpTracerMetrics" else metrics
        random_flag = getattr(TraceFlags, "RANDOM_TRACE_ID", None)
        self._random = random_flag is not None and hasattr(getattr(tracer, "id_generator", None),
                                                           "is_trace_id_random")
        flag = random_flag or 0
        self._flags = {(s, r): TraceFlags((TraceFlags.SAMPLED if s else 0) | (flag if r else 0))
                       for s in (False, True) for r in (False, True)}

    def _hooks(self) -> None:
        """(Re)read the processors behind the tracer's multi-processor."""
        from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor

        multi = self.tracer.span_processor
        if type(multi) is SynchronousMultiSpanProcessor:
            procs = self._procs = multi._span_processors
        else:  # another multi-processor: through its own methods
            procs, self._procs = (multi,), None
        self._on_start = tuple(p.on_start for p in procs if not _quiet(p, "on_start"))
        self._on_ending = tuple(p._on_ending for p in procs if not _quiet(p, "_on_ending"))
        self._on_end = tuple(p.on_end for p in procs)

    def _sampling(self) -> None:
        sampler = self._sampler = self.tracer.sampler
        self._static = _static_decision(sampler)
        branches = _parent_based(sampler)
        self._parent_based = None if branches is None else tuple(
            (b, _static_decision(b)) for b in branches)

    def _decide(self, parent, parent_ctx, trace_id: int, name: str, attributes: dict):
        """(decision, recording, sampled, attributes, trace state) as the tracer's sampler gives them."""
        if self.tracer.sampler is not self._sampler:
            self._sampling()
        static = self._static
        if static is None and self._parent_based is not None:
            if parent_ctx is None:
                sampler, static = self._parent_based[0]
            else:
                sampled = parent_ctx.trace_flags & 1
                sampler, static = self._parent_based[(1 if sampled else 2) if parent_ctx.is_remote else
                                                     (3 if sampled else 4)]
        else:
            sampler = self._sampler
        if static is not None:  # a static sampler: its result, without building it
            decision, recording, sampled = static
            return decision, recording, sampled, (attributes if recording else None), \
                (parent_ctx.trace_state if parent_ctx is not None else None)
        result = sampler.should_sample(parent, trace_id, name, _SERVER, attributes, ())
        attrs, decision = result.attributes, result.decision
        return decision, decision.is_recording(), decision.is_sampled(), (dict(attrs) if attrs else {}), \
            result.trace_state

    @staticmethod
    def _new_id(bits: int) -> int:
        """RandomIdGenerator's trace (128) or span (64) id, without its method calls: never 0."""
        n = _getrandbits(bits)
        while not n:
            n = _getrandbits(bits)
        return n

    def start(self, name: str, parent, start_time: int, attributes: dict):
        """A started SERVER span named ``name`` under ``parent`` (a context, or ``None`` for the
        current one) with ``attributes`` (str/int values; the dict becomes the span's own)."""
        tracer = self.tracer
        if not self.lean or (self._enabled is not None and not self._enabled()):
            span = tracer.start_span(name, context=parent, kind=_SERVER, start_time=start_time)
            if span.is_recording():
                from tracehouse.agent.sdk_private import add_attributes

                add_attributes(span, attributes)
            return span
        parent_ctx = get_current_span(parent).get_span_context()
        fast_ids = self._fast_ids
        if parent_ctx is None or not parent_ctx.is_valid:
            parent_ctx = None
            trace_id = self._new_id(128) if fast_ids else tracer.id_generator.generate_trace_id()
        else:
            trace_id = parent_ctx.trace_id
        decision, recording, sampled, attrs, trace_state = self._decide(parent, parent_ctx, trace_id, name,
                                                                         attributes)
        if self._random:
            random = (fast_ids or tracer.id_generator.is_trace_id_random()) if parent_ctx is None else \
                parent_ctx.trace_flags.random_trace_id
        else:
            random = False
        span_id = self._new_id(64) if fast_ids else tracer.id_generator.generate_span_id()
        # SpanContext(...) without its Python-level __new__: both ids are valid here.
        context = _tuple(SpanContext, (trace_id, span_id, False, self._flags[(sampled, random)],
                                       trace_state if trace_state is not None else _NO_STATE,
                                       trace_id <= _MAX_TRACE_ID and span_id <= _MAX_SPAN_ID))
        if not recording:
            if self._metrics is not None:
                self._metrics.start_span(parent_ctx, decision)
            return NonRecordingSpan(context)
        multi = tracer.span_processor
        if getattr(multi, "_span_processors", None) is not self._procs or self._procs is None:
            self._hooks()
        span = self._cls(name, context, parent_ctx, attrs if attrs is not None else {}, start_time, tracer.resource)
        if self._metrics is not None:
            span._record_end_metrics = self._metrics.start_span(parent_ctx, decision)
        for on_start in self._on_start:
            on_start(span, parent_context=parent)
        return span

    def ended(self, span) -> None:
        """Hand an ended span to the processors."""
        for on_ending in self._on_ending:
            on_ending(span)
        for on_end in self._on_end:
            on_end(span)


def is_lean(span) -> bool:
    """Whether ``span`` is a :class:`LeanServerSpan`."""
    return getattr(type(span), "_tracehouse_lean", False)
