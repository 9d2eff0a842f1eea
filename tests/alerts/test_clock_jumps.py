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


def test_for_restarts_after_an_outage_longer_than_the_tolerance(chdb_store):
    """Prometheus restores a pending alert's `for` only after an outage shorter than
    rules.alert.for-outage-tolerance (1h): after a longer stop (a server down, a laptop asleep) the
    condition was not watched, so `for` counts again from the first evaluation after it."""
    clock = Clock()
    base = clock.s
    add_series(chdb_store, base, 'up{service="shop",instance="a"}', "0x3", interval_s=10)
    add_series(chdb_store, base + 7200, 'up{service="shop",instance="a"}', "0x200", interval_s=10)
    rule = dict(DOWN, **{"for": "30m"})
    cfg = build_config([("t.yaml", {"groups": [{"name": "g", "interval": "10s", "rules": [rule]}]})])
    e = Engine(chdb_store, cfg, clock=clock)
    clock.advance(10)
    e.run_once()
    assert [a.state for a in e.current_alerts()] == ["pending"]
    clock.ns = (base + 7210) * 1_000_000_000  # 2 h later: restarted (or woken), condition true again
    e = Engine(chdb_store, cfg, clock=clock)
    e.run_once()
    assert [(a.state, a.active_at_ns) for a in e.current_alerts()] == [("pending", clock.ns)]
    clock.advance(30 * 60)
    e.run_once()
    assert [a.state for a in e.current_alerts()] == ["firing"]


def test_for_survives_a_short_restart(chdb_store):
    clock = Clock()
    base = clock.s
    add_series(chdb_store, base, 'up{service="shop",instance="a"}', "0x400", interval_s=10)
    rule = dict(DOWN, **{"for": "5m"})
    cfg = build_config([("t.yaml", {"groups": [{"name": "g", "interval": "10s", "rules": [rule]}]})])
    e = Engine(chdb_store, cfg, clock=clock)
    clock.advance(10)
    e.run_once()
    clock.advance(240)  # down 4 minutes, then restarted
    e = Engine(chdb_store, cfg, clock=clock)
    e.run_once()
    clock.advance(50)
    e.run_once()
    assert [a.state for a in e.current_alerts()] == ["pending"]
    clock.advance(10)
    e.run_once()
    assert [a.state for a in e.current_alerts()] == ["firing"]  # 5 min after it first became active


def test_a_long_for_survives_a_short_restart(chdb_store):
    """A pending alert watched for longer than the tolerance before a short restart keeps its `for`
    (the store knows when it was last evaluated, not only when it became pending)."""
    clock = Clock()
    base = clock.s
    add_series(chdb_store, base, 'up{service="shop",instance="a"}', "0x1100", interval_s=10)
    cfg = build_config([("t.yaml", {"groups": [{"name": "g", "interval": "10s", "rules": [dict(DOWN, **{"for": "2h"})]}]})])
    e = Engine(chdb_store, cfg, clock=clock)
    for _ in range(10):
        clock.advance(600)
        e.run_once()
    active = e.current_alerts()[0].active_at_ns
    assert [a.state for a in e.current_alerts()] == ["pending"]
    clock.advance(60)
    e = Engine(chdb_store, cfg, clock=clock)  # restarted a minute later
    e.run_once()
    assert [(a.state, a.active_at_ns) for a in e.current_alerts()] == [("pending", active)]
    clock.ns = active + 7200 * 1_000_000_000
    e.run_once()
    assert [a.state for a in e.current_alerts()] == ["firing"]


def test_keep_firing_for_counts_across_a_restart(chdb_store):
    """keep_firing_for counts from the first evaluation where the condition failed, restart or not."""
    clock = Clock()
    base = clock.s
    add_series(chdb_store, base, 'up{service="shop",instance="a"}', "0x6 1x400", interval_s=10)
    cfg = build_config([("t.yaml", {"groups": [{"name": "g", "interval": "10s",
                                                "rules": [dict(DOWN, keep_firing_for="30m")]}]})])
    e = Engine(chdb_store, cfg, clock=clock)
    clock.advance(10)
    e.run_once()
    clock.ns = (base + 100) * 1_000_000_000  # up again: kept firing from here for 30 min
    e.run_once()
    assert [(a.state, a.keep_firing_since_ns) for a in e.current_alerts()] == [("firing", clock.ns)]
    clock.advance(20 * 60)
    e = Engine(chdb_store, cfg, clock=clock)  # restarted 20 min into it
    e.run_once()
    assert [a.state for a in e.current_alerts()] == ["firing"]
    clock.advance(10 * 60)
    e.run_once()
    assert [a.state for a in e.current_alerts()] == ["resolved"]  # 30 min after, not 30 after the restart
