"""Through the real ``tracehouse serve``: a firing alert is posted to a Slack stand-in that checks
Slack's payload shape (after a 500 and a 429, retried); the server is restarted while the alert
still fires, and no second notification is sent; when it resolves, one resolved message goes out."""

from __future__ import annotations

import time

import pytest

from tests.support.slack import SlackReceiver
from tests.support.waiting import wait_for

from .helpers import Role, http, rules_file

RULES = """
groups:
  - name: watch
    interval: 1s
    rules:
      - alert: GhostSilent
        kind: absence
        service: ghost
        window: 1m
        op: "=="
        threshold: 0
        labels: {{severity: critical}}
        annotations: {{summary: "ghost sends nothing"}}
receivers:
  - name: chat
    slack: {{url: "{url}", channel: "#ops"}}
route: {{receiver: chat, group_by: [alertname], group_wait: 1s, group_interval: 2s, repeat_interval: 1h}}
notifications: {{allow_private_destinations: true}}
"""


@pytest.fixture
def slack():
    s = SlackReceiver(retry_after=1)
    yield s
    s.stop()


def _notifications(role: Role) -> list[dict]:
    return role.get("/api/alerts/notifications")["groups"]


def test_restart_mid_firing_sends_no_second_notification(tmp_path, slack):
    slack.fail_next = [500, 429]
    role = Role(tmp_path, args=("--rules", rules_file(tmp_path, RULES.format(url=slack.url))))
    try:
        wait_for(lambda: slack.accepted, 40, what="the first Slack message")
        assert slack.refused == [(500, "internal_error"), (429, "rate_limited")]  # retried, then accepted
        [msg] = slack.accepted
        assert msg["channel"] == "#ops" and msg["text"].startswith("[FIRING:1] alertname=GhostSilent")
        assert "ghost sends nothing" in msg["text"]
        sent_ns = _notifications(role)[0]["last_sent_ns"]
        assert role.stop() == 0

        role.start()  # same data, same ports; the alert still fires
        evaluated = time.monotonic()

        def settled():
            groups = _notifications(role)
            rules = role.get("/api/alerts/rules")["rules"]
            # the engine evaluated since the restart and holds the group, restored from the store
            return groups and rules[0]["state"] == "firing" and rules[0]["last_eval_ns"] > sent_ns and groups

        groups = wait_for(settled, 40, what="the restarted engine to evaluate")
        assert groups[0]["last_sent_ns"] == sent_ns
        # well past group_wait (1 s) and several group_intervals (2 s): nothing new was sent
        while time.monotonic() - evaluated < 7:
            assert role.proc.poll() is None, role.output()
            time.sleep(0.5)
        assert len(slack.accepted) == 1, slack.accepted
        metrics = role.text("/metrics")[1]
        assert 'tracehouse_alerts_notifications_total{integration="slack",receiver="chat"}' not in metrics

        # ghost speaks: the alert resolves, and the resolved message (for a firing sent before the
        # restart) goes out once
        now = time.time_ns()
        span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "hello",
                "kind": 2, "startTimeUnixNano": str(now - 10**6), "endTimeUnixNano": str(now)}
        body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                                 "value": {"stringValue": "ghost"}}]},
                                   "scopeSpans": [{"spans": [span]}]}]}
        status, _ = http("POST", role.endpoint + "/v1/traces", body)
        assert status == 200
        wait_for(lambda: len(slack.accepted) == 2, 40, what="the resolved message")
        assert slack.accepted[1]["text"].startswith("[RESOLVED:1] alertname=GhostSilent")
        time.sleep(3)
        assert len(slack.accepted) == 2
    finally:
        role.stop()
