"""Receivers that answer a byte at a time. A socket timeout bounds one read: such a webhook (or a
proxy in front of it) or SMTP server held a notification for as long as it went on, and the
dispatcher's lock with it, so alert evaluation and the notifications API waited too."""

from __future__ import annotations

import threading
import time

import pytest

from tests.agent.otlp_sink import TricklingServer as Trickler
from tracehouse.alerts import notifiers
from tracehouse.alerts.notifiers import EmailNotifier, NotifyError, WebhookNotifier
from tracehouse.alerts.notify import Dispatcher, Route
from tracehouse.alerts.state import Alert

MSG = {"status": "firing", "groupLabels": {"alertname": "A"}, "alerts": []}


@pytest.fixture
def short_limit(monkeypatch):
    monkeypatch.setattr(notifiers, "TIMEOUT_S", 1.0)


@pytest.mark.parametrize("head, drip", [
    (b"HTTP/1.1 200 OK\r\n", b"X-Slow: 1\r\n"),  # a head that never ends
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n", b"x"),  # a body that never ends
])
def test_a_webhook_answering_a_byte_at_a_time_fails_within_the_limit(short_limit, head, drip):
    slow = Trickler(head, drip)
    try:
        t0 = time.monotonic()
        if b"Content-Length" in head:  # the status is known at once: the body is not waited for
            WebhookNotifier("ops", f"http://127.0.0.1:{slow.port}/hook", allow_private=True).notify(MSG)
        else:
            with pytest.raises(NotifyError, match="ReadTimeout"):
                WebhookNotifier("ops", f"http://127.0.0.1:{slow.port}/hook", allow_private=True).notify(MSG)
        assert time.monotonic() - t0 < 2.0
    finally:
        slow.close()


def test_an_smtp_server_answering_a_byte_at_a_time_fails_within_the_limit(short_limit):
    slow = Trickler(b"220-slow\r\n", b"220-still greeting\r\n", read_first=False)  # SMTP speaks first
    try:
        t0 = time.monotonic()
        with pytest.raises(NotifyError, match="not done within 1 s"):
            EmailNotifier("mail", ["ops@example.com"], "am@example.com", f"127.0.0.1:{slow.port}",
                          allow_private=True).notify(MSG)
        assert time.monotonic() - t0 < 2.0
    finally:
        slow.close()


def test_a_slow_receiver_holds_neither_evaluation_nor_the_api(monkeypatch):
    """While one thread waits on a receiver, the evaluation loop's ``update`` and the API's
    ``status`` answer at once, and another tick returns at once instead of queueing."""
    monkeypatch.setattr(notifiers, "TIMEOUT_S", 3.0)
    slow = Trickler(b"HTTP/1.1 200 OK\r\n", b"X-Slow: 1\r\n")
    route = Route(receiver="ops", group_by=["alertname"], group_wait=0.0, group_interval=60.0, repeat_interval=3600.0)
    d = Dispatcher(route, {"ops": [WebhookNotifier("ops", f"http://127.0.0.1:{slow.port}/h", allow_private=True)]})
    now = time.time_ns()
    alert = Alert(rule_id="r", labels={"alertname": "A"}, fingerprint="f1", state="firing", active_at_ns=now,
                  fired_at_ns=now)
    d.update([alert], now)
    try:
        sender = threading.Thread(target=d.tick, args=(now + 1,), daemon=True)
        sender.start()
        time.sleep(0.3)  # the sender now waits on the receiver
        t0 = time.monotonic()
        d.update([alert], now + 2)
        assert d.status()[0]["alerts"] == ["f1"]
        assert d.tick(now + 3) == 0
        assert time.monotonic() - t0 < 0.5
        sender.join(10)
        assert "ReadTimeout" in d.status()[0]["last_error"] and d.status()[0]["attempts"] == 1
    finally:
        slow.close()
