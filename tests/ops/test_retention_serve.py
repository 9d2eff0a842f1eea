"""Retention through the real ``tracehouse serve``, on embedded chDB and on the ClickHouse 18.16
server: the job in the server drops days past retention, an admin change through the API applies
at once, and a changed ``TRACEHOUSE_RETENTION`` takes effect at the next start — what is in effect
read back from the tables."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.waiting import wait_for

from .helpers import Role, http

DAY = 86400


def _day(days_ago: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() - days_ago * DAY))


def _send_days(role: Role, days_ago: list[int]) -> None:
    spans = []
    now = int(time.time())
    for i, d in enumerate(days_ago):
        # noon of that day, or for today a minute ago when noon is still ahead (a span from the
        # future is outside every "since" window: this test failed from 00:00 to 12:00 UTC)
        into = 43200 if d else min(43200, max(0, now % DAY - 60))
        t = (now // DAY * DAY - d * DAY + into) * 10**9
        spans.append({"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": "GET /old", "kind": 2,
                      "startTimeUnixNano": str(t), "endTimeUnixNano": str(t + 10**6)})
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "aged"}}]},
                               "scopeSpans": [{"spans": spans}]}]}
    status, out = http("POST", role.endpoint + "/v1/traces", body)
    assert status == 200, out


def _spans(role: Role) -> dict:
    return role.get("/api/storage")["retention"]["spans"]


@pytest.fixture(params=["chdb", "clickhouse"])
def storage(request, tmp_path):
    if request.param == "chdb":
        yield f"chdb://{tmp_path}/data"
        return
    base = request.getfixturevalue("clickhouse_url").rsplit("/", 1)[0]
    db = "r_" + uuid.uuid4().hex[:10]
    yield f"{base}/{db}"
    from tracehouse.storage import Store

    with Store.open(f"{base}/default") as s:
        s.query(f"DROP DATABASE IF EXISTS {db}")


def test_retention_job_api_change_and_configuration_through_serve(tmp_path, storage):
    env = {"TRACEHOUSE_RETENTION": "spans=7", "TRACEHOUSE_RETENTION_INTERVAL": "1"}
    role = Role(tmp_path, env=env, storage=storage)
    try:
        _send_days(role, [0, 2, 5, 9])
        # the job in the server drops the 9-day-old day; 5 days old is kept under 7 days
        eff = wait_for(lambda: (s := _spans(role))["oldest_day"] == _day(5) and s["pending_partition_drops"] == 0
                       and s, 60, what="the retention job to drop the expired day")
        assert eff["configured_days"] == 7 and eff["days"] == 7
        assert eff["ttl_days"] == (7 if storage.startswith("chdb") else None)
        metrics = role.text("/metrics")[1]
        assert 'tracehouse_retention_partitions_dropped_total{table="spans"} 1.0' in metrics

        status, out = http("PUT", role.api + "/api/storage/retention", {"spans": 3})
        assert status == 200, out
        assert {d["table"] for d in out["applied"]["dropped"]} >= {"spans"}
        eff = out["retention"]["spans"]
        assert eff["days"] == 3 and eff["oldest_day"] == _day(2)
        assert eff["ttl_days"] == (3 if storage.startswith("chdb") else None)  # from system.tables
        assert role.stop() == 0

        role.env["TRACEHOUSE_RETENTION"] = "spans=1"  # the operator changes the configuration
        role.start()
        eff = _spans(role)
        assert eff["configured_days"] == 1 and eff["days"] == 1 and eff["oldest_day"] == _day(0)
        assert eff["ttl_days"] == (1 if storage.startswith("chdb") else None)
        traces = role.get("/api/traces?service=aged&since=30d&limit=10")["traces"]
        assert len(traces) == 1
    finally:
        role.stop()
