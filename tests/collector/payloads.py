"""OTLP requests with known content for tests, built from the generated proto classes."""

from __future__ import annotations

import os
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from testkit.otlp_load import kv


def traces(n_spans: int, service: str = "svc", spans_per_trace: int = 10, tag: str = "") -> tuple[
        ExportTraceServiceRequest, list[bytes]]:
    """A request with ``n_spans`` spans; returns it and the span ids."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", service), kv("service.instance.id", "i-1")])
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    now = time.time_ns()
    ids = []
    trace = os.urandom(16)
    for i in range(n_spans):
        if i % spans_per_trace == 0:
            trace = os.urandom(16)
        s = ss.spans.add()
        s.trace_id = trace
        s.span_id = os.urandom(8)
        s.name = f"op-{i % 7}"
        s.kind = 2
        s.start_time_unix_nano = now - 1_000_000
        s.end_time_unix_nano = now
        s.attributes.extend([kv("http.route", f"/r/{i % 5}"), kv("i", i), kv("tag", tag)])
        ids.append(s.span_id)
    return req, ids
