"""The alerts JSON API over a real engine and chDB, through FastAPI's test client."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient

from tracehouse.alerts import Engine, alerts_router, build_config

from .helpers import Clock
from .spanfactory import add_spans

YAML_RULE = {"alert": "PaymentsErrors", "kind": "red", "service": "payments", "signal": "error_rate",
             "threshold": 0.05, "labels": {"severity": "critical"}}


def _client(store, clock, require_role=None):
    cfg = build_config([("/etc/rules.yaml", {"groups": [{"name": "g", "rules": [YAML_RULE]}]})])
    engine = Engine(store, cfg, clock=clock)
    app = FastAPI()
    app.include_router(alerts_router(engine, require_role))
    return TestClient(app), engine


def test_rules_crud_yaml_read_only_and_validation(chdb_store):
    clock = Clock()
    c, engine = _client(chdb_store, clock)
    rules = c.get("/api/alerts/rules").json()["rules"]
    assert [(r["id"], r["read_only"]) for r in rules] == [("g/PaymentsErrors", True)]
    assert c.put("/api/alerts/rules/g/PaymentsErrors", json=YAML_RULE).status_code == 403
    assert c.delete("/api/alerts/rules/g/PaymentsErrors").status_code == 403
    r = c.post("/api/alerts/rules", json={"alert": "Bad", "kind": "red", "signal": "p42"})
    assert r.status_code == 400 and "signal" in r.json()["detail"]
    r = c.post("/api/alerts/rules", json={"alert": "Q", "kind": "sql", "query": "DROP TABLE spans"})
    assert r.status_code == 400 and "SELECT" in r.json()["detail"]
    r = c.post("/api/alerts/rules", json={"id": "slow", "alert": "Slow", "kind": "red", "service": "api",
                                          "signal": "p95", "threshold": 200})
    assert r.status_code == 201 and r.json()["read_only"] is False
    assert c.post("/api/alerts/rules", json={"id": "slow", "alert": "Slow2", "kind": "red",
                                             "signal": "p95"}).status_code == 409
    r = c.put("/api/alerts/rules/slow", json={"alert": "Slow", "kind": "red", "service": "api", "signal": "p99",
                                              "threshold": 300})
    assert r.status_code == 200 and r.json()["signal"] == "p99"
    # stored in ClickHouse: a new engine sees it
    assert Engine(chdb_store, clock=clock).get_rule("slow").rule.signal == "p99"
    assert c.delete("/api/alerts/rules/slow").status_code == 200
    assert c.get("/api/alerts/rules/slow").status_code == 404
    assert Engine(chdb_store, clock=clock).get_rule("slow") is None


def test_alerts_history_silences_preview(chdb_store):
    clock = Clock()
    add_spans(chdb_store, clock.s, service="payments", name="POST /pay", every="1s", **{"for": "2m"}, error_ratio=0.5)
    c, engine = _client(chdb_store, clock)
    clock.advance(60)
    engine.run_once()
    [a] = c.get("/api/alerts").json()["alerts"]
    assert a["state"] == "firing" and a["labels"]["service"] == "payments" and a["muted"] == ""
    h = c.get("/api/alerts/history", params={"rule_id": "g/PaymentsErrors"}).json()["history"]
    assert [x["to_state"] for x in h] == ["firing", "pending"]
    r = c.post("/api/alerts/silences", json={"matchers": ["service=payments"], "endsAt": "30m"})
    assert r.status_code == 201
    sid = r.json()["id"]
    assert c.get("/api/alerts").json()["alerts"][0]["muted"] == "silenced"
    assert c.post("/api/alerts/silences", json={"matchers": ["bad matcher"]}).status_code == 400
    assert c.delete(f"/api/alerts/silences/{sid}").status_code == 200
    assert c.get("/api/alerts/silences").json()["silences"] == []
    p = c.post("/api/alerts/rules/preview", json={"alert": "P", "kind": "red", "service": "payments",
                                                   "signal": "error_rate", "op": ">", "threshold": 0.9}).json()
    assert [(s["labels"], s["value"], s["matches"]) for s in p["samples"]] == [({"service": "payments"}, 0.5, False)]


def test_role_dependency_and_missing_engine(chdb_store):
    def require_role(role):
        def dep(request: Request):
            if role == "editor" and request.headers.get("x-role") != "editor":
                raise HTTPException(403, "editor role required")
        return dep

    c, _ = _client(chdb_store, Clock(), require_role)
    assert c.get("/api/alerts/rules").status_code == 200
    body = {"alert": "X", "kind": "red", "signal": "rate"}
    assert c.post("/api/alerts/rules", json=body).status_code == 403
    assert c.post("/api/alerts/rules", json=body, headers={"x-role": "editor"}).status_code == 201
    app = FastAPI()
    app.include_router(alerts_router(None))
    assert TestClient(app).get("/api/alerts").status_code == 503
