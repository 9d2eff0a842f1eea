"""Exemplars from the OpenTelemetry SDK, through a real collector, onto the service page: the
latency chart's exemplar points name the traces the SDK recorded them in (both backends)."""

from __future__ import annotations

import html
import json
import re

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider, TraceBasedExemplarFilter
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from starlette.testclient import TestClient

from tests.collector.harness import run_collector
from tracehouse.dashboard import create_app


def test_sdk_exemplars_reach_the_latency_chart_and_the_explorer(store, tmp_path):
    running = run_collector(store, str(tmp_path / "buffer"), max_batch_age=0.2)
    try:
        resource = Resource.create({"service.name": "checkout", "service.instance.id": "c-1"})
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=running.url + "/v1/traces")))
        tracer = tracer_provider.get_tracer("app")
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=running.url + "/v1/metrics"),
                                               export_interval_millis=3_600_000)
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader],
                                       exemplar_filter=TraceBasedExemplarFilter())
        # the semantic-convention request duration, in seconds, recorded inside each server span
        duration = meter_provider.get_meter("app").create_histogram(
            "http.server.request.duration", unit="s",
            explicit_bucket_boundaries_advisory=[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5])
        traced = []
        for i, seconds in enumerate((0.02, 0.04, 0.08, 0.9)):
            with tracer.start_as_current_span(f"GET /pay/{i}", kind=SpanKind.SERVER) as span:
                duration.record(seconds, {"http.route": "/pay"})
                traced.append(f"{span.get_span_context().trace_id:032x}")
        duration.record(5.0, {"http.route": "/pay"})  # outside any span: no exemplar
        tracer_provider.shutdown()
        meter_provider.shutdown()
        running.wait_stored("traces", 4)
        running.wait_stored("metrics", 1)
    finally:
        running.stop()

    with TestClient(create_app(None, store)) as client:
        body = client.get("/services/checkout?since=15m").text
        fig = json.loads(html.unescape(re.search(r'id="data-latency">(.*?)</script>', body, re.S)[1]))
        ex = next(t for t in fig["data"] if t["name"] == "exemplars")
        assert set(ex["customdata"]) <= set(traced) and ex["customdata"]  # the SDK keeps one per bucket
        assert max(ex["y"]) == 900.0  # milliseconds, from the SDK's seconds
        for tid in ex["customdata"]:
            assert client.get(f"/traces/{tid}").status_code == 200
        q = client.get("/api/metrics/explore", params={"metric": "http.server.request.duration", "since": "15m",
                                                       "agg": "p50", "step": "3600"}).json()
        assert q["type"] == "histogram" and q["unit"] == "s"
        (series,) = q["series"]
        # five observations: 0.02, 0.04, 0.08, 0.9, 5.0 → the median falls in the SDK's (0.075, 0.1] bucket
        assert 0.075 < series["points"][-1][1] <= 0.1
