"""Notifications carrying hostile or odd values (label values from ingested data, odd receiver
settings) to real local receivers: the message is delivered intact or refused alone, and never
stops the other groups' notifications."""

from __future__ import annotations

import email
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from testkit.receiver import Receiver
from testkit.servers import free_port
from tracehouse.alerts import Engine, build_config
from tracehouse.alerts.notifiers import EmailNotifier, NotifyError, SlackNotifier, WebhookNotifier
from tracehouse.alerts.notify import Dispatcher, Route
from tracehouse.alerts.silences import parse_matcher
from tracehouse.alerts.state import Alert

from ..support.slack import SlackReceiver
from .helpers import Clock, Inbox


def _alert(fp: str, now: int, **labels: str) -> Alert:
    return Alert(rule_id="g/Slow", fingerprint=fp, labels={"alertname": "Slow", **labels}, state="firing",
                 active_at_ns=now, fired_at_ns=now)


def _route(receiver: str) -> Route:
    return Route(receiver=receiver, group_by=["alertname", "region"], group_wait=0.0, group_interval=60.0,
                 repeat_interval=3600.0)


def test_a_label_with_a_line_break_neither_injects_mail_headers_nor_stops_notifications():
    """A group label from the data (a span attribute) holding CR/LF went into the mail's Subject:
    the email library raised ValueError out of the notifier, the dispatcher's tick stopped there, and
    every group after it was never notified (each tick tried the poisoned group first again)."""
    inbox = Inbox()
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        mail = EmailNotifier("mail", ["oncall@example.com"], "th@example.com", f"127.0.0.1:{port}",
                             allow_private=True)
        d = Dispatcher(_route("mail"), {"mail": [mail]})
        now = time.time_ns()
        d.update([_alert("f1", now, region="eu\r\nBcc: attacker@evil.example"), _alert("f2", now, region="us")], now)
        assert d.tick(now + 1) == 2
        assert sorted(tuple(m.rcpt_tos) for m in inbox.messages) == [("oncall@example.com",)] * 2
        heads = [m.content.decode().split("\r\n\r\n")[0] for m in inbox.messages]
        assert not any(line.lower().startswith("bcc:") for h in heads for line in h.split("\r\n"))
        assert any("Subject: [FIRING:1] alertname=Slow, region=eu  Bcc: attacker@evil.example" in h for h in heads)
    finally:
        ctl.stop()


def test_a_notifier_failing_in_an_unforeseen_way_stops_only_its_own_group():
    """An SMTP password with a non-ASCII character (smtplib encodes it as ASCII) made the email
    notifier raise UnicodeEncodeError, not NotifyError: the dispatcher's tick ended there, the
    webhook group after it was never notified, and the failing group was tried again on every tick
    (0.5 s) with no backoff. Now it is that group's failed attempt (backed off, its error shown)."""
    inbox = Inbox()
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port, auth_require_tls=False)
    ctl.start()
    rx = Receiver()
    try:
        mail = EmailNotifier("mail", ["oncall@example.com"], "th@example.com", f"127.0.0.1:{port}",
                             allow_private=True, username="th", password="pässwörd")
        route = _route("hook")
        route.routes = [Route(receiver="mail", group_by=["alertname", "region"], group_wait=0.0,
                              group_interval=60.0, repeat_interval=3600.0,
                              matchers=[parse_matcher({"name": "region", "value": "eu"})])]
        d = Dispatcher(route, {"mail": [mail], "hook": [WebhookNotifier("hook", rx.url, allow_private=True)]})
        now = time.time_ns()
        d.update([_alert("f1", now, region="eu"), _alert("f2", now, region="us")], now)
        assert d.tick(now + 1) == 1
        assert [b["groupLabels"]["region"] for b in rx.bodies] == ["us"]
        [failed] = [g for g in d.groups.values() if g.receiver == "mail"]
        assert failed.attempts == 1 and failed.next_attempt_ns > now + 1
        assert "UnicodeEncodeError" in failed.last_error and "xe4" not in failed.last_error
        assert d.tick(now + 2) == 0 and failed.attempts == 1  # backed off: not tried again at once
    finally:
        rx.down()
        ctl.stop()


def test_the_secret_in_a_webhook_url_is_not_in_errors_logs_or_the_api(caplog):
    """Slack's (and most) incoming webhook URLs carry their secret in the path
    (``/services/T…/B…/<token>``); an error kept the path, so the token was in the server log and in
    ``last_error`` of /api/alerts/notifications, which any viewer reads. A URL that does not parse
    was quoted whole, user and password included."""
    slack = SlackReceiver()
    slack.fail_next = [500]
    secret = slack.url.rsplit("/", 1)[1]
    try:
        d = Dispatcher(_route("slack"), {"slack": [SlackNotifier("slack", slack.url, allow_private=True)]})
        now = time.time_ns()
        d.update([_alert("f1", now, region="eu")], now)
        with caplog.at_level(logging.WARNING, "tracehouse.alerts"):
            assert d.tick(now + 1) == 0
        [g] = d.status()
        assert "HTTP 500" in g["last_error"] and f"127.0.0.1:{slack.port}" in g["last_error"]
        assert secret not in g["last_error"] and secret not in caplog.text
    finally:
        slack.stop()
    for url in ("http://ops:hunter2@127.0.0.1:99999/hook/T0KEN", "http://127.0.0.1:1/hook/T0KEN?token=T0KEN"):
        with pytest.raises(NotifyError) as e:
            WebhookNotifier("ops", url, allow_private=True).notify({"status": "firing", "alerts": []})
        assert "hunter2" not in str(e.value) and "T0KEN" not in str(e.value)


INFINITE = {"alert": "Ratio", "kind": "sql", "query": "SELECT 1 / 0 AS value", "op": ">", "threshold": 1,
            "annotations": {"summary": "ratio at {{ value }}"}}


def _strict_json(raw: bytes):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(raw, parse_constant=refuse)


def test_an_infinite_value_fires_and_is_shown_as_inf(chdb_store):
    """A rule's value may be infinite (x / 0 in a SQL rule is inf in ClickHouse). Rendering the
    annotations' {{ value }} raised OverflowError (int(inf)) out of the evaluation: the alert stayed
    pending for ever, never fired and was never notified."""
    clock = Clock()
    cfg = build_config([("t.yaml", {"groups": [{"name": "g", "rules": [INFINITE]}]})])
    e = Engine(chdb_store, cfg, clock=clock)
    e.run_once()
    [a] = e.alerts()
    assert a["state"] == "firing" and a["annotations"]["summary"] == "ratio at +Inf"
    assert e.rules["g/Ratio"].health == "ok"


def test_a_webhook_message_with_an_infinite_value_is_json():
    """The webhook body carried the value as Python's json writes inf: ``Infinity``, which is not
    JSON; a receiver that parses strictly (Go's encoding/json, Alertmanager-compatible ones) answers
    400, which is not retried: the notification was lost."""
    raw: list[bytes] = []

    class Raw(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            raw.append(self.rfile.read(int(self.headers.get("content-length") or 0)))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Raw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        d = Dispatcher(_route("hook"), {"hook": [WebhookNotifier("hook", url, allow_private=True)]})
        now = time.time_ns()
        a = _alert("f1", now, region="eu")
        a.value = float("inf")
        d.update([a], now)
        assert d.tick(now + 1) == 1
        [body] = [_strict_json(b) for b in raw]
        assert body["alerts"][0]["value"] is None
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("headers, says", [
    ({"X-Token": "abc\r\nBcc: victim@example.com"}, "X-Token has a line break"),
    ({"X-Token": "s\u00e9cret"}, "X-Token has a line break, control or non-ASCII"),
    ({"Bad Name": "v"}, "not a valid HTTP header name"),
    ({"X-A\r\nX-B": "v"}, "not a valid HTTP header name"),
    ({"Content-Length": "0"}, "set by tracehouse itself"),
    ({"host": "internal.example"}, "set by tracehouse itself"),
    (["X-Token: v"], "must be a mapping"),
])
def test_a_webhook_header_that_cannot_be_sent_is_refused_when_the_config_loads(headers, says):
    """Such a header used to load, then fail at every send (for ever, backed off) once an alert
    fired; the error names the header, never its value (often a secret)."""
    from tracehouse.alerts.errors import RuleError

    doc = {"receivers": [{"name": "hook", "webhook": [{"url": "https://hooks.example.com/x", "headers": headers}]}]}
    with pytest.raises(RuleError) as e:
        build_config([("alerts.yaml", doc)])
    assert says in str(e.value) and "receiver hook" in str(e.value)
    assert "abc" not in str(e.value) and "cret" not in str(e.value)


def test_ordinary_webhook_headers_load():
    doc = {"receivers": [{"name": "hook", "webhook": [{"url": "https://hooks.example.com/x",
                                                       "headers": {"Authorization": "Bearer a.b-c_d~e/f+g=",
                                                                   "X-Tab": "a\tb"}}]}]}
    [n] = build_config([("alerts.yaml", doc)]).receivers["hook"]
    assert n.headers == {"Authorization": "Bearer a.b-c_d~e/f+g=", "X-Tab": "a\tb"}


def test_a_resolver_that_never_answers_holds_a_notification_only_within_its_time_limit(monkeypatch):
    """The name was resolved outside the 5 s limit: a resolver that does not answer (glibc waits
    5 s per try, two tries per server, up to three servers) held the notification thread, and every
    other group's notifications behind it, for as long. Now the wait is bounded, the failure is
    retried later, and resolutions left waiting are capped."""
    import socket

    from tracehouse.alerts import ssrf
    from tracehouse.alerts.errors import DestinationRefused

    release = threading.Event()
    real = socket.getaddrinfo

    def hung(host, *a, **kw):  # the system resolver, not answering for this name
        if host == "hooks.slow-dns.example":
            release.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", hung)
    try:
        n = WebhookNotifier("hook", "https://hooks.slow-dns.example/x")
        t0 = time.monotonic()
        with pytest.raises(NotifyError) as e:
            n.notify({"status": "firing", "alerts": [], "groupLabels": {}})
        assert time.monotonic() - t0 < 6.5
        assert e.value.retryable and "no answer from the resolver" in str(e.value)
        for _ in range(ssrf.MAX_RESOLVING - 1):  # more waiting resolutions, up to the cap
            with pytest.raises(DestinationRefused, match="no answer from the resolver"):
                ssrf.check_host("hooks.slow-dns.example", 443, False, timeout=0.05)
        t0 = time.monotonic()
        with pytest.raises(NotifyError) as e:  # past the cap: refused at once, retryable
            n.notify({"status": "firing", "alerts": [], "groupLabels": {}})
        assert time.monotonic() - t0 < 1.0
        assert e.value.retryable and "still waiting" in str(e.value)
    finally:
        release.set()


def test_slack_control_characters_in_label_values_are_escaped_not_mentions():
    """Slack reads ``<...>`` in ``text`` as a mention or a link and ``&`` as an escape: a label value
    from the data of ``<!channel>`` paged the whole channel, and ``<https://evil|click>`` made a link
    with text of the sender's choosing. Each of ``& < >`` now goes out as ``&amp; &lt; &gt;``."""
    slack = SlackReceiver()
    try:
        d = Dispatcher(_route("chat"), {"chat": [SlackNotifier("chat", slack.url, allow_private=True)]})
        now = time.time_ns()
        hostile = "<!channel> <!here> <@U123> <https://evil.example|click> *bold* & co"
        a = _alert("f1", now, region=hostile)
        a.annotations = {"summary": f"slow in {hostile}", "dashboard": "http://127.0.0.1:8080/x?a=1&b=|2"}
        d.update([a], now)
        assert d.tick(now + 1) == 1
        text = slack.accepted[0]["text"]
        shown = "&lt;!channel&gt; &lt;!here&gt; &lt;@U123&gt; &lt;https://evil.example|click&gt; *bold* &amp; co"
        assert text.count(shown) == 2  # the group labels and the alert's line
        assert text.endswith(" <http://127.0.0.1:8080/x?a=1&amp;b=%7C2|dashboard>")  # the one real link
        assert text.count("<") == 1 and text.count(">") == 1
    finally:
        slack.stop()


def test_a_group_of_many_long_label_values_reaches_slack_and_email_within_their_limits():
    """1,000 alerts in one group, each with a label of 16,384 characters (the collector's longest
    attribute value, which a rule grouping by that attribute makes a label). Before: the Slack text
    was 343,000 characters, which Slack refuses for good (400 msg_too_long: never retried, never
    delivered), and the email 30 MB (the whole payload as JSON: past what relays take, 10 to 25 MB,
    and at 33 MB, with longer annotations, refused by this SMTP server, 552). Now the Slack text stays under 40,000 characters and the email's JSON lists the alerts
    that fit, counting the others in truncatedAlerts."""
    inbox = Inbox()
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)  # aiosmtpd's limit: 32 MiB
    ctl.start()
    slack = SlackReceiver()
    try:
        mail = EmailNotifier("team", ["oncall@example.com"], "th@example.com", f"127.0.0.1:{port}",
                             allow_private=True)
        route = Route(receiver="team", group_by=["alertname"], group_wait=0.0, group_interval=60.0,
                      repeat_interval=3600.0)
        d = Dispatcher(route, {"team": [mail, SlackNotifier("team", slack.url, allow_private=True)]})
        now = time.time_ns()
        alerts = [_alert(f"f{i:04}", now, region=f"{i}-" + "y" * 16_384) for i in range(1000)]
        for a in alerts:
            a.annotations = {"summary": "slow in " + a.labels["region"][:3990]}  # a template's longest output
        d.update(alerts, now)
        assert d.tick(now + 1) == 1, d.status()[0]["last_error"]
        assert slack.refused == [] and len(slack.accepted) == 1
        text = slack.accepted[0]["text"]
        assert len(text) < 40_000 and text.endswith("… and 980 more")
        assert len(inbox.messages) == 1 and len(inbox.messages[0].content) < 1 << 20
        body = email.message_from_bytes(inbox.messages[0].content).get_payload(decode=True).decode()
        payload = json.loads(body[body.index("\n{") + 1:])
        listed = len(payload["alerts"])
        assert 0 < listed < 1000 and payload["truncatedAlerts"] == 1000 - listed
        assert f"{1000 - listed} of the 1000 alerts are not in the JSON below" in body
    finally:
        slack.stop()
        ctl.stop()


def test_a_line_break_in_a_label_value_does_not_forge_an_alert_line_in_slack_or_email():
    """A label value of ``eu\\n• resolved: all clear`` made a line of its own in the Slack text and
    the email's text, reading as one more alert that had resolved. Now each is one line."""
    inbox = Inbox()
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    slack = SlackReceiver()
    try:
        mail = EmailNotifier("team", ["oncall@example.com"], "th@example.com", f"127.0.0.1:{port}",
                             allow_private=True)
        d = Dispatcher(_route("team"), {"team": [SlackNotifier("team", slack.url, allow_private=True), mail]})
        now = time.time_ns()
        a = _alert("f1", now, region="eu\n• resolved: all clear\r\n• resolved: really")
        a.annotations = {"summary": "slow in " + a.labels["region"]}
        d.update([a], now)
        assert d.tick(now + 1) == 1
        body = email.message_from_bytes(inbox.messages[0].content).get_payload(decode=True).decode()
        body = body.replace("\r\n", "\n")  # the mail's line ends
        for text in (slack.accepted[0]["text"], body.split("\n\n")[0]):
            lines = text.splitlines()
            assert len(lines) == 2 and lines[1].startswith("• firing: slow in eu ")
            assert not any(line.startswith("• resolved") for line in lines)
    finally:
        slack.stop()
        ctl.stop()


def test_the_dispatcher_keeps_no_copy_of_the_messages_it_sent():
    """The dispatcher kept its last 50 messages whole (a list nothing read): with large groups whose
    alerts change (annotations rendered afresh, labels from the data), that held tens of MB for
    ever: 50 sends of 200 alerts with 4,000-character annotations kept 40 MB."""
    import gc
    import tracemalloc

    rx = Receiver()
    try:
        route = Route(receiver="hook", group_by=["alertname"], group_wait=0.0, group_interval=0.0,
                      repeat_interval=0.0)
        d = Dispatcher(route, {"hook": [WebhookNotifier("hook", rx.url, allow_private=True)]})
        now = time.time_ns()
        tracemalloc.start()
        try:
            for i in range(50):
                alerts = [_alert(f"f{j:03}", now, region=f"r{j}") for j in range(200)]
                for a in alerts:
                    a.annotations = {"summary": f"{i:04}" + "s" * 3996}  # rendered afresh each evaluation
                d.update(alerts, now + i)
                assert d.tick(now + i + 1) == 1
                rx.bodies.clear()
            del alerts, a
            gc.collect()
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert held < 8 << 20, f"{held >> 20} MB held after the sends"
    finally:
        rx.down()


def test_a_webhook_max_alerts_cuts_the_payload_and_counts_the_rest():
    """Alertmanager's webhook ``max_alerts`` was ignored: a rule over a label of many values sent
    every alert of the group in one payload (1,000 alerts with labels of 16,384 characters made a
    33 MB body) whatever the receiver's setting. Now the payload carries at most ``max_alerts``
    and ``truncatedAlerts`` counts the rest, as Alertmanager's does; a bad value is refused."""
    rx = Receiver()
    try:
        cfg = build_config([("rules.yaml", {
            "receivers": [{"name": "hook", "webhook": {"url": rx.url, "max_alerts": 2}}],
            "route": {"receiver": "hook", "group_by": ["alertname"], "group_wait": "0s"},
        })], allow_private=True)
        d = Dispatcher(cfg.route, cfg.receivers)
        now = time.time_ns()
        d.update([_alert(f"f{i}", now, region=f"r{i}") for i in range(5)], now)
        assert d.tick(now + 1) == 1
        (body,) = rx.bodies
        assert [a["labels"]["region"] for a in body["alerts"]] == ["r0", "r1"] and body["truncatedAlerts"] == 3
        for bad in (-1, "2", True):
            with pytest.raises(ValueError, match="max_alerts"):
                build_config([("rules.yaml", {"receivers": [{"name": "hook", "webhook": {"url": rx.url,
                                                                                         "max_alerts": bad}}],
                                               "route": {"receiver": "hook"}})], allow_private=True)
    finally:
        rx.down()
