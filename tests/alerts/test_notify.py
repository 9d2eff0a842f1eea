"""Notifications to real local servers: an HTTP receiver in a thread and an aiosmtpd SMTP server.
Grouping, group_wait/group_interval/repeat_interval, resolved messages, retries with backoff,
silences and inhibition. Time is the injected clock; the servers are real."""

from __future__ import annotations

import random
import time

from aiosmtpd.controller import Controller

from testkit.receiver import Receiver
from testkit.servers import free_port
from tracehouse.alerts import Engine, build_config

from .helpers import NS, Clock, Inbox
from .spanfactory import add_series


def _config(url, rules, **route):
    return build_config([("t.yaml", {
        "groups": [{"name": "g", "interval": "10s", "rules": rules}],
        "receivers": [{"name": "ops", "webhook": {"url": url}}],
        "route": dict({"receiver": "ops", "group_by": ["alertname", "service"], "group_wait": "10s",
                       "group_interval": "1m", "repeat_interval": "4h"}, **route),
        "inhibit_rules": [{"source_match": {"severity": "critical"}, "target_match": {"severity": "warning"},
                           "equal": ["service"]}],
        "notifications": {"allow_private_destinations": True},
    })])


UP = {"alert": "Down", "kind": "metric", "metric": "up", "aggregation": "last", "window": "30s", "op": "==",
      "threshold": 0, "group_by": ["service", "instance"], "labels": {"severity": "critical"},
      "annotations": {"summary": "{{ labels.instance }} down"}}


def _down(store, base, values="0x100", instance="a", service="shop"):
    add_series(store, base, f'up{{service="{service}",instance="{instance}"}}', values, interval_s=10)


def test_group_wait_grouping_repeat_and_resolved(chdb_store):
    rx = Receiver()
    clock = Clock()
    base = clock.s
    _down(chdb_store, base, "0x60", "a")
    _down(chdb_store, base, "1x2 0x60", "b")
    e = Engine(chdb_store, _config(rx.url, [UP], repeat_interval="2m"), clock=clock, dashboard_url="http://d")
    e.run_once()
    assert rx.bodies == []  # group_wait (10 s) not over
    clock.advance(9)
    e.run_once()
    assert rx.bodies == []
    clock.advance(1)
    e.run_once()
    assert len(rx.bodies) == 1
    msg = rx.bodies[0]
    assert msg["status"] == "firing" and msg["receiver"] == "ops"
    assert msg["groupLabels"] == {"alertname": "Down", "service": "shop"}
    assert [a["labels"]["instance"] for a in msg["alerts"]] == ["a"]
    assert msg["alerts"][0]["annotations"]["summary"] == "a down"
    assert msg["alerts"][0]["annotations"]["dashboard"] == "http://d/services/shop"
    clock.advance(20)  # instance b goes down at base+20: same group, sent at group_interval
    e.run_once()
    assert len(rx.bodies) == 1
    clock.advance(40)
    e.run_once()
    assert len(rx.bodies) == 2
    assert sorted(a["labels"]["instance"] for a in rx.bodies[1]["alerts"]) == ["a", "b"]
    clock.advance(60)
    e.run_once()
    assert len(rx.bodies) == 2  # nothing new, repeat_interval (2m) not over
    clock.advance(60)
    e.run_once()
    assert len(rx.bodies) == 3  # repeated
    clock.ns = (base + 640) * 10**9  # data ends at base+600; the 30 s window is empty
    e.run_once(force=True)
    clock.advance(60)
    e.run_once()
    last = rx.bodies[-1]
    assert last["status"] == "resolved"
    assert {a["status"] for a in last["alerts"]} == {"resolved"}
    rx.down()


def test_retry_with_backoff_until_receiver_returns(chdb_store):
    rx = Receiver()
    rx.down()
    clock = Clock()
    _down(chdb_store, clock.s)
    e = Engine(chdb_store, _config(rx.url, [UP], group_wait="0s"), clock=clock, rng=random.Random(1),
               backoff_base_s=2, backoff_max_s=60)
    e.run_once()
    g = next(iter(e.dispatcher.groups.values()))
    assert g.attempts == 1 and "ConnectError" in g.last_error
    delays = []
    for _ in range(6):
        prev = clock.ns
        clock.ns = g.next_attempt_ns
        e.dispatcher.tick(clock.ns)
        delays.append((clock.ns - prev) / 1e9)
    # exponential with jitter in [0.5, 1) of 2, 4, 8, 16, 32, 60 (capped)
    assert all(lo * 0.5 <= d < lo for d, lo in zip(delays, [2, 4, 8, 16, 32, 60]))
    rx.up()
    sent = 0
    for _ in range(5):  # once back, one message, not one per missed attempt
        clock.ns = max(clock.ns + 1, g.next_attempt_ns, g.next_flush_ns)
        sent += e.dispatcher.tick(clock.ns)
    assert sent == 1 and len(rx.bodies) == 1 and g.attempts == 0
    rx.down()


def test_silence_and_inhibition(chdb_store):
    rx = Receiver()
    clock = Clock()
    base = clock.s
    _down(chdb_store, base, service="shop")
    _down(chdb_store, base, service="cart")
    warn = dict(UP, alert="Flaky", labels={"severity": "warning"})
    e = Engine(chdb_store, _config(rx.url, [UP, warn], group_wait="0s"), clock=clock)
    sil = e.add_silence({"matchers": ["service=cart"], "endsAt": "1h", "comment": "maintenance"})
    assert sil["status"] == "active"
    e.run_once()
    names = sorted((a["labels"]["alertname"], a["labels"]["service"]) for b in rx.bodies for a in b["alerts"])
    # cart silenced entirely; Flaky (warning) inhibited by Down (critical) on the same service
    assert names == [("Down", "shop")]
    muted = {(a["labels"]["alertname"], a["labels"]["service"]): a["muted"] for a in e.alerts()}
    assert muted == {("Down", "shop"): "", ("Flaky", "shop"): "inhibited", ("Down", "cart"): "silenced",
                     ("Flaky", "cart"): "silenced"}
    assert e.delete_silence(sil["id"])
    clock.advance(61)
    e.run_once()
    later = sorted((a["labels"]["alertname"], a["labels"]["service"]) for b in rx.bodies[1:] for a in b["alerts"])
    assert later == [("Down", "cart")]  # unsilenced; Flaky on cart still inhibited
    rx.down()


def test_email_through_real_smtp_server(chdb_store):
    inbox = Inbox()
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        clock = Clock()
        _down(chdb_store, clock.s)
        cfg = build_config([("t.yaml", {
            "groups": [{"name": "g", "rules": [UP]}],
            "receivers": [{"name": "mail", "email": {"to": ["oncall@example.com"], "from": "th@example.com",
                                                       "smarthost": f"localhost:{port}"}}],
            "route": {"receiver": "mail", "group_wait": "0s"},
            "notifications": {"allow_private_destinations": True}})])
        e = Engine(chdb_store, cfg, clock=clock)
        e.run_once()
        deadline = time.monotonic() + 5
        while not inbox.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        [env] = inbox.messages
        assert env.rcpt_tos == ["oncall@example.com"]
        body = env.content.decode()
        assert "Subject: [FIRING:1] alertname=Down" in body and "a down" in body
    finally:
        ctl.stop()


def test_background_threads_notify_within_seconds(chdb_store):
    """The real loop (threads, wall clock): condition true → webhook received."""
    rx = Receiver()
    now = int(time.time())
    _down(chdb_store, now - 20, "0x4")
    rule = dict(UP, interval="1s")
    e = Engine(chdb_store, _config(rx.url, [rule], group_wait="1s"))
    t0 = time.monotonic()
    e.start()
    try:
        deadline = t0 + 15
        while not rx.bodies and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        e.stop()
    assert rx.bodies and rx.bodies[0]["alerts"][0]["labels"]["alertname"] == "Down"
    assert rx.times[0] - t0 < 5
    rx.down()


def test_each_notifier_of_a_receiver_gets_the_message_whatever_another_does(chdb_store):
    """A receiver with two webhooks (a Slack outage and a working email, say). The broken one, named
    first, neither keeps the message from the other nor makes it get it again at each retry; once
    the broken one is back it gets the message once. A retry whose content changed (another alert
    firing meanwhile) goes to both: a duplicate, never a loss."""
    broken, working = Receiver(), Receiver()
    broken.down()
    clock = Clock()
    base = clock.s
    _down(chdb_store, base, "0x100", "a")
    _down(chdb_store, base, "1x3 0x100", "b")  # down from base+40
    cfg = build_config([("t.yaml", {
        "groups": [{"name": "g", "interval": "10s", "rules": [UP]}],
        "receivers": [{"name": "ops", "webhook": [{"url": broken.url}, {"url": working.url}]}],
        "route": {"receiver": "ops", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1m",
                  "repeat_interval": "4h"},
        "notifications": {"allow_private_destinations": True},
    })])
    e = Engine(chdb_store, cfg, clock=clock, rng=random.Random(1), backoff_base_s=2, backoff_max_s=4)
    e.run_once()
    # before: the first notifier's failure ended the attempt, so the second never got anything
    assert [[a["labels"]["instance"] for a in m["alerts"]] for m in working.bodies] == [["a"]]
    g = next(iter(e.dispatcher.groups.values()))
    assert g.attempts == 1 and g.last_error.startswith("webhook #1: ") and "ConnectError" in g.last_error
    for _ in range(2):  # retries while the content is the same: only the broken one is tried
        clock.ns = g.next_attempt_ns
        e.dispatcher.tick(clock.ns)
    assert len(working.bodies) == 1 and g.attempts == 3
    clock.ns = (base + 50) * NS  # instance b is down too: the retried message changes
    e.run_once(force=True)
    clock.ns = max(clock.ns, g.next_attempt_ns)
    e.dispatcher.tick(clock.ns)
    assert [sorted(a["labels"]["instance"] for a in m["alerts"]) for m in working.bodies] == [["a"], ["a", "b"]]
    broken.up()
    clock.ns = g.next_attempt_ns
    assert e.dispatcher.tick(clock.ns) == 1
    assert [sorted(a["labels"]["instance"] for a in m["alerts"]) for m in broken.bodies] == [["a", "b"]]
    assert len(working.bodies) == 2 and g.attempts == 0 and g.last_error == ""
    for _ in range(3):  # nothing more is due until the repeat interval
        clock.advance(60)
        e.run_once(force=True)
    assert len(broken.bodies) == 1 and len(working.bodies) == 2
    broken.down()
    working.down()
