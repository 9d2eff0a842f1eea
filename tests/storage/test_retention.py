"""Retention applied and read back from the tables themselves, and disk use per table and day: on
embedded chDB (TTL) and the ClickHouse 18.16 server (no TTL: partition drops only)."""

from __future__ import annotations

import calendar
import time

import pytest
from prometheus_client import CollectorRegistry

from testkit.spangen import generate
from tracehouse.storage import InvalidParameter, queries_usage, retention

NS = 1_000_000_000
DAY = 86400


def _spans_on_days(store, days_ago: list[int], per_day: int = 200) -> dict[str, int]:
    """Spans on each of the given days (noon UTC); returns rows per day 'YYYY-MM-DD'."""
    today = int(time.time()) // DAY * DAY
    out = {}
    for d in days_ago:
        noon = today - d * DAY + DAY // 2
        cols, _ = generate(per_day, noon * NS, 600 * NS, store=store)
        store.insert("spans", cols)
        out[time.strftime("%Y-%m-%d", time.gmtime(noon))] = len(cols["trace_id"])
    return out


def test_a_shorter_retention_drops_old_days_now_and_is_read_back_from_the_tables(store):
    rows = _spans_on_days(store, [0, 2, 5, 9])
    before = retention.in_effect(store)["spans"]
    assert before["configured_days"] == 7 and before["pending_partition_drops"] >= 1  # day 9 is past 7 days
    assert before["oldest_day"] == min(rows)

    rep = retention.set_days(store, {"spans": 3})
    assert rep.errors == []
    dropped_days = {queries_usage.day_of(pid) for table, pid in rep.dropped if table == "spans"}
    assert dropped_days == set(sorted(rows)[:2])  # days 9 and 5; the rollups lose the same days
    assert {t for t, _ in rep.dropped} >= {"spans", "red_1m", "trace_summary"}
    kept = sum(n for day, n in rows.items() if day not in dropped_days)
    assert store.query(f"SELECT count() FROM {store.t('spans')}").scalar() == kept

    now = retention.in_effect(store)["spans"]
    assert now["configured_days"] == 3 and now["pending_partition_drops"] == 0 and now["pending_ttl_changes"] == 0
    assert now["oldest_day"] == sorted(rows)[2]
    if store.caps.ttl:
        # read from system.tables, every table of the signal
        assert now["ttl_days"] == 3 and {t["ttl_days"] for t in now["tables"].values()} == {3}
        assert now["days"] == 3 and "toIntervalDay(3)" in store.table_ttl("red_1m")
    else:
        assert now["ttl_days"] is None and now["mechanism"] == "partition drops" and now["days"] == 3
    assert retention.in_effect(store)["logs"]["configured_days"] == 7  # other signals untouched


def test_what_is_in_effect_comes_from_the_tables_not_the_settings_row(store):
    if store.caps.ttl:
        # someone (another process, an operator) changed one table's TTL behind the settings row
        store.query(f"ALTER TABLE {store.t('logs')} MODIFY TTL timestamp + toIntervalDay(30)")
        eff = retention.in_effect(store)["logs"]
        assert eff["configured_days"] == 7 and eff["ttl_days"] == 30 and eff["days"] == 30
        assert eff["pending_ttl_changes"] == 1
        rep = retention.apply(store)
        assert rep.ttl_modified == [("logs", 7)]
        assert retention.in_effect(store)["logs"]["ttl_days"] == 7
    else:
        # the settings row says 7 days, the tables still hold 12-day-old spans until the job runs
        _spans_on_days(store, [12, 1], per_day=50)
        eff = retention.in_effect(store)["spans"]
        assert eff["pending_partition_drops"] >= 1
        assert eff["oldest_day"] == time.strftime("%Y-%m-%d", time.gmtime(time.time() - 12 * DAY))
        retention.apply(store)
        assert retention.in_effect(store)["spans"]["pending_partition_drops"] == 0


def test_configuration_at_start_applies_when_it_changes_and_leaves_an_api_change_alone(store):
    assert retention.apply_configured(store, {"spans": 5}) == {"spans": 5}
    assert store.retention()["spans"] == 5
    retention.set_days(store, {"spans": 2})  # an admin, at run time
    assert retention.apply_configured(store, {"spans": 5}) == {}  # restart, same configuration
    assert store.retention()["spans"] == 2
    assert retention.apply_configured(store, {"spans": 4}) == {"spans": 4}  # the operator changed it
    assert store.retention()["spans"] == 4


def test_bad_retention_changes_are_refused(store):
    for bad in ({}, {"spans": 0}, {"spans": 3651}, {"spans": "7; DROP TABLE spans"}, {"spans": True},
                {"spans": 1.5}, {"nope": 3}, {"spans'": 3}):
        with pytest.raises(InvalidParameter):
            retention.set_days(store, bad)
    assert store.retention()["spans"] == 7


def test_disk_use_per_table_and_day(store):
    rows = _spans_on_days(store, [0, 1, 3], per_day=500)
    usage = queries_usage.disk_usage(store)
    spans = next(t for t in usage["tables"] if t["table"] == "spans")
    assert spans["rows"] == sum(rows.values())
    assert {d["day"]: d["rows"] for d in spans["days"]} == rows
    assert spans["bytes_on_disk"] > 0 and spans["compressed_bytes"] > 0
    assert spans["compression_ratio"] > 1.5  # spans compress well beyond their ids
    assert spans["oldest_day"] == min(rows) and spans["newest_day"] == max(rows)
    by_day = {d["day"]: d for d in usage["days"]}
    assert set(rows) <= set(by_day) and by_day[max(rows)]["tables"]["spans"] > 0
    assert usage["totals"]["bytes_on_disk"] >= sum(t["bytes_on_disk"] for t in usage["tables"] if t["table"] == "spans")
    assert "settings" in {t["table"] for t in usage["tables"]}  # unpartitioned tables count too


def test_the_job_runs_on_its_thread_and_reports_metrics(store):
    _spans_on_days(store, [20, 0], per_day=50)
    reg = CollectorRegistry()
    job = retention.RetentionJob(store, interval_s=3600, first_delay_s=0.05, registry=reg)
    job.start()
    try:
        deadline = time.monotonic() + 30
        while job.last is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        job.stop()
    assert job.last is not None and job.last.errors == []
    assert any(t == "spans" for t, _ in job.last.dropped)
    assert reg.get_sample_value("tracehouse_retention_runs_total") == 1
    assert reg.get_sample_value("tracehouse_retention_partitions_dropped_total", {"table": "spans"}) == 1
    assert reg.get_sample_value("tracehouse_storage_rows", {"table": "spans"}) == \
        store.query(f"SELECT count() FROM {store.t('spans')}").scalar()


def test_plan_is_pure_and_drops_only_whole_expired_partitions():
    now = calendar.timegm((2024, 5, 10, 12, 0, 0))
    parts = [{"table": "spans", "partition_id": p} for p in ("20240502", "20240503", "20240504", "20240510")]
    parts += [{"table": "alert_history", "partition_id": p} for p in ("202401", "202404", "202405")]
    parts += [{"table": "settings", "partition_id": "all"}]
    configured = {"spans": 7, "metrics": 30, "logs": 7, "alerts": 30}
    p = retention.plan(configured, {}, parts, has_ttl=False, now_s=now)
    # cutoff for 7 days is 2024-05-03: the 2nd is wholly older; alert history keeps April (cutoff 2024-04-10)
    assert p.drop == [("spans", "20240502"), ("alert_history", "202401")] and p.modify_ttl == []
    ttls = {name: 7 for tables in retention.RETENTION_TABLES.values() for name in tables}
    p = retention.plan(configured, ttls, [], has_ttl=True, now_s=now)
    assert sorted(p.modify_ttl) == [("alert_history", 30), ("metric_points", 30)]
