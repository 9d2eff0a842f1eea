"""What each group last sent is persisted: a new engine on the same store (a restart, or another
process taking over) sends nothing twice; Slack gets Slack's payload shape, retried through 500s
and 429s (Retry-After honoured). Real store, real local receivers, injected clock."""

from __future__ import annotations

import random

import pytest

from testkit.receiver import Receiver
from tests.support.slack import SlackReceiver, slack_problem
from tracehouse.alerts import Engine, build_config

from .helpers import Clock
from .spanfactory import add_series

UP = {"alert": "Down", "kind": "metric", "metric": "up", "aggregation": "last", "window": "30s", "op": "==",
      "threshold": 0, "group_by": ["service", "instance"], "annotations": {"summary": "{{ labels.instance }} down"}}


def _config(receiver: dict, **route):
    return build_config([("t.yaml", {
        "groups": [{"name": "g", "interval": "10s", "rules": [UP]}],
        "receivers": [dict(receiver, name="ops")],
        "route": dict({"receiver": "ops", "group_by": ["alertname", "service"], "group_wait": "10s",
                       "group_interval": "1m", "repeat_interval": "4h"}, **route),
        "notifications": {"allow_private_destinations": True},
    })])


@pytest.fixture
def rx():
    r = Receiver()
    yield r
    r.down()


def test_a_new_engine_on_the_same_store_does_not_notify_again(chdb_store, rx):
    clock = Clock()
    add_series(chdb_store, clock.s, 'up{service="shop",instance="a"}', "0x60", interval_s=10)
    cfg = _config({"webhook": {"url": rx.url}})
    a = Engine(chdb_store, cfg, clock=clock)
    a.run_once()
    clock.advance(10)
    a.run_once()
    assert len(rx.bodies) == 1
    a.stop()

    # restart: the alert is still firing; group_wait, group_interval and more pass
    b = Engine(chdb_store, _config({"webhook": {"url": rx.url}}), clock=clock)
    for _ in range(8):
        clock.advance(30)
        b.run_once()
    assert len(rx.bodies) == 1
    assert [g["last_sent_ns"] for g in b.dispatcher.status()] == [a.dispatcher.groups[next(iter(a.dispatcher.groups))].last_sent_ns]

    # it resolves after the restart: the resolved message (for a firing the old engine sent) goes once
    clock.ns = (clock.s + 700) * 10**9
    b.run_once(force=True)
    clock.advance(61)
    b.run_once()
    clock.advance(61)
    b.run_once()
    assert [m["status"] for m in rx.bodies] == ["firing", "resolved"]


def test_a_second_engine_process_sees_what_the_first_sent(chdb_store, rx):
    """Two engines over one store (an evaluator lease handover): the one about to send reads the
    store first and finds the message already sent."""
    clock = Clock()
    add_series(chdb_store, clock.s, 'up{service="shop",instance="a"}', "0x60", interval_s=10)
    a = Engine(chdb_store, _config({"webhook": {"url": rx.url}}, group_wait="10s", repeat_interval="3m"), clock=clock)
    b = Engine(chdb_store, _config({"webhook": {"url": rx.url}}, group_wait="0s", repeat_interval="3m"), clock=clock)
    a.run_once()  # a's group exists, waiting for its group_wait...
    clock.advance(1)
    b.run_once()  # ...b sends meanwhile...
    assert len(rx.bodies) == 1
    clock.advance(10)
    a.run_once()  # ...and a, about to send, finds b's send in the store
    for _ in range(2):
        clock.advance(61)
        a.run_once()
        b.run_once()
    assert len(rx.bodies) == 1
    clock.advance(60)  # repeat_interval: whichever comes first repeats, once
    a.run_once()
    b.run_once()
    assert len(rx.bodies) == 2 and rx.bodies[1]["status"] == "firing"


def test_slack_payload_shape_and_retries(chdb_store):
    slack = SlackReceiver(retry_after=7)
    slack.fail_next = [500, 429]
    try:
        clock = Clock()
        add_series(chdb_store, clock.s, 'up{service="shop",instance="a"}', "0x60", interval_s=10)
        e = Engine(chdb_store, _config({"slack": {"url": slack.url, "channel": "#ops"}}, group_wait="0s"),
                   clock=clock, rng=random.Random(3), backoff_base_s=1, backoff_max_s=60)
        e.run_once()
        g = next(iter(e.dispatcher.groups.values()))
        assert slack.accepted == [] and g.attempts == 1 and "HTTP 500" in g.last_error
        first_delay = (g.next_attempt_ns - clock.ns) / 1e9
        assert 0.5 <= first_delay < 1
        clock.ns = g.next_attempt_ns
        e.dispatcher.tick(clock.ns)
        assert g.attempts == 2 and "HTTP 429" in g.last_error
        assert (g.next_attempt_ns - clock.ns) / 1e9 == pytest.approx(7)  # Retry-After beats the backoff
        clock.ns = g.next_attempt_ns
        assert e.dispatcher.tick(clock.ns) == 1
        [msg] = slack.accepted
        assert msg["channel"] == "#ops" and msg["text"].startswith("[FIRING:1] alertname=Down, service=shop")
        assert "a down" in msg["text"]
        assert slack.refused == [(500, "internal_error"), (429, "rate_limited")]
        reg = e.metrics.registry
        assert reg.get_sample_value("tracehouse_alerts_notifications_total", {"receiver": "ops", "integration": "slack"}) == 1
        assert reg.get_sample_value("tracehouse_alerts_notifications_failed_total",
                                    {"receiver": "ops", "integration": "slack"}) == 2
        assert reg.get_sample_value("tracehouse_alerts", {"state": "firing"}) == 1
        assert reg.get_sample_value("tracehouse_alerts_rule_evaluation_seconds_count", {"group": "g"}) == 1
    finally:
        slack.stop()


def test_the_slack_stand_in_refuses_what_slack_refuses():
    assert slack_problem("application/json", b'{"text": "hi"}') == ""
    assert slack_problem("application/json; charset=utf-8", b'{"text": "hi", "channel": "#x"}') == ""
    assert slack_problem("text/plain", b'{"text": "hi"}') == "invalid_payload"
    assert slack_problem("application/json", b'{"text": ""}') == "no_text"
    assert slack_problem("application/json", b'{"msg": "hi"}') == "invalid_payload"
    assert slack_problem("application/json", b'["hi"]') == "invalid_payload"
    assert slack_problem("application/json", b'{"text": "hi", "channel": "ops"}') == "channel_not_found"
