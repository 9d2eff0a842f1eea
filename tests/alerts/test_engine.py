"""The engine on real ClickHouse (embedded chDB, and the 18.16 server for RED and SQL rules):
lifecycle at exact ``for`` boundaries, keep_firing_for, restart in the middle, history."""

from __future__ import annotations

import pytest

from tracehouse.alerts import Engine, RuleError, build_config, parse_rule
from tracehouse.alerts.state import AlertingRule

from .helpers import NS, Clock
from .spanfactory import add_series, add_spans


def _engine(store, clock, *rules, **kw) -> Engine:
    cfg = build_config([("test.yaml", {"groups": [{"name": "g", "interval": "10s", "rules": list(rules)}]})])
    return Engine(store, cfg, clock=clock, dashboard_url="http://dash:8080", **kw)


ERRORS = {"alert": "PaymentsErrors", "kind": "red", "service": "payments", "signal": "error_rate", "window": "1m",
          "op": ">", "threshold": 0.05, "for": "30s", "labels": {"severity": "critical"},
          "annotations": {"summary": "payments errors at {{ value }}",
                          "link": "{{ dashboard_url }}/services/{{ labels.service }}"}}


def _states(engine):
    return {a.labels["alertname"]: a.state for a in engine.current_alerts()}


def test_red_error_rate_lifecycle_at_exact_for_boundary(store):
    clock = Clock()
    base = clock.s
    add_spans(store, base, service="payments", name="POST /pay", every="1s", **{"for": "10m"}, error_ratio=0.5)
    add_spans(store, base, service="search", name="GET /q", every="1s", **{"for": "10m"})
    e = _engine(store, clock, ERRORS)
    clock.advance(60)
    tr = e.run_once()
    assert [(t.from_state, t.to_state) for t in tr] == [("inactive", "pending")]
    a = e.current_alerts()[0]
    assert a.labels == {"alertname": "PaymentsErrors", "service": "payments", "severity": "critical"}
    assert abs(a.value - 0.5) < 0.01
    assert a.annotations["summary"] == "payments errors at 0.5"
    assert a.annotations["link"] == "http://dash:8080/services/payments"
    clock.advance(30 - 1e-9)
    e.run_once(force=True)
    assert _states(e) == {"PaymentsErrors": "pending"}
    clock.advance(1e-9)  # exactly `for` after the first active evaluation
    tr = e.run_once(force=True)
    assert [(t.from_state, t.to_state) for t in tr] == [("pending", "firing")]
    # traffic stops at base+600; the 1m window (rounded out to minutes) is empty from base+660
    clock.ns = (base + 660) * NS
    tr = e.run_once(force=True)
    assert [(t.from_state, t.to_state) for t in tr] == [("firing", "resolved")]
    hist = e.history()
    assert [(h["from_state"], h["to_state"]) for h in reversed(hist)] == [
        ("inactive", "pending"), ("pending", "firing"), ("firing", "resolved")]


def test_keep_firing_for_and_pending_that_clears(chdb_store):
    clock = Clock()
    base = clock.s
    add_series(chdb_store, base, 'queue.depth{service="worker",instance="w1"}', "100x6 0x30", interval_s=10)
    rule = {"alert": "QueueDeep", "kind": "metric", "metric": "queue.depth", "aggregation": "last", "window": "15s",
            "op": ">", "threshold": 50, "keep_firing_for": "30s"}
    pend = dict(rule, alert="QueueDeepFor", **{"for": "2m"})
    e = _engine(chdb_store, clock, rule, pend)
    clock.advance(10)
    e.run_once()
    assert _states(e) == {"QueueDeep": "firing", "QueueDeepFor": "pending"}
    assert e.current_alerts()[0].labels["instance"] == "w1"
    clock.ns = (base + 70) * NS  # the value dropped to 0 at base+70
    tr = e.run_once(force=True)
    assert ("pending", "inactive") in [(t.from_state, t.to_state) for t in tr]
    assert _states(e) == {"QueueDeep": "firing"}  # kept by keep_firing_for
    clock.ns = (base + 99) * NS
    e.run_once(force=True)
    assert _states(e) == {"QueueDeep": "firing"}
    clock.ns = (base + 100) * NS  # 30 s after the condition first failed
    e.run_once(force=True)
    assert _states(e) == {"QueueDeep": "resolved"}


def test_restart_resumes_pending_and_firing(chdb_store):
    clock = Clock()
    base = clock.s
    add_spans(chdb_store, base, service="payments", name="POST /pay", every="1s", **{"for": "10m"}, error_ratio=0.5)
    fast = dict(ERRORS, alert="FastErrors", **{"for": "0s"})
    e1 = _engine(chdb_store, clock, ERRORS, fast)
    clock.advance(60)
    e1.run_once()
    assert _states(e1) == {"PaymentsErrors": "pending", "FastErrors": "firing"}
    active_at = {a.labels["alertname"]: a.active_at_ns for a in e1.current_alerts()}
    # a new engine on the same store (a restart) resumes both
    clock.advance(20)
    e2 = _engine(chdb_store, clock, ERRORS, fast)
    assert _states(e2) == {"PaymentsErrors": "pending", "FastErrors": "firing"}
    assert {a.labels["alertname"]: a.active_at_ns for a in e2.current_alerts()} == active_at
    tr = e2.run_once()
    assert tr == []  # nothing new: still pending (20 s < 30 s), still firing
    clock.advance(10)
    tr = e2.run_once(force=True)
    assert [(t.alert.labels["alertname"], t.to_state) for t in tr] == [("PaymentsErrors", "firing")]
    e3 = _engine(chdb_store, clock, ERRORS, fast)
    assert _states(e3) == {"PaymentsErrors": "firing", "FastErrors": "firing"}


def test_sql_rule_with_labels(store):
    clock = Clock()
    base = clock.s
    add_spans(store, base, service="payments", name="POST /pay", every="1s", **{"for": "2m"}, error_ratio=0.25,
              attrs={"region": "eu"})
    add_spans(store, base, service="payments", name="POST /pay", every="1s", **{"for": "2m"}, error_ratio=0.05,
              attrs={"region": "us"})
    rule = {"alert": "FailedPaymentsByRegion", "kind": "sql", "window": "1m", "op": ">", "threshold": 10,
            "query": "SELECT count() AS value, attr_values[indexOf(attr_keys, 'region')] AS region FROM spans "
                     "WHERE service = 'payments' AND status_code = 2 AND timestamp >= {start:UInt32} "
                     "AND timestamp < {end:UInt32} GROUP BY region ORDER BY region",
            "annotations": {"summary": "{{ value }} failed payments in {{ labels.region }}"}}
    e = _engine(store, clock, rule)
    clock.advance(90)
    e.run_once()
    assert e.rules["g/FailedPaymentsByRegion"].health == "ok", e.rules["g/FailedPaymentsByRegion"].last_error
    alerts = e.current_alerts()
    assert [(a.labels["region"], a.state, a.value) for a in alerts] == [("eu", "firing", 15.0)]
    assert alerts[0].annotations["summary"] == "15 failed payments in eu"
    prev = e.preview(rule)
    assert [(s["labels"]["region"], s["value"], s["matches"]) for s in prev["samples"]] == [
        ("eu", 15.0, True), ("us", 3.0, False)]


def test_red_latency_and_rate_values(store):
    clock = Clock()
    base = clock.s
    add_spans(store, base, service="api", name="GET /a", every="1s", **{"for": "2m"}, duration_ms=120)
    add_spans(store, base, service="api", name="GET /b", every="2s", **{"for": "2m"}, duration_ms=40)
    clock.advance(120)
    p95 = parse_rule({"alert": "Slow", "kind": "red", "service": "api", "operation": "GET /a", "signal": "p95",
                      "window": "1m"})
    rate = parse_rule({"alert": "Busy", "kind": "red", "signal": "rate", "window": "1m"})
    ar = AlertingRule(p95)
    ar.eval(clock(), store.query, store.db)
    [s] = ar.last_samples
    assert s.labels == {"service": "api", "operation": "GET /a"} and abs(s.value - 120) < 1
    ar = AlertingRule(rate)
    ar.eval(clock(), store.query, store.db)
    [s] = ar.last_samples  # minutes base+60..base+119 → 60 + 30 calls over 60 s
    assert s.labels == {"service": "api"} and abs(s.value - 1.5) < 1e-9


def test_absence_middleware_and_error_health(chdb_store):
    clock = Clock()
    base = clock.s
    add_spans(chdb_store, base, service="cart", every="5s", **{"for": "1m"})
    add_series(chdb_store, base, 'tracehouse.probe.up{service="cart",probe.target="redis:6379",probe.kind="redis"}',
               "1 1 0 0", interval_s=10)
    gone = {"alert": "CartSilent", "kind": "absence", "service": "cart", "window": "2m"}
    mw = {"alert": "RedisDown", "kind": "middleware", "window": "15s", "labels": {"severity": "critical"}}
    broken = {"alert": "Broken", "kind": "sql", "query": "SELECT toFloat64(nosuchcolumn) AS value FROM spans"}
    e = _engine(chdb_store, clock, gone, mw, broken)
    clock.advance(30)
    e.run_once()
    assert _states(e) == {"RedisDown": "firing"}
    [a] = e.current_alerts()
    assert a.labels == {"alertname": "RedisDown", "service": "cart", "target": "redis:6379", "probe_kind": "redis",
                        "severity": "critical"}
    # the database's text stays in the server log; viewers see an id to find it by
    assert e.rules["g/Broken"].health == "err" and "error id" in e.rules["g/Broken"].last_error
    assert "nosuchcolumn" not in e.rules["g/Broken"].last_error
    assert e.rules["g/Broken"].state == "error"
    assert any(h["to_state"] == "error" and h["rule_id"] == "g/Broken" for h in e.history())
    clock.ns = (base + 60 + 121) * NS
    e.run_once(force=True)
    assert _states(e)["CartSilent"] == "firing"


def _many(base_s: int) -> dict:
    """A SQL rule that matches 3 label sets until base+100, and 1,500 from then on."""
    return {"alert": "PerUser", "kind": "sql", "op": ">", "threshold": 0,
            "query": f"SELECT 1 AS value, arrayJoin(range(if({{end:UInt32}} > {base_s + 100}, 1500, 3))) AS n"}


def test_a_rule_matching_more_label_sets_than_its_limit_fails_and_keeps_its_alerts(chdb_store):
    clock = Clock()
    base = clock.s
    e = _engine(chdb_store, clock, _many(base))
    clock.advance(60)
    e.run_once()
    assert sorted(a.labels["n"] for a in e.current_alerts()) == ["0", "1", "2"]
    clock.advance(60)  # now 1,500 label sets meet the condition: over the default limit of 1,000
    e.run_once(force=True)
    ar = e.rules["g/PerUser"]
    assert ar.health == "err" and ar.state == "error"
    assert ar.last_error == ("1,500 label sets meet the condition, over the rule's limit of 1,000 "
                             "(set limit, up to 10,000, or aggregate)")
    # as after a failed query: no alert made, none resolved
    assert sorted((a.labels["n"], a.state) for a in e.current_alerts()) == [
        ("0", "firing"), ("1", "firing"), ("2", "firing")]
    assert any(h["to_state"] == "error" and h["rule_id"] == "g/PerUser" for h in e.history())
    raised = _engine(chdb_store, clock, dict(_many(base), alert="PerUserAll", limit=2000))
    raised.run_once()
    assert raised.rules["g/PerUserAll"].health == "ok" and len(raised.current_alerts()) == 1500


def test_a_rule_query_returning_more_rows_than_it_may_is_an_error_not_a_silent_cut(store):
    clock = Clock()
    rule = {"alert": "Wide", "kind": "sql", "op": ">", "threshold": 5,
            "query": "SELECT if(n = 15000, 10, 1) AS value, arrayJoin(range(20000)) AS n"}
    e = _engine(store, clock, rule)
    clock.advance(60)
    e.run_once()
    ar = e.rules["g/Wide"]
    # before, the first 10,000 rows were evaluated and the rest dropped: the label set n=15000,
    # which meets the condition, never alerted, and the rule's health read "ok"
    assert ar.health == "err", [a.labels for a in e.current_alerts()]
    assert "10,000 rows" in ar.last_error or "hit a limit of rows" in ar.last_error, ar.last_error
    assert e.current_alerts() == []


def test_the_limit_is_a_whole_number_up_to_the_row_cap():
    def rule(**over):
        return parse_rule({"alert": "A", "kind": "sql", "query": "SELECT 1 AS value", **over})

    assert rule().limit == 1000 and rule(limit=1).limit == 1 and rule(limit=10_000).limit == 10_000
    assert rule(limit=None).limit == 1000  # an empty YAML value, as for the other fields
    for bad in (0, -1, 10_001, True, "5", 2.5):
        with pytest.raises(RuleError, match="limit must be a whole number from 1 to 10,000"):
            rule(limit=bad)


def test_the_file_of_unsaved_changes_is_bounded_and_a_bad_one_is_ignored(chdb_store, tmp_path, caplog):
    import json
    import os

    from tracehouse.alerts.engine import UNSAVED_FILE
    from tracehouse.alerts.state import Alert, Transition
    from tracehouse.alerts.unsaved import Unsaved

    path = str(tmp_path / UNSAVED_FILE)
    kept = Unsaved(path=path, max_file_bytes=40_000)
    alerts = [Alert("g/A", f"fp{i}", {"alertname": "A", "i": str(i)}, "firing") for i in range(100)]
    for i, a in enumerate(alerts):
        kept.add([Transition(a, "pending", "firing")], 1_000 + i)
    kept.sync_file()
    assert 0 < os.path.getsize(path) <= 40_000 and not any(n.startswith(".") for n in os.listdir(tmp_path))
    doc = json.load(open(path))
    assert len(doc["alerts"]) == 100 and 0 < len(doc["history"]) < 100
    assert doc["history"][-1][1] == 1_099  # the newest rows are the ones kept
    again = Unsaved(path=path)
    assert again.load_file() == 100 + len(doc["history"])
    again.write(chdb_store)  # the store takes it: every alert, and the rows the file kept
    again.sync_file()
    assert not os.path.exists(path)
    from tracehouse.alerts import persist

    assert len(persist.load_alerts(chdb_store)["g/A"]) == 100
    with open(path, "w") as f:
        f.write('{"format": 1, "alerts": [["g/A"')  # cut short by a crash of the disk, say
    assert Unsaved(path=path).load_file() == 0
    assert "unreadable and ignored" in caplog.text
    caplog.clear()
    e = Engine(chdb_store, build_config([]), state_dir=str(tmp_path))  # starts in spite of it
    assert "unreadable and ignored" in caplog.text and len(e._unsaved) == 0
    assert os.path.exists(path)  # left for inspection


def test_under_a_lease_the_file_of_unsaved_changes_is_neither_taken_nor_written(chdb_store, tmp_path, caplog):
    """Another engine may have held the lease since this one stopped: what it decided from the store
    is newer than the file, which is dropped (and none written: it would never be read)."""
    import os

    from tracehouse.alerts.engine import UNSAVED_FILE
    from tracehouse.alerts.lease import ZooKeeperLease
    from tracehouse.alerts.state import Alert, Transition
    from tracehouse.alerts.unsaved import Unsaved

    path = str(tmp_path / UNSAVED_FILE)
    old = Unsaved(path=path)
    old.add([Transition(Alert("g/Always", "fp", {"alertname": "Always"}, "firing"), "pending", "firing")], 1)
    old.sync_file()
    assert os.path.exists(path)
    cfg = build_config([("f", {"groups": [{"name": "g", "rules": [
        {"alert": "Always", "kind": "sql", "query": "SELECT 1 AS value", "op": ">", "threshold": 0}]}]})])
    e = Engine(chdb_store, cfg, state_dir=str(tmp_path),
               lease=ZooKeeperLease("127.0.0.1:1", "/never-started"))  # never started: only its kind counts
    assert not os.path.exists(path) and "are dropped" in caplog.text
    assert e.current_alerts() == [] and len(e._unsaved) == 0
    e._unsaved.add([Transition(Alert("g/Always", "fp", {"alertname": "Always"}, "firing"), "pending", "firing")], 2)
    e._unsaved.sync_file()
    assert os.listdir(tmp_path) == []
