"""A bad OTEL_* value in a real host run under ``tracehouse-agent run``: the host starts, serves and
is traced, and stderr holds one line from the agent naming the variable (no SDK line, no
traceback, not one line per signal)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.agent.otlp_sink import Sink

AGENT_RUN = os.path.join(os.path.dirname(sys.executable), "tracehouse-agent")

HOST = r'''
import threading, urllib.request
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from opentelemetry import trace

class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *a):
        pass

srv = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
threading.Thread(target=srv.serve_forever, daemon=True).start()
with trace.get_tracer("host").start_as_current_span("work"):
    body = urllib.request.urlopen(f"http://127.0.0.1:{srv.server_address[1]}/", timeout=10).read()
print("SERVED", body.decode(), flush=True)
srv.shutdown()
'''


@pytest.mark.parametrize("name, value", [
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "-1"),  # one line per signal: three
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "1e400"),
    ("OTEL_RESOURCE_ATTRIBUTES", "noequals"),  # and the SDK's "Invalid key value resource attribute pair"
    ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,=2"),  # and the SDK's "invalid attribute key"
    ("OTEL_EXPORTER_OTLP_HEADERS", "x-a=b%0D%0AX-Evil: 1"),  # every export failed: ValueError, no span stored
    ("OTEL_EXPORTER_OTLP_HEADERS", "x-a=\u00e9\u4e2d"),  # every export failed: UnicodeEncodeError
    ("OTEL_EXPORTER_OTLP_HEADERS", "x k\u00e9y=v"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization Bearer s3cr3t-token"),  # the whole item was logged, secret too
    ("OTEL_BSP_SCHEDULE_DELAY", "abc"),  # nothing said, the default used
    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),  # nothing said; https exports: FileNotFoundError
    ("TRACEHOUSE_TOKEN", "s3cr3t%0D%0AX-Evil: 1".replace("%0D%0A", "\r\n")),  # every export failed: ValueError
])
def test_a_bad_otel_value_gets_one_line_and_the_host_serves_and_is_traced(tmp_path, name, value):
    sink = Sink()
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, TRACEHOUSE_COMMAND_POLL_S="0",
               OTEL_EXPORTER_OTLP_HEADERS="x-good=1")
    env[name] = value
    (tmp_path / "host.py").write_text(HOST)
    try:
        out = subprocess.run([AGENT_RUN, "run", "--service", "host", "--", sys.executable, str(tmp_path / "host.py")],
                             env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0 and out.stdout == "SERVED hello\n", out.stderr[-3000:]
        lines = out.stderr.splitlines()
        assert len(lines) == 1 and name in lines[0] and lines[0].startswith("tracehouse: ignoring"), lines
        assert "s3cr3t" not in out.stderr
        spans = sink.wait(lambda s: [sp for sp in s.spans() if sp[1].name == "work"])
        assert spans, out.stderr
        resource = spans[0][0]
        assert resource["service.name"] == "host" and "" not in resource
        if name == "OTEL_RESOURCE_ATTRIBUTES" and "=prod" in value:
            assert resource["deployment.environment"] == "prod"
    finally:
        sink.close()


BATCHES = r'''
import logging
from opentelemetry import trace
tracer = trace.get_tracer("host")
for i in range(12):
    with tracer.start_as_current_span(f"s{i}"):
        logging.getLogger("host").warning("record %d", i)
print("DONE", flush=True)
'''


def _spans_per_request(sink: Sink, path: str) -> list[int]:
    with sink.lock:
        reqs = [m for p, m, _ in sink.requests if p == path]
    if path == "/v1/traces":
        return [sum(len(ss.spans) for rs in m.resource_spans for ss in rs.scope_spans) for m in reqs]
    return [sum(len(sl.log_records) for rl in m.resource_logs for sl in rl.scope_logs) for m in reqs]


def test_the_standard_batch_size_variables_cut_the_exports(tmp_path):
    """``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` and ``OTEL_BLRP_MAX_EXPORT_BATCH_SIZE`` were read by nothing
    (the agent sent up to 512 spans or records per export whatever they said); the queue sizes
    likewise. 12 spans and 12 log records at batches of 5 and 4 go as 5+5+2 and 4+4+4."""
    sink = Sink()
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, TRACEHOUSE_COMMAND_POLL_S="0",
               OTEL_BSP_MAX_EXPORT_BATCH_SIZE="5", OTEL_BSP_MAX_QUEUE_SIZE="100",
               OTEL_BLRP_MAX_EXPORT_BATCH_SIZE="4", OTEL_BLRP_MAX_QUEUE_SIZE="100")
    (tmp_path / "host.py").write_text(BATCHES)
    try:
        out = subprocess.run([AGENT_RUN, "run", "--service", "host", "--", sys.executable, str(tmp_path / "host.py")],
                             env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0 and "DONE" in out.stdout, out.stderr[-3000:]
        assert sink.wait(lambda s: sum(_spans_per_request(s, "/v1/traces")) >= 12)
        per = _spans_per_request(sink, "/v1/traces")
        assert sum(per) == 12 and max(per) <= 5, per
        records = _spans_per_request(sink, "/v1/logs")
        assert sum(records) >= 12 and max(records) <= 4, records
    finally:
        sink.close()
