"""The alerts JSON API over a real engine and chDB, through FastAPI's test client."""

from __future__ import annotations

import json

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


RED = {"alert": "Hostile", "kind": "red", "service": "payments", "signal": "error_rate", "threshold": 0.5}


def test_rules_of_the_wrong_shape_are_refused_with_a_reason_and_not_stored(chdb_store):
    """Each of these once answered 500 (or reset the connection) or was stored as something else:
    ``group_by: 1`` raised TypeError, ``enabled: "false"`` stored an enabled rule, NaN went into
    the store and then could not be answered as JSON."""
    c, engine = _client(chdb_store, Clock())
    before = len(c.get("/api/alerts/rules").json()["rules"])
    bodies = [
        dict(RED, group_by=1), dict(RED, group_by="service"), dict(RED, group_by=[{"a": 1}]),
        dict(RED, enabled="false"), dict(RED, threshold=float("nan")), dict(RED, threshold=float("inf")),
        dict(RED, threshold=True), dict(RED, threshold=[1]), dict(RED, service={"a": 1}), dict(RED, operation=[]),
        dict(RED, signal=["error_rate"]), dict(RED, id={"x": 1}), dict(RED, group=[1]),
        dict(RED, labels={"severity": float("nan")}), dict(RED, interval=float("nan")), dict(RED, interval="99999999d"),
        dict(RED, **{"for": [1]}), dict(RED, window=float("inf")), dict(RED, op=None, threshold=None),
    ]
    for i, body in enumerate(bodies):  # as a client may send them: NaN and Infinity are literals Python's JSON reads
        raw = {"content": json.dumps(body), "headers": {"content-type": "application/json"}}
        r = c.post("/api/alerts/rules", **raw)
        assert r.status_code == 400, (body, r.status_code, r.text)
        assert r.json()["detail"], body
        if i % 4 == 0:  # previews are rate-limited per client (bursts of 5)
            p = c.post("/api/alerts/rules/preview", **raw)
            assert p.status_code == 400, (body, p.status_code, p.text)
    assert len(c.get("/api/alerts/rules").json()["rules"]) == before
    ok = c.post("/api/alerts/rules", json=dict(RED, group_by=["service"], enabled=False, threshold="0.25"))
    assert ok.status_code == 201, ok.text
    assert engine.get_rule(ok.json()["id"]).rule.enabled is False


def test_silences_of_the_wrong_shape_are_refused_with_a_reason(chdb_store):
    c, _ = _client(chdb_store, Clock())
    bodies = [
        {"matchers": "service=payments"}, {"matchers": 5}, {"matchers": [{"name": ["x"], "value": "y"}]},
        {"matchers": [{"name": "service", "value": 1}]}, {"matchers": [{"name": "bad name", "value": "x"}]},
        {"matchers": ["service=payments"], "starts_ns": "soon"}, {"matchers": ["service=payments"], "ends_ns": 1e308},
        {"matchers": ["service=payments"], "starts_ns": -5, "ends_ns": 10},
        {"matchers": ["service=payments"], "endsAt": "99999999999d"},
        {"matchers": ["service=payments"], "endsAt": "1" + "0" * 400 + "d"},  # an infinite float: was a 500
        {"matchers": ["service=payments"], "startsAt": "1960-01-01T00:00:00Z", "endsAt": "1970-01-02T00:00:00Z"},
        {"matchers": ["service=payments"], "endsAt": 30}, {"matchers": ["service=payments"], "comment": {"a": 1}},
    ]
    for body in bodies:
        r = c.post("/api/alerts/silences", json=body)
        assert r.status_code == 400, (body, r.status_code, r.text)
    assert c.get("/api/alerts/silences").json()["silences"] == []


def test_a_rule_id_must_name_a_page_of_its_own(chdb_store):
    """PUT took any id: a line break (the id regex's ``$`` matched before one, and PUT did not even
    check), "." and ".." (browsers resolve /alerts/rules/.. away) and "new" (the new-rule page)."""
    c, engine = _client(chdb_store, Clock())
    rule = {"alert": "Slow", "kind": "red", "service": "api", "signal": "p95", "threshold": 200}
    for rid in ("new", "a%0Ab", "a%0A"):  # "." and ".." never reach it through a client: covered below
        r = c.put(f"/api/alerts/rules/{rid}", json=rule)
        assert r.status_code == 400 and "id" in r.json()["detail"], (rid, r.status_code)
    for rid in ("new", ".", "..", "a\nb", "a\n", ""):
        assert c.post("/api/alerts/rules", json=dict(rule, id=rid)).status_code == 400, rid
    assert [r["id"] for r in c.get("/api/alerts/rules").json()["rules"]] == ["g/PaymentsErrors"]
    assert c.put("/api/alerts/rules/team.a:slow-1", json=rule).status_code == 200
