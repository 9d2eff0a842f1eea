"""The JSON query API over seeded embedded chDB: shapes, 400s with reasons, 404s, and injection
payloads through every filter."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from testkit.spangen import Gen, generate
from tracehouse.dashboard import create_app

NS = 1_000_000_000


@pytest.fixture
def api(chdb_store):
    now = time.time_ns()
    cols, tids = generate(2000, now - 300 * NS, 290 * NS, Gen(error_rate=0.2), store=chdb_store)
    chdb_store.insert("spans", cols)
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)
    with TestClient(app) as client:
        yield client, tids


def test_services_operations_series(api):
    c, _ = api
    r = c.get("/api/services", params={"since": "15m"})
    assert r.status_code == 200
    services = {s["service"]: s for s in r.json()["services"]}
    assert set(services) == {"gateway", "orders", "payments", "inventory", "users"}
    assert {"rate", "error_rate", "p50_ms", "p95_ms", "p99_ms", "span_count"} <= set(services["orders"])
    ops = c.get("/api/services/orders/operations").json()["operations"]
    assert any(o["operation"] == "payments call" for o in ops)
    series = c.get("/api/services/gateway/series", params={"step": "2m", "since": "30m"}).json()
    assert series["step_s"] == 120 and sum(p["requests"] for p in series["points"]) == services["gateway"]["requests"]


def test_relative_and_absolute_times(api):
    c, _ = api
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    a = c.get("/api/services", params={"since": since, "until": until}).json()["services"]
    b = c.get("/api/services", params={"since": "1h", "until": "now"}).json()["services"]
    assert [s["requests"] for s in a] == [s["requests"] for s in b]


def test_trace_search_and_lookup(api):
    c, tids = api
    r = c.get("/api/traces", params=[("service", "payments"), ("status", "error"), ("attr", "region=eu-west"),
                                      ("limit", "500")])
    assert r.status_code == 200
    for t in r.json()["traces"]:
        assert t["error"] and "payments" in t["services"]
        assert {"trace_id", "root_service", "root_operation", "start_ns", "duration_ms", "span_count"} <= set(t)
    t = c.get(f"/api/traces/{tids[0].hex()}").json()
    assert t["trace_id"] == tids[0].hex() and t["spans"]
    span = t["spans"][0]
    assert {"span_id", "parent_span_id", "service", "name", "kind", "start_ns", "duration_ms", "status",
            "attributes", "resource", "events", "links"} <= set(span)


def test_service_map_metrics_logs_endpoints(api):
    c, _ = api
    m = c.get("/api/service-map").json()
    assert {"source": "gateway", "target": "orders"}.items() <= m["edges"][0].items() or any(
        e["source"] == "gateway" and e["target"] == "orders" for e in m["edges"])
    assert c.get("/api/metrics/names").json() == {"metrics": [], "total": 0, "truncated": False}
    assert c.get("/api/metrics", params={"name": "x"}).json()["series"] == []
    assert c.get("/api/logs").json() == {"logs": []}
    assert c.get("/api/storage").json()["backend"] == "chdb"
    assert c.get("/api/openapi.json").status_code == 200


@pytest.mark.parametrize("path,params,reason", [
    ("/api/services", {"since": "yesterday"}, "bad time"),
    ("/api/services", {"since": "now", "until": "1h"}, "since must be before until"),
    ("/api/services/orders/series", {"step": "1x"}, "bad duration"),
    ("/api/services/orders/series", {"step": "1m", "since": "7d"}, "step too small"),
    ("/api/traces", {"limit": "0"}, "limit"),
    ("/api/traces", {"limit": "ten"}, "limit must be an integer"),
    ("/api/traces", {"status": "maybe"}, "status"),
    ("/api/traces", {"min_duration_ms": "fast"}, "min_duration_ms"),
    ("/api/traces", {"attr": "novalue"}, "key=value"),
    ("/api/metrics", {"name": "x", "agg": "median"}, "agg"),
    ("/api/logs", {"severity": "loud"}, "severity"),
    ("/api/logs", {"trace_id": "nothex"}, "trace id"),
    ("/api/traces/zzz", {}, "trace id"),
    ("/api/services", {"until": "0"}, "before 1970"),
    ("/api/traces", {"until": "25000d"}, "before 1970"),
    ("/api/traces", {"until": "9999999d"}, "longer than 136 years"),
    ("/api/logs", {"since": "1960-01-01T00:00:00Z", "until": "1970-01-02T00:00:00Z"}, "before 1970"),
    ("/api/service-map", {"since": "2106-02-07T00:00:00Z", "until": "2106-03-01T00:00:00Z"}, "after 2106"),
])
def test_bad_parameters_get_400_with_reason(api, path, params, reason):
    c, _ = api
    r = c.get(path, params=params)
    assert r.status_code == 400, r.text
    assert reason in r.json()["error"]


def test_unknown_trace_is_404(api):
    c, _ = api
    r = c.get(f"/api/traces/{os.urandom(16).hex()}")
    assert r.status_code == 404 and "not found" in r.json()["error"]


PAYLOADS = ["x' OR '1'='1", "x'; DROP TABLE spans; --", "x' UNION ALL SELECT name FROM system.tables --",
            "url('http://127.0.0.1:1/x', CSV, 'a String')", "x' SETTINGS readonly=0 --", "{service:String}"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_injection_through_every_filter_is_data_or_400(api, payload):
    c, tids = api
    checks = [
        ("/api/traces", [("service", payload), ("operation", payload), ("attr", f"{payload}={payload}")]),
        ("/api/traces", [("attr", f"region={payload}")]),
        (f"/api/services/{payload}/operations", []),
        (f"/api/services/{payload}/series", []),
        ("/api/metrics", [("name", payload), ("service", payload), ("label", f"{payload}={payload}"),
                          ("group_by", payload)]),
        ("/api/metrics/names", [("service", payload)]),
        ("/api/logs", [("service", payload), ("q", payload), ("event_name", payload)]),
        ("/api/services", [("since", payload)]),
        (f"/api/traces/{payload}", []),
    ]
    for path, params in checks:
        r = c.get(path, params=params)
        assert r.status_code in (200, 400, 404), (path, r.status_code, r.text)
        if r.status_code == 200:
            body = r.json()
            values = [v for v in body.values() if isinstance(v, list)]
            assert all(v == [] for v in values) or body.get("points") == [] or body.get("series") == [], (path, body)
    # still intact and still answering
    assert len(c.get("/api/traces", params={"limit": "1000"}).json()["traces"]) == len(tids)


def test_an_unexpected_error_answers_500_with_an_error_id_not_a_reset_connection(chdb_store, caplog):
    """A bug in a handler (here a route that raises) answers JSON under /api and an error page
    elsewhere, both with an error id the server log carries; the connection is not dropped."""
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)

    @app.get("/api/boom")
    def boom_api():
        raise TypeError("'int' object is not iterable")

    @app.get("/boom")
    def boom_page():
        raise KeyError("secret detail")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/boom")
        assert r.status_code == 500
        assert r.json()["error"] == "internal error" and len(r.json()["error_id"]) == 16
        assert "not iterable" not in r.text
        page = c.get("/boom")
        assert page.status_code == 500 and "text/html" in page.headers["content-type"]
        assert "secret detail" not in page.text
    assert r.json()["error_id"] in caplog.text
