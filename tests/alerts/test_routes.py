"""Alertmanager routes as users write them: ``match_re`` (full-match regexes) picks the route, and a
key this engine does not follow is refused at load, never ignored (an ignored matcher sends every
alert down that route). Real HTTP receivers on loopback; time is the injected clock."""

from __future__ import annotations

import pytest

from testkit.receiver import Receiver
from tracehouse.alerts import Engine, RuleError, build_config

from .helpers import Clock
from .spanfactory import add_series

DOWN = {"alert": "Down", "kind": "metric", "metric": "up", "aggregation": "last", "window": "30s", "op": "==",
        "threshold": 0, "group_by": ["service", "instance"]}


def _config(route, receivers):
    return build_config([("t.yaml", {
        "groups": [{"name": "g", "interval": "10s", "rules": [DOWN]}],
        "receivers": [{"name": n, "webhook": {"url": rx.url}} for n, rx in receivers.items()],
        "route": route, "notifications": {"allow_private_destinations": True}})])


def test_match_re_routes_by_full_match(chdb_store):
    ops, pay = Receiver(), Receiver()
    clock = Clock()
    for service in ("shop", "payments", "payments-eu", "repayments"):
        add_series(chdb_store, clock.s, f'up{{service="{service}",instance="a"}}', "0x30", interval_s=10)
    route = {"receiver": "ops", "group_by": ["service"], "group_wait": "0s",
             "routes": [{"receiver": "pay", "match_re": {"service": "payments(-.*)?"}}]}
    e = Engine(chdb_store, _config(route, {"ops": ops, "pay": pay}), clock=clock)
    clock.advance(10)
    e.run_once()
    got = {n: sorted(a["labels"]["service"] for m in rx.bodies for a in m["alerts"]) for n, rx in
           (("ops", ops), ("pay", pay))}
    assert got == {"ops": ["repayments", "shop"], "pay": ["payments", "payments-eu"]}


def test_a_route_key_not_followed_is_refused():
    rx = Receiver()
    with pytest.raises(RuleError, match="mute_time_intervals"):
        _config({"receiver": "ops", "routes": [{"receiver": "ops", "mute_time_intervals": ["night"]}]}, {"ops": rx})
    with pytest.raises(RuleError, match="match_re must be a mapping"):
        _config({"receiver": "ops", "match_re": ["service=~x"]}, {"ops": rx})
