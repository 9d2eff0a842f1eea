"""The standard OTEL_* settings: exporter protocol, per-signal endpoints and headers, propagators,
samplers, the SDK switch; unsupported values are logged once, never ignored silently."""

from __future__ import annotations

import http.client
import json
import logging
import os
import subprocess
import sys

import pytest

from testkit.servers import free_port, wait_port
from tests.agent import apps
from tests.agent.otlp_sink import Sink, attrs
from tracehouse.agent import config

BIN = os.path.dirname(sys.executable)


def test_per_signal_endpoints_headers_and_protocols(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example/custom/path")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20a,x-team=core")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "authorization=Bearer%20m")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1500")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip")
    ex = config.resolve().exports
    assert (ex["spans"].protocol, ex["spans"].url) == ("http/protobuf", "https://traces.example/custom/path")
    assert (ex["metrics"].protocol, ex["metrics"].url) == ("http/protobuf", "http://collector:4318/v1/metrics")
    assert (ex["logs"].protocol, ex["logs"].url) == ("grpc", "http://logs:4317")
    assert ex["spans"].headers == {"authorization": "Bearer a", "x-team": "core"}
    assert ex["metrics"].headers == {"authorization": "Bearer m", "x-team": "core"}
    assert ex["spans"].timeout == 1.5 and ex["metrics"].compression == "gzip" and ex["spans"].compression is None
    # an endpoint argument is a base URL for every signal and wins over the environment
    ex = config.resolve(endpoint="http://arg:4318").exports
    assert ex["spans"].url == "http://arg:4318/v1/traces" and ex["logs"].url == "http://arg:4318"


def test_grpc_default_endpoint_and_unsupported_values_are_logged_once(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert config.resolve().exports["spans"].url == "http://127.0.0.1:4317"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "jaeger_remote")
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,xray-nope")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")
    with caplog.at_level(logging.WARNING, "tracehouse.agent"):
        for _ in range(3):
            cfg = config.resolve()
    assert cfg.exports["spans"].protocol == "http/protobuf" and cfg.sampler == "parentbased_always_on"
    assert cfg.propagators == ("tracecontext",) and cfg.exports["spans"].compression is None
    for needle in ("http/json", "jaeger_remote", "xray-nope", "zstd"):
        # the per-signal and generic variables are read for three signals: still one line each
        assert sum(needle in r.getMessage() for r in caplog.records) == 1, needle


@pytest.mark.parametrize("sampler, arg, expect", [
    ("always_off", None, ("always_off", 0.0)), ("traceidratio", "0.3", ("traceidratio", 0.3)),
    ("parentbased_traceidratio", "0.1", ("parentbased_traceidratio", 0.1)),
    ("parentbased_always_off", None, ("parentbased_always_off", 0.0)), (None, "0.25", ("parentbased_traceidratio", 0.25)),
])
def test_samplers(monkeypatch, sampler, arg, expect):
    if sampler:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    if arg:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    cfg = config.resolve()
    assert (cfg.sampler, cfg.sample_ratio) == expect


def _serve(tmp_path, sink, env):
    (tmp_path / "fapp.py").write_text(apps.FASTAPI_APP)
    port = free_port()
    e = dict(os.environ, PYTHONPATH=str(tmp_path), OTEL_BSP_SCHEDULE_DELAY="100", TRACEHOUSE_METRICS_INTERVAL="60",
             TRACEHOUSE_SNAPSHOTS="off", **env)
    proc = subprocess.Popen([f"{BIN}/tracehouse-agent", "run", "--service", "shop", "--endpoint", sink.url, "--",
                             f"{BIN}/uvicorn", "fapp:app", "--port", str(port), "--no-access-log"],
                            env=e, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert wait_port(port, 30)
    return proc, port


def _get(port, path, headers):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    r.read()
    return r.status


def _stop(proc) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    return out.decode()


def test_b3_propagators_in_and_out_and_the_sampler_through_a_real_server(tmp_path, sink):
    proc, port = _serve(tmp_path, sink, {"OTEL_PROPAGATORS": "b3multi,baggage", "OTEL_TRACES_SAMPLER": "always_on"})
    try:
        b3 = {"X-B3-TraceId": "463ac35c9f6413ad48485a3953bb6124", "X-B3-SpanId": "a2fb4a1d1a96d312",
              "X-B3-Sampled": "1", "baggage": "tenant=acme"}
        assert _get(port, f"/call?url={sink.url}/health", b3) == 200
        spans = sink.wait(lambda s: s.spans() if len(s.spans()) >= 2 else None)
    finally:
        _stop(proc)
    server = next(s for _, s in spans if s.kind == 2)
    client = next(s for _, s in spans if s.kind == 3)
    assert server.trace_id.hex() == "463ac35c9f6413ad48485a3953bb6124"
    assert server.parent_span_id.hex() == "a2fb4a1d1a96d312"
    assert client.trace_id == server.trace_id
    # the outgoing call carried b3 multi-header context and the baggage, not traceparent
    out = next(h for p, h in sink.gets if p == "/health")
    assert out["x-b3-traceid"] == "463ac35c9f6413ad48485a3953bb6124" and "traceparent" not in out
    assert out["x-b3-spanid"] == client.span_id.hex() and out["baggage"] == "tenant=acme"


def test_always_off_sampler_and_sdk_disabled_send_no_spans(tmp_path, sink):
    for env in ({"OTEL_TRACES_SAMPLER": "always_off"}, {"OTEL_SDK_DISABLED": "true"}):
        proc, port = _serve(tmp_path, sink, env)
        try:
            for _ in range(5):
                assert _get(port, "/items/1", {}) == 200
        finally:
            _stop(proc)
    assert not [s for _, s in sink.spans() if attrs(s.attributes).get("url.path") == "/items/1"]


SDK_SWITCH = r'''
import json
import tracehouse.agent as ta
h = ta.start(service="switch")
from opentelemetry import trace
with trace.get_tracer("t").start_as_current_span("switched"):
    pass
print(json.dumps({"started": h.config is not None, "flushed": h.force_flush(5.0)}), flush=True)
h.shutdown(2.0)
'''


@pytest.mark.parametrize("value, started", [("TRUE", False), (" true ", False), ("false", True), ("1", True),
                                            ("yes", True)])
def test_sdk_disabled_is_true_only_for_true_as_the_spec_says(tmp_path, sink, value, started):
    """The specification (and the OpenTelemetry SDK, which reads the same variable for its own
    providers): only ``true``, any case, is true; any other value is false, and one that is not
    ``false`` gets a warning. Before, ``1``, ``yes`` and ``on`` switched the agent off silently."""
    (tmp_path / "host.py").write_text(SDK_SWITCH)
    env = dict(os.environ, OTEL_SDK_DISABLED=value, OTEL_EXPORTER_OTLP_ENDPOINT=sink.url,
               TRACEHOUSE_COMMAND_POLL_S="0", TRACEHOUSE_METRICS_INTERVAL="3600")
    out = subprocess.run([sys.executable, str(tmp_path / "host.py")], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert f'"started": {str(started).lower()}' in out.stdout, out.stdout
    names = [s.name for _, s in sink.spans()]
    assert names == (["switched"] if started else []), names
    warned = [ln for ln in out.stderr.splitlines() if "OTEL_SDK_DISABLED" in ln]
    assert len(warned) == (1 if value in ("1", "yes") else 0), out.stderr


NAMED = r'''
import tracehouse.agent as ta
from opentelemetry import trace
h = ta.start()
with trace.get_tracer("t").start_as_current_span("named"):
    pass
h.force_flush(5.0)
h.shutdown(2.0)
'''


@pytest.mark.parametrize("env_vars, expect", [
    ({"OTEL_SERVICE_NAME": "otel", "OTEL_RESOURCE_ATTRIBUTES": "service.name=attrs", "TRACEHOUSE_SERVICE": "th"},
     "otel"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "team=core,service.name=attrs", "TRACEHOUSE_SERVICE": "th"}, "attrs"),
    ({"TRACEHOUSE_SERVICE": "th"}, "th"),
])
def test_service_name_precedence_as_received_by_the_collector(tmp_path, sink, env_vars, expect):
    """``OTEL_SERVICE_NAME``, then ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES`` (the spec's order),
    then ``TRACEHOUSE_SERVICE`` (the agent's fallback: OTEL_* variables first). Before, the
    fallback won over the resource attribute: the spans came as ``th``."""
    (tmp_path / "host.py").write_text(NAMED)
    env = {k: v for k, v in os.environ.items() if k not in ("OTEL_SERVICE_NAME", "TRACEHOUSE_SERVICE")}
    env.update(env_vars, OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, TRACEHOUSE_COMMAND_POLL_S="0",
               TRACEHOUSE_METRICS_INTERVAL="3600")
    out = subprocess.run([sys.executable, str(tmp_path / "host.py")], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert [(r["service.name"], s.name) for r, s in sink.spans()] == [(expect, "named")]


GRPC_MISSING = r'''
import json, sys
sys.modules["grpc"] = None  # a host without grpcio: importing it fails
import tracehouse.agent as ta
from opentelemetry import trace
h = ta.start(service="nogrpc")
with trace.get_tracer("t").start_as_current_span("over-http"):
    pass
print(json.dumps({"flushed": h.force_flush(5)}), flush=True)
h.shutdown(1)
'''


def test_grpc_asked_for_without_grpcio_sends_over_http_and_says_which_variable_asked(tmp_path):
    """``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc`` on a host without grpcio: one line naming that
    variable (it named ``OTEL_EXPORTER_OTLP_PROTOCOL``, which was not set) and where the spans go
    instead; the spans reach the collector over HTTP/protobuf."""
    sink = Sink()
    try:
        (tmp_path / "host.py").write_text(GRPC_MISSING)
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc",
                   TRACEHOUSE_METRICS_INTERVAL="3600", TRACEHOUSE_COMMAND_POLL_S="0", TRACEHOUSE_SNAPSHOTS="off")
        out = subprocess.run([sys.executable, str(tmp_path / "host.py")], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path, env=env)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout.strip().splitlines()[-1]) == {"flushed": True}, out.stdout
        assert [s.name for _, s in sink.spans()] == ["over-http"]
    finally:
        sink.close()
    lines = [ln for ln in out.stderr.splitlines() if "grpc" in ln.lower()]
    assert len(lines) == 1, out.stderr
    assert "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc" in lines[0] and f"{sink.url}/v1/traces" in lines[0], lines
