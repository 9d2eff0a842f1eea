"""The OpenTelemetry SDK's export timeouts (``OTEL_BSP_EXPORT_TIMEOUT``, ``OTEL_BLRP_EXPORT_TIMEOUT``,
``OTEL_METRIC_EXPORT_TIMEOUT``, milliseconds) bound one export of their signal, as the spec says,
in a real instrumented process against a collector that accepts and never answers. Before, none
was read (the span processor is the agent's own, the SDK's log processor reads its variable and
never uses it, and the metric reader was given the agent's own timeout): each export took the
exporter's timeout (``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.agent.otlp_sink import HangingServer, Sink

HOST = r'''
import json, logging, time
import tracehouse.agent as ta
h = ta.start(service="timeouts")
signal = "%(signal)s"
if signal == "spans":
    from opentelemetry import trace
    with trace.get_tracer("t").start_as_current_span("one"):
        pass
elif signal == "logs":
    logging.getLogger("app").warning("one record")
t0 = time.monotonic()
key = signal + ".dropped.export_failed"
while time.monotonic() - t0 < 15 and not ta.stats().get(key):
    time.sleep(0.02)
print(json.dumps({"failed_after": round(time.monotonic() - t0, 2), "stats": ta.stats()}), flush=True)
h.shutdown(0.5)
'''

CASES = {
    "spans": {"OTEL_BSP_EXPORT_TIMEOUT": "400", "OTEL_BSP_SCHEDULE_DELAY": "20"},
    "logs": {"OTEL_BLRP_EXPORT_TIMEOUT": "400", "OTEL_BLRP_SCHEDULE_DELAY": "20"},
    "metrics": {"OTEL_METRIC_EXPORT_TIMEOUT": "400", "OTEL_METRIC_EXPORT_INTERVAL": "20"},
}


def _run(tmp_path, signal: str, **env_vars) -> dict:
    (tmp_path / "host.py").write_text(HOST % {"signal": signal})
    out = subprocess.run([sys.executable, str(tmp_path / "host.py")], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env=dict(os.environ, TRACEHOUSE_COMMAND_POLL_S="0", **env_vars))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("signal", CASES)
def test_the_processor_export_timeout_bounds_one_export_below_the_exporters_own(tmp_path, signal):
    hung = HangingServer()
    try:
        out = _run(tmp_path, signal, OTEL_EXPORTER_OTLP_ENDPOINT=hung.url, OTEL_EXPORTER_OTLP_TIMEOUT="10000",
                   TRACEHOUSE_METRICS_INTERVAL="3600", **CASES[signal])
    finally:
        hung.close()
    assert out["stats"].get(f"{signal}.dropped.export_failed"), out
    # the first export is the one that failed: 0.4 s from its start (10 s before)
    assert out["failed_after"] < 0.4 + 1.5, out


def test_a_per_signal_exporter_timeout_below_the_processors_bounds_the_export(tmp_path):
    """The shorter of the two wins: ``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`` (300 ms) over the generic
    exporter timeout and a longer ``OTEL_BSP_EXPORT_TIMEOUT``."""
    hung = HangingServer()
    try:
        out = _run(tmp_path, "spans", OTEL_EXPORTER_OTLP_ENDPOINT=hung.url, OTEL_EXPORTER_OTLP_TIMEOUT="10000",
                   OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="300", OTEL_BSP_EXPORT_TIMEOUT="20000",
                   OTEL_BSP_SCHEDULE_DELAY="20", TRACEHOUSE_METRICS_INTERVAL="3600")
    finally:
        hung.close()
    assert out["stats"].get("spans.dropped.export_failed") and out["failed_after"] < 0.3 + 1.5, out


@pytest.mark.parametrize("value", ["soon", "0", "-5", "1e12", "nan"])
def test_a_bad_processor_timeout_gets_one_line_and_the_default(tmp_path, value):
    """Each bad value: one line naming it, then the spec's default (30 s): the exporter's own timeout
    (300 ms here) bounds the export."""
    hung = HangingServer()
    try:
        (tmp_path / "host.py").write_text(HOST % {"signal": "spans"})
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=hung.url, OTEL_EXPORTER_OTLP_TIMEOUT="300",
                   OTEL_BSP_EXPORT_TIMEOUT=value, OTEL_BSP_SCHEDULE_DELAY="20", TRACEHOUSE_METRICS_INTERVAL="3600",
                   TRACEHOUSE_COMMAND_POLL_S="0")
        out = subprocess.run([sys.executable, str(tmp_path / "host.py")], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path, env=env)
    finally:
        hung.close()
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if "OTEL_BSP_EXPORT_TIMEOUT" in ln]
    assert len(lines) == 1 and repr(value) in lines[0] and "30000" in lines[0], out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["stats"].get("spans.dropped.export_failed") and result["failed_after"] < 0.3 + 1.5, result


FLUSH = r'''
import json, time
import tracehouse.agent as ta
from opentelemetry import trace
h = ta.start(service="flush")
for name in ("one", "two"):
    with trace.get_tracer("t").start_as_current_span(name):
        pass
t0 = time.monotonic()
ok = trace.get_tracer_provider().force_flush(%(timeout_ms)d)
took = time.monotonic() - t0
print(json.dumps({"ok": ok, "took": round(took, 3), "stats": ta.stats()}), flush=True)
h.shutdown(0.5)
'''


def _flush(tmp_path, endpoint: str, timeout_ms: int) -> dict:
    (tmp_path / "flush.py").write_text(FLUSH % {"timeout_ms": timeout_ms})
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="10000",
               OTEL_BSP_SCHEDULE_DELAY="600000", TRACEHOUSE_METRICS_INTERVAL="3600", TRACEHOUSE_COMMAND_POLL_S="0",
               TRACEHOUSE_SNAPSHOTS="off")
    out = subprocess.run([sys.executable, str(tmp_path / "flush.py")], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_force_flush_bounds_the_export_in_flight_by_its_own_timeout(tmp_path):
    """``force_flush(500)`` on the tracer provider, the agent's OTLP/HTTP exporter (10 s timeout)
    sending to a collector that accepts and never answers: False within 0.5 s and a margin, the
    batch counted as failed. Before, the deadline was checked only between batches: the one export
    took the exporter's 10 s, and the flush returned True (the queue was empty)."""
    hung = HangingServer()
    try:
        out = _flush(tmp_path, hung.url, 500)
        assert hung.conns, "no export reached the collector"
    finally:
        hung.close()
    assert out["ok"] is False and out["took"] < 0.5 + 1.0, out
    assert out["stats"].get("spans.dropped.export_failed") == 2, out


def test_force_flush_to_a_collector_that_answers_is_true(tmp_path):
    sink = Sink()
    try:
        out = _flush(tmp_path, sink.url, 5000)
        assert out["ok"] is True and out["stats"].get("spans.exported") == 2, out
        assert sorted(s.name for _, s in sink.spans()) == ["one", "two"]
    finally:
        sink.close()


METRICS_FLUSH = r'''
import json, time
import tracehouse.agent as ta
from opentelemetry import metrics
h = ta.start(service="flush")
metrics.get_meter("m").create_counter("orders").add(1)
t0 = time.monotonic()
metrics.get_meter_provider().force_flush(%(timeout_ms)d)
print(json.dumps({"took": round(time.monotonic() - t0, 3), "stats": ta.stats()}), flush=True)
h.shutdown(0.5)
'''


def test_a_metrics_flush_bounds_its_export_by_the_flushs_timeout(tmp_path):
    """``force_flush(500)`` on the meter provider against a collector that accepts and never
    answers: the SDK's reader passes the flush's timeout to the export, which now keeps it (before,
    the exporter took its own 10 s: ``took`` 10.02 s)."""
    hung = HangingServer()
    try:
        (tmp_path / "flush.py").write_text(METRICS_FLUSH % {"timeout_ms": 500})
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=hung.url, OTEL_EXPORTER_OTLP_TIMEOUT="10000",
                   OTEL_METRIC_EXPORT_INTERVAL="600000", TRACEHOUSE_METRICS_INTERVAL="3600",
                   TRACEHOUSE_COMMAND_POLL_S="0", TRACEHOUSE_SNAPSHOTS="off")
        out = subprocess.run([sys.executable, str(tmp_path / "flush.py")], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path, env=env)
        assert hung.conns, "no export reached the collector"
    finally:
        hung.close()
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["stats"].get("metrics.dropped.export_failed") and result["took"] < 0.5 + 1.0, result
