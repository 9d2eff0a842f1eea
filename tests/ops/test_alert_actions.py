"""``action: {snapshot: threads|memory}`` through the real ``tracehouse serve``: a service under the
agent gets requests, its rules fire, each alert's action queues a request of the kind it asked for,
the agent answers it, and the alert links to the snapshot taken for it (API and page)."""

from __future__ import annotations

import json

import pytest

from tests.snapshots.helpers import App
from tests.support.waiting import wait_for

from .helpers import Role, dump, http, rules_file

SERVICE = "act-shop"
RULES = f"""
groups:
  - name: act
    interval: 1s
    rules:
      - alert: ShopBusyThreads
        kind: red
        service: {SERVICE}
        signal: rate
        window: 1m
        op: ">"
        threshold: 0
        action: {{snapshot: threads}}
      - alert: ShopBusyMemory
        kind: red
        service: {SERVICE}
        signal: rate
        window: 1m
        op: ">"
        threshold: 0
        action: {{snapshot: memory}}
"""


@pytest.fixture
def served(tmp_path):
    role = Role(tmp_path, args=("--rules", rules_file(tmp_path, RULES)))
    app = None
    try:
        app = App(role, SERVICE)
        yield role, app
    finally:
        if app is not None:
            app.stop()
        role.stop()


def test_each_alert_gets_the_snapshot_it_asked_for_linked_from_it(served):
    role, app = served
    for _ in range(3):
        assert app.get("/whoami")[0] == 200

    def fired():
        alerts = {a["labels"]["alertname"]: a for a in role.get("/api/alerts")["alerts"] if a["state"] == "firing"}
        return alerts if {"ShopBusyThreads", "ShopBusyMemory"} <= set(alerts) else None

    alerts = wait_for(fired, 60, what="both rules to fire")
    wanted = {"ShopBusyThreads": "threads", "ShopBusyMemory": "memory"}
    for name, kind in wanted.items():
        ann = alerts[name]["annotations"]
        assert "snapshot_error" not in ann, dump(alerts[name])
        rid = ann["snapshot_id"]
        assert ann["snapshot"] == f"{role.api}/snapshots/{rid}"

        def captured(rid=rid):
            status, req = http("GET", f"{role.api}/api/snapshots/{rid}")
            return req if status == 200 and req["snapshots"] else None

        req = wait_for(captured, 60, what=f"the {kind} snapshot {name} asked for")
        assert req["kind"] == kind and req["service"] == SERVICE
        assert req["requested_by"] == f"alert:act/{name}"
        assert req["reason"].startswith(f"alert {name} (act/{name}) firing at ")
        snap = req["snapshots"][0]
        assert snap["attributes"]["snapshot.request_id"] == rid
        assert snap["body"]["kind"] == kind and snap["body"]["trigger"] == "command"
        assert snap["body"]["reason"] == req["reason"]
        assert ("memory" in snap["body"]) == (kind == "memory") and ("threads" in snap["body"]) == (kind == "threads")

        # the alerts page links to it, and the link leads to the snapshot's page
        status, page = role.text("/alerts")
        assert status == 200 and f'href="/snapshots/{rid}' in page
        status, snap_page = role.text(f"/snapshots/{rid}")
        assert status == 200 and SERVICE in snap_page and kind in snap_page
    # exactly one request per alert: the actions fire on the transition to firing, not at every evaluation
    status, listed = http("GET", f"{role.api}/api/snapshots?service={SERVICE}")
    assert status == 200 and len(listed["requests"]) == 2, json.dumps(listed)[:2000]
