"""Editing, disabling and deleting a rule while its alert fires: the alert the old rule made is
resolved (in the history and to the receivers, once), never left firing in a receiver forever.
A real HTTP receiver on loopback; time is the injected clock."""

from __future__ import annotations

from testkit.receiver import Receiver
from tracehouse.alerts import Engine, build_config

from .helpers import Clock
from .spanfactory import add_series

DOWN = {"alert": "Down", "kind": "metric", "metric": "up", "aggregation": "last", "window": "30s", "op": "==",
        "threshold": 0, "group_by": ["service", "instance"], "labels": {"severity": "critical"}}


def _engine(store, clock, rx):
    cfg = build_config([("t.yaml", {
        "receivers": [{"name": "ops", "webhook": {"url": rx.url}}],
        "route": {"receiver": "ops", "group_by": ["alertname", "service"], "group_wait": "10s",
                  "group_interval": "1m", "repeat_interval": "4h"},
        "notifications": {"allow_private_destinations": True}})])
    return Engine(store, cfg, clock=clock, dashboard_url="http://d")


def _firing_and_notified(store):
    rx, clock = Receiver(), Clock()
    add_series(store, clock.s, 'up{service="shop",instance="a"}', "0x100", interval_s=10)
    e = _engine(store, clock, rx)
    e.put_rule(DOWN, rule_id="down")
    e.run_once()
    clock.advance(10)
    e.run_once()
    assert [(m["status"], [a["labels"]["severity"] for a in m["alerts"]]) for m in rx.bodies] == \
        [("firing", ["critical"])]
    return e, clock, rx


def _after_change(e, clock, rx, minutes=3):
    for _ in range(minutes * 6):
        clock.advance(10)
        e.run_once()
    return [(m["status"], [(a["status"], a["labels"].get("severity")) for a in m["alerts"]]) for m in rx.bodies[1:]]


def test_deleting_a_firing_rule_resolves_its_alert(chdb_store):
    e, clock, rx = _firing_and_notified(chdb_store)
    assert e.delete_rule("down")
    assert _after_change(e, clock, rx) == [("resolved", [("resolved", "critical")])]
    assert [(h["from_state"], h["to_state"]) for h in e.history("down")][0] == ("firing", "resolved")


def test_disabling_a_firing_rule_resolves_its_alert(chdb_store):
    e, clock, rx = _firing_and_notified(chdb_store)
    e.put_rule(dict(DOWN, enabled=False), rule_id="down")
    assert _after_change(e, clock, rx) == [("resolved", [("resolved", "critical")])]
    assert [a.state for a in e.current_alerts()] == ["resolved"]


def test_editing_a_firing_rules_labels_resolves_the_old_alert(chdb_store):
    e, clock, rx = _firing_and_notified(chdb_store)
    e.put_rule(dict(DOWN, labels={"severity": "warning"}), rule_id="down")
    sent = _after_change(e, clock, rx)
    # the old label set is resolved; the new one fires (both in the group's next message)
    assert sent == [("firing", [("firing", "warning"), ("resolved", "critical")])]
    assert sorted((a.labels["severity"], a.state) for a in e.current_alerts()) == \
        [("critical", "resolved"), ("warning", "firing")]


def test_editing_a_firing_rules_threshold_keeps_it_firing_without_a_second_message(chdb_store):
    e, clock, rx = _firing_and_notified(chdb_store)
    e.put_rule(dict(DOWN, op="<", threshold=0.5, **{"for": "5m"}), rule_id="down")  # still met
    assert _after_change(e, clock, rx) == []
    assert [a.state for a in e.current_alerts()] == ["firing"]
    e.put_rule(dict(DOWN, threshold=1), rule_id="down")  # no longer met: resolved at the next evaluation
    assert _after_change(e, clock, rx) == [("resolved", [("resolved", "critical")])]


def test_a_disabled_rules_resolved_alert_goes_when_its_retention_runs_out(store):
    """A disabled rule is not evaluated, but what it left is not listed for ever: its resolved alert
    goes after the retention an enabled rule's resolved alert has (and not back at a restart)."""
    e, clock, rx = _firing_and_notified(store)
    e.put_rule(dict(DOWN, enabled=False), rule_id="down")
    assert _after_change(e, clock, rx) == [("resolved", [("resolved", "critical")])]
    assert [a["state"] for a in e.alerts()] == ["resolved"]  # shown while receivers and the API may need it
    for _ in range(13):
        clock.advance(60)
        e.run_once()
    assert e.alerts() == [] and e.current_alerts() == []
    assert [(h["from_state"], h["to_state"]) for h in e.history("down")][0] == ("resolved", "deleted")
    assert _engine(store, clock, rx).alerts() == []  # deleted in the store too
    assert e.get_rule("down") is not None and not e.get_rule("down").rule.enabled
    assert len(rx.bodies) == 2


def _file_engine(store, clock, rx, rules):
    cfg = build_config([("t.yaml", {
        "groups": [{"name": "g", "interval": "10s", "rules": rules}],
        "receivers": [{"name": "ops", "webhook": {"url": rx.url}}],
        "route": {"receiver": "ops", "group_by": ["alertname", "service"], "group_wait": "10s",
                  "group_interval": "1m", "repeat_interval": "4h"},
        "notifications": {"allow_private_destinations": True}})])
    return Engine(store, cfg, clock=clock, dashboard_url="http://d")


def _fire_file_rule(store, clock, rx) -> None:
    """An engine with DOWN in its rule file, evaluated until the alert fired (one notification)."""
    add_series(store, clock.s, 'up{service="shop",instance="a"}', "0x100", interval_s=10)
    e = _file_engine(store, clock, rx, [DOWN])
    e.run_once()
    clock.advance(10)
    e.run_once()
    assert [m["status"] for m in rx.bodies] == ["firing"]


def test_a_firing_file_rule_removed_or_renamed_at_a_restart_is_resolved_once(chdb_store):
    rx, clock = Receiver(), Clock()
    _fire_file_rule(chdb_store, clock, rx)
    # restarted with the rule renamed in its file: the old alert is resolved, the new one fires
    e = _file_engine(chdb_store, clock, rx, [dict(DOWN, alert="ShopDown")])
    sent = _after_change(e, clock, rx)
    assert len(sent) == 2
    assert sorted((a["labels"]["alertname"], a["status"]) for m in rx.bodies[1:] for a in m["alerts"]) == \
        [("Down", "resolved"), ("ShopDown", "firing")]
    assert [(h["from_state"], h["to_state"]) for h in e.history("g/Down")][0] == ("firing", "resolved")
    # and nothing of it again at the next restart
    e = _file_engine(chdb_store, clock, rx, [dict(DOWN, alert="ShopDown")])
    assert _after_change(e, clock, rx, minutes=1)[2:] == []
    assert len(rx.bodies) == 3


def test_a_firing_file_rule_disabled_at_a_restart_is_resolved_once(chdb_store):
    """`enabled: false` put in the rule file while the server was down: the alert it fired is resolved
    (in the history and to the receivers, once), as disabling the rule through the API does."""
    rx, clock = Receiver(), Clock()
    _fire_file_rule(chdb_store, clock, rx)
    e = _file_engine(chdb_store, clock, rx, [dict(DOWN, enabled=False)])
    assert _after_change(e, clock, rx) == [("resolved", [("resolved", "critical")])]
    assert [(h["from_state"], h["to_state"]) for h in e.history("g/Down")][0] == ("firing", "resolved")
    e = _file_engine(chdb_store, clock, rx, [dict(DOWN, enabled=False)])  # nothing of it again
    assert _after_change(e, clock, rx, minutes=1)[1:] == []
    assert len(rx.bodies) == 2


def test_a_rule_deleted_through_another_engine_is_gone_after_its_reload(chdb_store):
    """A standby (another `alerts run` on the cluster, or the next holder of the lease) reloads from
    the store: a rule the leader deleted must not come back to be evaluated when it takes over."""
    rx, clock = Receiver(), Clock()
    add_series(chdb_store, clock.s, 'up{service="shop",instance="a"}', "0x100", interval_s=10)
    leader = _engine(chdb_store, clock, rx)
    leader.put_rule(DOWN, rule_id="down")
    standby = _engine(chdb_store, clock, rx)
    assert standby.get_rule("down") is not None
    assert leader.delete_rule("down")
    standby.reload(replace=True)
    assert standby.get_rule("down") is None
    standby.run_once()
    assert standby.current_alerts() == []


def test_two_rules_making_the_same_alert_do_not_flap_its_notifications(chdb_store):
    """Two rules (say a file's and an API copy) with one name and labels make alerts with the same
    fingerprint, as in Alertmanager: while one fires, the other's resolving must not send a resolved
    message followed by a new firing one."""
    rx, clock = Receiver(), Clock()
    add_series(chdb_store, clock.s, 'up{service="shop",instance="a"}', "0x100", interval_s=10)
    add_series(chdb_store, clock.s, 'other{service="shop",instance="a"}', "0x6", interval_s=10)
    e = _engine(chdb_store, clock, rx)
    e.put_rule(DOWN, rule_id="down")
    e.put_rule(dict(DOWN, metric="other"), rule_id="down-copy")  # fires, then its series ends
    e.run_once()
    clock.advance(10)
    e.run_once()
    assert [m["status"] for m in rx.bodies] == ["firing"]
    sent = _after_change(e, clock, rx, minutes=4)
    assert sorted(a.labels["instance"] + ":" + a.state for a in e.current_alerts()) == ["a:firing", "a:resolved"]
    assert sent == []
