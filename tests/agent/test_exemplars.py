"""Request-duration exemplars: the agent in a real uvicorn server exports them over OTLP, a real
collector stores them in ``metric_points``, and each names a trace that is stored too."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys

from testkit.servers import free_port, wait_port
from tests.agent import apps
from tests.agent.helpers import Recorder
from tests.collector.harness import run_collector
from tests.support.waiting import wait_for
from tracehouse.agent import http_server

BIN = os.path.dirname(sys.executable)


def _b(v) -> bytes:
    return v if isinstance(v, bytes) else v.encode("latin-1")


def test_exemplars_reach_metric_points_through_a_real_collector(tmp_path, chdb_store):
    running = run_collector(chdb_store, str(tmp_path / "buffer"), max_batch_age=0.2)
    (tmp_path / "fapp.py").write_text(apps.FASTAPI_APP)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(tmp_path), OTEL_BSP_SCHEDULE_DELAY="100", TRACEHOUSE_METRICS_INTERVAL="0.5",
               TRACEHOUSE_SNAPSHOTS="off")
    proc = subprocess.Popen([f"{BIN}/tracehouse-agent", "run", "--service", "exemplary", "--endpoint", running.url,
                             "--", f"{BIN}/uvicorn", "fapp:app", "--port", str(port), "--no-access-log"],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_port(port, 30)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(5):
            conn.request("GET", f"/items/{i}")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200

        def stored():
            rows = chdb_store.query(
                f"SELECT exemplar_trace_ids, exemplar_span_ids, exemplar_values FROM {chdb_store.db}.metric_points "
                "WHERE name = 'http.server.request.duration' AND length(exemplar_trace_ids) > 0").rows
            return rows or None

        rows = wait_for(stored, 30, what="duration points with exemplars")
        spans = {(_b(t), _b(s)) for t, s in chdb_store.query(
            f"SELECT trace_id, span_id FROM {chdb_store.db}.spans WHERE service = 'exemplary'").rows}
    finally:
        proc.terminate()
        proc.wait(20)
        running.stop()
    exemplars = [(_b(t), _b(s), v) for tids, sids, vals in rows for t, s, v in zip(tids, sids, vals, strict=True)]
    assert exemplars and all(0 < v < 5 for _, _, v in exemplars)
    assert all(len(t) == 16 and t != bytes(16) for t, _, _ in exemplars)
    assert {(t, s) for t, s, _ in exemplars} <= spans  # each exemplar names a stored request span


def test_unsampled_requests_leave_no_exemplar_and_always_off_none():
    rec = Recorder()
    try:
        from opentelemetry.trace import SpanContext, TraceFlags

        h = http_server.current().duration
        h.record(0.02, "GET", "/a", 200, None, SpanContext(1, 2, False, TraceFlags(0)))
        h.record(0.03, "GET", "/a", 200, None, SpanContext(3, 4, False, TraceFlags(1)))
        h.exemplars = "always_off"
        h.record(0.04, "GET", "/a", 200, None, SpanContext(5, 6, False, TraceFlags(1)))
        (point,) = rec.points("http.server.request.duration")
        assert point.count == 3 and [(e.trace_id, e.span_id) for e in point.exemplars] == [(3, 4)]
    finally:
        rec.close()
