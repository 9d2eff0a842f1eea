"""The agent in real server processes (uvicorn, gunicorn pre-fork workers) under `tracehouse-agent run`,
exporting over OTLP/HTTP to a real local receiver."""

import http.client
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from testkit.servers import free_port, wait_port
from tests.agent import apps
from tests.agent.otlp_sink import HangingServer, TricklingServer, attrs, closed_port_url

BIN = os.path.dirname(sys.executable)


def run_server(tmp_path, kind: str, endpoint: str, extra_env=None):
    (tmp_path / "fapp.py").write_text(apps.FASTAPI_APP)
    (tmp_path / "wapp.py").write_text(apps.WSGI_APP)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(tmp_path), OTEL_BSP_SCHEDULE_DELAY="200",
               TRACEHOUSE_METRICS_INTERVAL="0.5", TRACEHOUSE_LOG_LEVEL="WARNING")
    env.update(extra_env or {})
    if kind == "uvicorn":
        cmd = [f"{BIN}/uvicorn", "fapp:app", "--port", str(port), "--no-access-log"]
    else:
        cmd = [f"{BIN}/gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "wapp:app"]
    proc = subprocess.Popen([f"{BIN}/tracehouse-agent", "run", "--service", "shop", "--endpoint", endpoint, "--",
                             *cmd], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    assert wait_port(port, 30), proc.stdout.read1().decode() if proc.poll() is not None else "no port"
    return proc, port


def stop(proc, timeout=15.0) -> float:
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return time.monotonic() - t0


def get(port, path, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t0 = time.perf_counter()
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    return r.status, body, time.perf_counter() - t0


def test_fastapi_under_uvicorn_exports_traces_metrics_and_logs(tmp_path, sink):
    proc, port = run_server(tmp_path, "uvicorn", sink.url)
    try:
        assert get(port, "/items/1")[0] == 200
        assert get(port, "/items/500")[0] == 500
        assert get(port, f"/call?url={sink.url}/health")[0] == 200
        spans = sink.wait(lambda s: [x for x in s.spans() if x[1].kind == 2] if len(s.spans()) >= 4 else None)
        assert sink.wait(lambda s: any(m.name == "http.server.request.duration" for _, m in s.metrics()))
        assert sink.wait(lambda s: s.logs())
    finally:
        stop(proc)
    server = {attrs(s.attributes)["url.path"]: (ra, s) for ra, s in spans}
    ra, ok = server["/items/1"]
    assert ra["service.name"] == "shop" and ra["process.pid"] > 0 and ra["service.instance.id"]
    assert ok.name == "GET /items/{item_id}" and attrs(ok.attributes)["http.response.status_code"] == 200
    assert server["/items/500"][1].status.code == 2  # ERROR
    client = [s for _, s in sink.spans() if s.kind == 3]  # CLIENT, from the stock requests instrumentor
    assert client, "the requests instrumentation made no client span"
    ca = attrs(client[0].attributes)
    assert ca["server.address"] == "127.0.0.1" and ca["server.port"] == sink.port
    assert client[0].trace_id == server["/call"][1].trace_id
    log = next(r for _, r in sink.logs() if "looked at item" in r.body.string_value)
    assert log.trace_id == ok.trace_id and log.span_id == ok.span_id
    names = {m.name for _, m in sink.metrics()}
    for name in ("process.cpu.time", "process.memory.usage", "system.cpu.utilization", "http.server.active_requests",
                 "cpython.gc.collections", "container.cpu.time"):
        assert name in names


def test_uvicorn_stopped_by_sigterm_sends_what_it_had_not_sent_yet(tmp_path, sink):
    """uvicorn raises the SIGTERM again once it has shut down: the process ends by the signal,
    without ``atexit``, and the agent's last batch of spans, logs and metrics was lost."""
    proc, port = run_server(tmp_path, "uvicorn", sink.url, {"OTEL_BSP_SCHEDULE_DELAY": "60000",
                                                            "TRACEHOUSE_METRICS_INTERVAL": "60"})
    try:
        assert get(port, "/items/1")[0] == 200
    finally:
        stop(proc)
    assert proc.returncode == -signal.SIGTERM  # as without the agent
    assert [x.name for _, x in sink.spans() if x.kind == 2] == ["GET /items/{item_id}"]
    assert any("looked at item" in r.body.string_value for _, r in sink.logs())
    assert any(m.name == "http.server.request.duration" for _, m in sink.metrics())


def test_gunicorn_workers_each_get_their_own_instance_id(tmp_path, sink):
    proc, port = run_server(tmp_path, "gunicorn", sink.url)
    try:
        pids = set()
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.add(int(get(port, "/x")[1]))  # a new connection each time: both workers answer
        assert len(pids) == 2
        assert sink.wait(lambda s: {ra["process.pid"] for ra, _ in s.spans()} >= pids, 30)
        assert sink.wait(lambda s: {ra["process.pid"] for ra, _ in s.metrics()} >= pids, 30), \
            ({ra["process.pid"] for ra, _ in sink.metrics()}, pids)
    finally:
        stop(proc)
    by_pid = {}
    for ra, span in sink.spans():
        by_pid.setdefault(ra["process.pid"], set()).add(ra["service.instance.id"])
        assert span.kind == 2 and attrs(span.attributes)["url.path"] == "/x"
    assert set(by_pid) == pids
    ids = [next(iter(v)) for v in by_pid.values()]
    assert all(len(v) == 1 for v in by_pid.values()) and len(set(ids)) == 2
    metric_ids = {ra["process.pid"]: ra["service.instance.id"] for ra, _ in sink.metrics()}
    assert all(metric_ids[p] == next(iter(by_pid[p])) for p in pids)


@pytest.mark.agent_errors_expected
@pytest.mark.parametrize("collector", ["closed", "hanging"])
def test_a_broken_collector_never_hurts_the_application(tmp_path, collector):
    hang = HangingServer() if collector == "hanging" else None
    endpoint = hang.url if hang else closed_port_url()
    proc, port = run_server(tmp_path, "uvicorn", endpoint, {"TRACEHOUSE_EXPORT_TIMEOUT": "1"})
    # the app's own warnings reach its stderr (Python's last resort, as without the agent): read the
    # pipe while it runs, or the app blocks writing to it once it is full
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.extend(iter(lambda: proc.stdout.read1(65536), b"")), daemon=True)
    reader.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        durations = []
        deadline = time.monotonic() + 3  # long enough for several failed exports
        while time.monotonic() < deadline:
            status, _, took = get(port, "/items/2", conn)
            assert status == 200
            durations.append(took)
        durations.sort()
        assert durations[len(durations) // 2] < 0.05 and durations[int(len(durations) * 0.99)] < 0.5
        took = stop(proc)
    finally:
        if hang:
            hang.close()
    assert took < 6.0  # bounded shutdown even with a collector that never answers
    reader.join(10)
    out = b"".join(output).decode()
    assert "Traceback" not in out.split("Application shutdown complete")[0] or "shop" in out
    assert out.count("export spans failed") <= 1  # rate-limited


@pytest.mark.agent_errors_expected
def test_stats_count_drops_and_shutdown_is_bounded_in_process():
    code = f"""
import time, tracehouse.agent as a
from opentelemetry import trace
h = a.start(service="s", endpoint="{closed_port_url()}", metrics_interval=0.2, instrument=False)
tracer = trace.get_tracer("t")
for i in range(3000):
    with tracer.start_as_current_span("x"):
        pass
time.sleep(1.5)
t0 = time.monotonic(); h.shutdown(5); took = time.monotonic() - t0
print(a.stats()); print(took)
"""
    env = dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="100", TRACEHOUSE_QUEUE_SIZE="1000")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    stats_line, took = out.stdout.strip().splitlines()[-2:]
    stats = eval(stats_line)  # noqa: S307 - our own dict repr
    dropped = sum(v for k, v in stats.items() if k.startswith("spans.dropped"))
    assert dropped >= 1000 and stats["errors"] >= 1, stats
    assert float(took) < 5.0
    assert "Queue full" not in out.stderr or out.stderr.count("Queue full") < 5


@pytest.mark.agent_errors_expected
def test_a_flush_keeps_its_timeout_while_a_collector_answers_a_byte_at_a_time():
    """The host's ``force_flush(0.3)`` waited for the export in flight, which a collector answering
    a byte every 0.1 s held for ever: the export now ends at its deadline (3 s here), and a flush
    waits for it only until its own."""
    slow = TricklingServer.http("body")
    code = f"""
import time, tracehouse.agent as a
from opentelemetry import trace
h = a.start(service="s", endpoint="{slow.url}", metrics=False, logs=False, instrument=False)
tracer = trace.get_tracer("t")
for _ in range(10):
    with tracer.start_as_current_span("x"):
        pass
time.sleep(0.5)  # the export thread is now waiting on the collector
with tracer.start_as_current_span("y"):
    pass
t0 = time.monotonic(); h.force_flush(0.3); flush = time.monotonic() - t0
deadline = time.monotonic() + 10  # until the export in flight has failed at its own deadline
while a.stats().get("spans.dropped.export_failed", 0) < 10 and time.monotonic() < deadline:
    time.sleep(0.05)
print(a.stats()); print(flush)
t0 = time.monotonic(); h.shutdown(1); print(time.monotonic() - t0)
"""
    env = dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="100", TRACEHOUSE_EXPORT_TIMEOUT="3")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    finally:
        slow.close()
    stats_line, flush, shut = out.stdout.strip().splitlines()[-3:]
    assert float(flush) < 1.0, (flush, out.stderr[-2000:])
    assert float(shut) < 2.0
    stats = eval(stats_line)  # noqa: S307 - our own dict repr
    assert stats.get("spans.dropped.export_failed", 0) >= 10, stats
