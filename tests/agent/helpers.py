"""In-process agent pieces wired to in-memory exporters."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracehouse.agent import http_server


class Recorder:
    def __init__(self, tracer_provider=None):
        self.spans = InMemorySpanExporter()
        self.tp = tracer_provider or TracerProvider()
        self.tp.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.mp = MeterProvider(metric_readers=[self.reader])
        http_server.configure(http_server.Instruments(self.tp, self.mp))

    def points(self, name):
        data = self.reader.get_metrics_data()
        return [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                if m.name == name for p in m.data.data_points]

    def close(self):
        http_server.configure(None)
        self.tp.shutdown()
        self.mp.shutdown()
