"""An engine that starts after another (a restart, or a standby taking the cluster's lease over)
does not notify again what the other already sent, and still sends what happens next: the
resolved message of an alert the other notified, and new alerts."""

from __future__ import annotations

from testkit.receiver import Receiver
from tracehouse.alerts import Engine

from .helpers import Clock
from .test_notify import UP, _config, _down


def test_a_second_engine_on_the_same_store_sends_nothing_twice(chdb_store):
    rx = Receiver()
    clock = Clock()
    base = clock.s
    _down(chdb_store, base, "0x30", "a")  # down for 300 s, then nothing (resolves)
    cfg = _config(rx.url, [UP], repeat_interval="1h")
    first = Engine(chdb_store, cfg, clock=clock, dashboard_url="http://d")
    first.run_once()
    clock.advance(10)
    first.run_once()
    assert [a["labels"]["instance"] for b in rx.bodies for a in b["alerts"]] == ["a"]

    clock.advance(30)  # the first engine dies; another takes over with what it persisted
    second = Engine(chdb_store, cfg, clock=clock, dashboard_url="http://d")
    second.reload(replace=True)
    for _ in range(6):
        clock.advance(20)
        second.run_once()
    assert len(rx.bodies) == 1, rx.bodies  # "a" is still firing: not sent again

    _down(chdb_store, clock.s - 5, "0x10", "b")  # a new alert in the same group
    for _ in range(4):
        clock.advance(20)
        second.run_once()
    assert len(rx.bodies) == 2
    assert sorted(a["labels"]["instance"] for a in rx.bodies[1]["alerts"]) == ["a", "b"]

    clock.ns = (base + 700) * 10**9  # both series ended: resolved, sent once
    for _ in range(5):
        second.run_once(force=True)
        clock.advance(30)
    resolved = [b for b in rx.bodies if b["status"] == "resolved"]
    assert len(resolved) == 1 and {a["labels"]["instance"] for a in resolved[0]["alerts"]} == {"a", "b"}
    rx.down()
