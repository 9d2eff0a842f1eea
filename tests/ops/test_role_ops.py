"""Every server role exposes Prometheus metrics (prometheus_client, read back with its parser) and
``/readyz``; ``tracehouse serve --self-observe`` stores its own traces and metrics under the
reserved service ``tracehouse``, and shows them through its own pages and API."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.waiting import wait_for
from tracehouse.config import Settings

from .helpers import Role, rules_file

RULES = """
groups:
  - name: watch
    interval: 1s
    rules:
      - {alert: GhostSilent, kind: absence, service: ghost, window: 1m, op: "==", threshold: 0}
"""


def _families(text: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _metrics(role: Role, base: str | None = None) -> dict[str, dict]:
    status, text = role.text("/metrics", base)
    assert status == 200
    return _families(text)


@pytest.fixture
def serve(tmp_path):
    role = Role(tmp_path, args=("--rules", rules_file(tmp_path, RULES), "--self-observe"),
                env={"TRACEHOUSE_SELF_OBSERVE_INTERVAL": "1", "TRACEHOUSE_RETENTION_INTERVAL": "3600"})
    yield role
    role.stop()


def test_serve_exposes_every_role_and_observes_itself(serve):
    for base in (serve.api, serve.endpoint):
        assert serve.text("/readyz", base) == (200, "ready\n")
    serve.get("/api/services?since=5m")
    serve.get("/api/storage")

    def complete():
        m = _metrics(serve)
        wanted = ["tracehouse_collector_written_items_total", "tracehouse_alerts_rule_evaluation_seconds_count",
                  "tracehouse_retention_runs_total", "tracehouse_self_observe_exported_total"]
        done = all(w in m for w in wanted) and m["tracehouse_retention_runs_total"][()] >= 1
        return m if done else None

    m = wait_for(complete, 30, what="metrics of every role")
    # the collector: ingest and write rates, WAL bytes and lag, insert latency
    for name in ("tracehouse_collector_received_items_total", "tracehouse_collector_buffer_bytes",
                 "tracehouse_collector_buffer_age_seconds", "tracehouse_collector_writer_batch_seconds_bucket",
                 "tracehouse_collector_wal_records_total"):
        assert name in m, name
    # the dashboard: latency by route template
    routes = {dict(k)["route"] for k in m["tracehouse_dashboard_request_seconds_count"]}
    assert {"/api/services", "/api/storage", "/readyz"} <= routes
    # the alert engine: evaluations per group, failures, notifications (none configured: no series yet)
    assert m["tracehouse_alerts_rule_evaluation_seconds_count"][(("group", "watch"),)] >= 1
    assert m["tracehouse_alerts"][(("state", "firing"),)] == 1
    assert m["tracehouse_retention_runs_total"][()] >= 1
    assert m["process_resident_memory_bytes"][()] > 0
    # the same process registry on both ports
    assert "tracehouse_dashboard_request_seconds_count" in _metrics(serve, serve.endpoint)

    # its own traces and metrics, in its own store, under the reserved service name
    def own_traces():
        t = serve.get("/api/traces?service=tracehouse&since=5m&limit=200")["traces"]
        roots = {x["root_operation"]: x for x in t}
        return roots if {"GET /api/storage", "alerts group watch", "retention run"} <= set(roots) else None

    roots = wait_for(own_traces, 30, what="the server's own traces")
    assert "tracehouse" in {s["service"] for s in serve.get("/api/services?since=5m")["services"]}
    full = serve.get(f"/api/traces/{roots['GET /api/storage']['trace_id']}")
    queries = [s for s in full["spans"] if s["name"].startswith("SELECT ")]
    assert queries and all(s["attributes"]["db.system"] == "clickhouse" for s in queries)
    assert any("system.parts" in s["attributes"]["db.query.text"] for s in queries)
    rule = serve.get(f"/api/traces/{roots['alerts group watch']['trace_id']}")
    assert {"alerts rule watch/GhostSilent"} <= {s["name"] for s in rule["spans"]}

    def own_metric():
        s = serve.get("/api/metrics?name=tracehouse_collector_written_items_total&service=tracehouse"
                      "&since=5m&agg=last&group_by=signal")["series"]
        return s or None

    series = wait_for(own_metric, 30, what="the server's own metrics in its store")
    assert {x["labels"].get("signal") for x in series} >= {"traces", "metrics"}


def test_self_observe_is_off_by_default_and_each_role_alone_has_its_endpoints(tmp_path):
    assert Settings().self_observe is False
    roles = [Role(tmp_path / name, cmd=cmd) for name, cmd in
             (("c", ("collector",)), ("d", ("dashboard",)), ("a", ("alerts", "run")))]
    collector, dashboard, alerts = roles
    try:
        for r, base in ((collector, collector.endpoint), (dashboard, dashboard.api), (alerts, alerts.api)):
            assert wait_for(lambda r=r, base=base: r.text("/readyz", base) == (200, "ready\n"), 30,
                            what=f"{r.cmd} ready")
            assert r.text("/healthz", base)[0] == 200
        mc = _metrics(collector, collector.endpoint)
        assert "tracehouse_collector_buffer_bytes" in mc and "tracehouse_self_observe_exported_total" not in mc
        assert "tracehouse_retention_runs_total" in wait_for(
            lambda: _metrics(collector, collector.endpoint).get("tracehouse_retention_runs_total") and
            _metrics(collector, collector.endpoint), 30, what="the collector's retention job")
        dashboard.get("/api/services")
        md = _metrics(dashboard)
        assert (("code", "200"), ("method", "GET"), ("route", "/api/services")) in md[
            "tracehouse_dashboard_request_seconds_count"]
        ma = _metrics(alerts)
        assert "tracehouse_alerts" in ma and "process_cpu_seconds_total" in ma
        assert ma["tracehouse_build_info"][(("roles", "alerts"), ("version", "0.1.0"))] == 1
    finally:
        for r in roles:
            assert r.stop() == 0, r.output()
