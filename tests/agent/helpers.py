"""In-process agent pieces wired to in-memory exporters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

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


def run_host(tmp_path, script: str, endpoint: str, pythonpath: str = "", **env) -> tuple[dict, str]:
    """Run ``script`` under ``tracehouse-agent run``: (its last line of output as JSON, its stderr)."""
    (tmp_path / "host.py").write_text(textwrap.dedent(script))
    path = os.pathsep.join(p for p in (pythonpath, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="100", PYTHONPATH=path, **env)
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "tracehouse-agent"), "run", "--service", "host",
                          "--endpoint", endpoint, "--", sys.executable, str(tmp_path / "host.py")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=90, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def use_driver(monkeypatch, driver: str) -> None:
    """``psycopg``: the PostgreSQL probe as on a host with psycopg 3 (a [dev] dependency) and without
    psycopg2, which is hidden from import for the test."""
    if driver == "psycopg":
        import psycopg  # noqa: F401 - missing, the probe would fall back to TCP: fail here instead

        monkeypatch.setitem(sys.modules, "psycopg2", None)
