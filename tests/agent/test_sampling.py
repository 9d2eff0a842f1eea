from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from tracehouse.agent import counters
from tracehouse.agent.sampling import ErrorKeepingProcessor, make_sampler


def provider(ratio, **kw):
    mem = InMemorySpanExporter()
    tp = TracerProvider(sampler=make_sampler(ratio))
    tp.add_span_processor(ErrorKeepingProcessor(SimpleSpanProcessor(mem), **kw))
    return tp, mem


def trace_of(tracer, error: bool, children: int = 2):
    with tracer.start_as_current_span("root") as root:
        for i in range(children):
            with tracer.start_as_current_span(f"child{i}") as c:
                if error and i == children - 1:
                    c.set_status(Status(StatusCode.ERROR))
    return root.get_span_context().trace_id


def test_unsampled_traces_are_dropped_but_error_traces_kept():
    tp, mem = provider(0.0)
    tracer = tp.get_tracer("t")
    for _ in range(5):
        trace_of(tracer, error=False)
    assert mem.get_finished_spans() == ()
    tid = trace_of(tracer, error=True)
    spans = mem.get_finished_spans()
    assert sorted(s.name for s in spans) == ["child0", "child1", "root"]
    assert all(s.context.trace_id == tid and s.context.trace_flags.sampled for s in spans)


def test_ratio_one_keeps_everything_and_ratio_is_respected():
    tp, mem = provider(1.0)
    trace_of(tp.get_tracer("t"), error=False)
    assert len(mem.get_finished_spans()) == 3
    tp, mem = provider(0.3)
    tracer = tp.get_tracer("t")
    for _ in range(400):
        trace_of(tracer, error=False, children=0)
    assert 60 < len(mem.get_finished_spans()) < 180


def test_buffer_is_bounded():
    counters.reset()
    tp, mem = provider(0.0, max_traces=2, max_spans=3)
    tracer = tp.get_tracer("t")
    trace_of(tracer, error=True, children=6)
    assert len(mem.get_finished_spans()) == 3  # capped per trace
    assert counters.snapshot().get("spans.dropped.unsampled_trace_too_long") == 4
