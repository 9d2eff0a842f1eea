"""Parent-based ratio sampling that still keeps traces with an error.

With a ratio below 1, root spans that lose the coin toss are *recorded* but not sampled
(``RECORD_ONLY``), and so are their local children. :class:`ErrorKeepingProcessor` buffers
those spans per trace id and, when the local root ends, forwards the whole trace to the export
processor, marked sampled, if any of its spans has status ERROR; otherwise it drops them.
Bounded: at most ``max_traces`` open traces and ``max_spans`` spans each (overflow counted).

Limitation, by choice: downstream services see ``sampled=0`` in ``traceparent`` and follow
the upstream decision, so a kept error trace holds this service's spans only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanContext, StatusCode, TraceFlags, get_current_span

from tracehouse.agent import counters
from tracehouse.agent import environment as env

SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio")
RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")


def resolve_sampler(ratio_argument: float | None = None) -> tuple[str, float]:
    """(sampler name, ratio) from the argument, ``OTEL_TRACES_SAMPLER``/``_ARG``, then
    ``TRACEHOUSE_SAMPLE_RATIO``. Without ``OTEL_TRACES_SAMPLER`` a ratio variable alone means
    ``parentbased_traceidratio``. Unsupported samplers are logged once; the default is used."""
    if ratio_argument is not None:
        return "parentbased_traceidratio", ratio_argument
    name = (env.get_str(env.OTEL_TRACES_SAMPLER) or "").lower()
    if name and name not in SAMPLERS:
        env.warn_once(f"sampler {name}", f"tracehouse: {env.OTEL_TRACES_SAMPLER}={name!r} is not supported "
                      f"({', '.join(SAMPLERS)}); using parentbased_always_on")
        return "parentbased_always_on", 1.0
    if name in ("always_on", "parentbased_always_on"):
        return name, 1.0
    if name in ("always_off", "parentbased_always_off"):
        return name, 0.0
    ratio = env.get_float(env.OTEL_TRACES_SAMPLER_ARG, 1.0, lo=0, hi=1)
    if ratio is None:
        ratio = env.get_float(env.TRACEHOUSE_SAMPLE_RATIO, 1.0, lo=0, hi=1)
    return name or "parentbased_traceidratio", 1.0 if ratio is None else ratio


class _RecordOnly(Sampler):
    """Turn a DROP of the wrapped sampler into RECORD_ONLY."""

    def __init__(self, inner: Sampler):
        self._inner = inner

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None) -> SamplingResult:
        res = self._inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if res.decision is Decision.DROP:
            ts = get_current_span(parent_context).get_span_context().trace_state
            return SamplingResult(Decision.RECORD_ONLY, attributes, ts)
        return res

    def get_description(self) -> str:
        return f"RecordOnly{{{self._inner.get_description()}}}"


def make_sampler(ratio: float, name: str = "parentbased_traceidratio") -> Sampler:
    """The SDK sampler for ``name``; ratio samplers below 1 record the unsampled traces
    (``RECORD_ONLY``) so that :class:`ErrorKeepingProcessor` can keep those with an error."""
    if name == "always_on":
        return ALWAYS_ON
    if name == "always_off":
        return ALWAYS_OFF
    if name == "parentbased_always_off":
        return ParentBased(ALWAYS_OFF)
    if name == "parentbased_always_on" or ratio >= 1.0:
        return ParentBased(ALWAYS_ON) if name != "traceidratio" else ALWAYS_ON
    root = _RecordOnly(TraceIdRatioBased(ratio))
    if name == "traceidratio":
        return root
    return ParentBased(root, local_parent_not_sampled=_RecordOnly(TraceIdRatioBased(0.0)))


def keeps_errors(name: str, ratio: float) -> bool:
    return name in RATIO_SAMPLERS and ratio < 1.0


class ErrorKeepingProcessor(SpanProcessor):
    """Forward sampled spans to ``downstream``; keep unsampled traces only when they errored."""

    def __init__(self, downstream: SpanProcessor, max_traces: int = 512, max_spans: int = 256):
        self._downstream = downstream
        self._max_traces = max_traces
        self._max_spans = max_spans
        self._lock = threading.Lock()
        self._traces: OrderedDict[int, list] = OrderedDict()  # trace id -> [errored, spans]

    def on_start(self, span, parent_context=None) -> None:
        self._downstream.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx.trace_flags.sampled:
            self._downstream.on_end(span)
            return
        is_local_root = span.parent is None or span.parent.is_remote
        errored = span.status.status_code is StatusCode.ERROR
        with self._lock:
            entry = self._traces.get(ctx.trace_id)
            if entry is None:
                if is_local_root:
                    entry = [errored, []]
                else:
                    if len(self._traces) >= self._max_traces:
                        self._traces.popitem(last=False)
                        counters.add("spans.dropped.unsampled_buffer_full")
                    entry = self._traces[ctx.trace_id] = [False, []]
            entry[0] = entry[0] or errored
            if len(entry[1]) < self._max_spans:
                entry[1].append(span)
            else:
                counters.add("spans.dropped.unsampled_trace_too_long")
            if is_local_root:
                self._traces.pop(ctx.trace_id, None)
        if is_local_root:
            if entry[0]:
                counters.add("traces.kept_for_error")
                for s in entry[1]:
                    self._downstream.on_end(_as_sampled(s))
            else:
                counters.add("spans.unsampled", len(entry[1]))

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._traces = OrderedDict()

    def shutdown(self) -> None:
        self._downstream.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._downstream.force_flush(timeout_millis)


def _as_sampled(span: ReadableSpan) -> ReadableSpan:
    c = span.context
    ctx = SpanContext(c.trace_id, c.span_id, c.is_remote, TraceFlags(TraceFlags.SAMPLED), c.trace_state)
    return ReadableSpan(name=span.name, context=ctx, parent=span.parent, resource=span.resource,
                        attributes=span.attributes, events=span.events, links=span.links, kind=span.kind,
                        status=span.status, start_time=span.start_time, end_time=span.end_time,
                        instrumentation_scope=span.instrumentation_scope)
