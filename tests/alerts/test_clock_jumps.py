"""The wall clock moving under the engine (an NTP step, a VM or laptop resumed): evaluation goes on
at the rule's interval, whatever the direction of the jump. Time is the injected clock; the store is
real (chDB)."""

from __future__ import annotations

from tracehouse.alerts import Engine, build_config

from .helpers import Clock
from .spanfactory import add_series

DOWN = {"alert": "Down", "kind": "metric", "metric": "up", "aggregation": "last", "window": "30s", "op": "==",
        "threshold": 0, "group_by": ["service", "instance"]}


def _engine(store, clock):
    cfg = build_config([("t.yaml", {"groups": [{"name": "g", "interval": "10s", "rules": [DOWN]}]})])
    return Engine(store, cfg, clock=clock)


def test_a_clock_stepped_back_does_not_stop_evaluation(chdb_store):
    clock = Clock()
    base = clock.s
    add_series(chdb_store, base - 3600, 'up{service="shop",instance="a"}', "1x500 0x400", interval_s=10)
    e = _engine(chdb_store, clock)
    clock.advance(10)
    e.run_once()
    assert [a.state for a in e.current_alerts()] == []
    clock.advance(-3600)  # stepped back an hour: the next evaluation is due in 10 s, not in an hour
    clock.advance(10)
    e.run_once()
    assert e.get_rule("g/Down").last_eval_ns == clock.ns
    assert e.next_due_ns() == clock.ns + 10 * 1_000_000_000


def test_a_clock_stepped_back_neither_delays_for_nor_notifications(chdb_store):
    from testkit.receiver import Receiver

    rx, clock = Receiver(), Clock()
    base = clock.s
    add_series(chdb_store, base - 3600, 'up{service="shop",instance="a"}', "0x800", interval_s=10)
    add_series(chdb_store, base - 3600, 'up{service="shop",instance="b"}', "_x6 0x30 1x800", interval_s=10)
    cfg = build_config([("t.yaml", {
        "groups": [{"name": "g", "interval": "10s", "rules": [dict(DOWN, **{"for": "20s"})]}],
        "receivers": [{"name": "ops", "webhook": {"url": rx.url}}],
        "route": {"receiver": "ops", "group_by": ["alertname"], "group_wait": "10s", "group_interval": "1m"},
        "notifications": {"allow_private_destinations": True}})])
    e = Engine(chdb_store, cfg, clock=clock)
    for _ in range(5):
        clock.advance(10)
        e.run_once()
    assert [[a["labels"]["instance"] for a in m["alerts"]] for m in rx.bodies] == [["a"]]
    clock.advance(-3600)  # b goes down in the hour the clock now repeats
    for _ in range(12):
        clock.advance(10)
        e.run_once()
    # b: pending, firing 20 s later, in the group's next message (group_interval, not an hour away)
    assert {a.labels["instance"]: a.state for a in e.current_alerts()} == {"a": "firing", "b": "firing"}
    assert [sorted(a["labels"]["instance"] for a in m["alerts"]) for m in rx.bodies] == [["a"], ["a", "b"]]
