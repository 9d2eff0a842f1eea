"""uWSGI (the pyuwsgi wheel) pre-forking workers under ``tracehouse-agent run``: with and without
``--enable-threads`` and ``--lazy-apps``, each worker exports under its own instance id, and the
bare WSGI callable uWSGI loads gets a SERVER span that the application's own span is a child of."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time

import pytest

from testkit.servers import free_port, wait_port
from tests.agent.otlp_sink import attrs

BIN = os.path.dirname(sys.executable)
APP = '''
import os
from opentelemetry import trace

def app(environ, start_response):
    with trace.get_tracer("uwsgi-app").start_as_current_span("work"):
        start_response("200 OK", [("content-type", "text/plain")])
        return [str(os.getpid()).encode()]
'''


def metric_exports(sink) -> dict[int, int]:
    """How many metric export requests each process has sent."""
    with sink.lock:
        reqs = [msg for path, msg, _ in sink.requests if path == "/v1/metrics"]
    out: dict[int, int] = {}
    for msg in reqs:
        for pid in {attrs(rm.resource.attributes).get("process.pid") for rm in msg.resource_metrics}:
            out[pid] = out.get(pid, 0) + 1
    return out


@pytest.mark.parametrize("flags", [[], ["--enable-threads"], ["--lazy-apps"], ["--enable-threads", "--lazy-apps"]],
                         ids=["plain", "enable-threads", "lazy-apps", "both"])
def test_each_uwsgi_worker_exports_under_its_own_instance_id(tmp_path, sink, flags):
    (tmp_path / "uapp.py").write_text(APP)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(tmp_path), OTEL_BSP_SCHEDULE_DELAY="100",
               TRACEHOUSE_METRICS_INTERVAL="0.5", TRACEHOUSE_SNAPSHOTS="off")
    proc = subprocess.Popen([f"{BIN}/tracehouse-agent", "run", "--service", "uw", "--endpoint", sink.url, "--",
                             f"{BIN}/uwsgi", "--http-socket", f"127.0.0.1:{port}", "--module", "uapp:app",
                             "--master", "--processes", "2", "--die-on-term", *flags],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        assert wait_port(port, 30)
        pids: set[int] = set()
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/")
            pids.add(int(c.getresponse().read()))
            c.close()
        assert len(pids) == 2
        assert sink.wait(lambda s: {ra["process.pid"] for ra, _ in s.spans()} >= pids, 30)
        # No more requests: an idle worker's export threads must still run (without uWSGI's
        # threads enabled its main thread keeps the GIL between requests, and they starve).
        idle = metric_exports(sink)
        assert sink.wait(lambda s: all(metric_exports(s).get(p, 0) >= idle.get(p, 0) + 2 for p in pids), 30), \
            (idle, metric_exports(sink))
    finally:
        os.kill(proc.pid, signal.SIGINT)  # uWSGI's immediate shutdown (SIGTERM means a graceful reload)
        try:
            out = proc.communicate(timeout=30)[0].decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    ids = {}
    server = {}
    for ra, span in sink.spans():
        if ra["process.pid"] in pids:
            ids.setdefault(ra["process.pid"], set()).add(ra["service.instance.id"])
            if span.kind == 2:  # SERVER
                assert span.name == "GET" and attrs(span.attributes)["http.response.status_code"] == 200
                server[span.span_id] = span
    works = [s for ra, s in sink.spans() if ra["process.pid"] in pids and s.name == "work"]
    assert works and all(w.parent_span_id in server for w in works)
    assert all(len(v) == 1 for v in ids.values()) and len({next(iter(v)) for v in ids.values()}) == 2, ids
    metric_ids = {ra["process.pid"]: ra["service.instance.id"] for ra, _ in sink.metrics() if ra["process.pid"] in pids}
    assert all(metric_ids[p] in ids[p] for p in pids)
    assert "tracehouse agent did not start" not in out and "Traceback" not in out


def test_the_application_uwsgi_loads_is_read_from_its_command_line():
    from tracehouse.agent.uwsgi_loader import target

    assert target(["/venv/bin/uwsgi", "--http-socket", ":80", "--module", "shop.wsgi:app"]) == ("shop.wsgi", "app")
    assert target(["uwsgi", "--wsgi=shop.wsgi", "--callable", "wsgi_app"]) == ("shop.wsgi", "wsgi_app")
    assert target(["uwsgi", "-w", "shop"]) == ("shop", "application")
    assert target(["uwsgi", "--ini", "shop.ini"]) is None
    assert target(["gunicorn", "--module", "x:y"]) is None
