"""Every query a user can cause runs with time, memory, row and byte limits that ClickHouse 18.16 and
chDB enforce; result sizes are capped in the SQL; raw-row ranges are bounded."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from testkit.spangen import Gen, generate
from tracehouse.dashboard import create_app
from tracehouse.storage import InvalidParameter, QueryLimitExceeded, StorageUnavailable, parse_range
from tracehouse.storage import queries_telemetry as qtel
from tracehouse.storage import queries_traces as qtr
from tracehouse.storage.attrs import encode_map
from tracehouse.storage.limits import QueryLimits

NS = 1_000_000_000


class RowCounter:
    """The real store, counting the rows each user query hands back to Python."""

    def __init__(self, store):
        self.store, self.rows = store, []

    def read(self, sql, params=None):
        res = self.store.read(sql, params)
        self.rows.append(len(res.rows))
        return res

    def t(self, name):
        return self.store.t(name)


def _metric_series(store, n_series: int, points: int) -> None:
    cols = store.columns_for("metric_points")
    now = time.time_ns() - 5 * NS
    for i in range(n_series):
        k, v, t = encode_map({"pod": f"p{i:04d}"})
        for j in range(points):
            ts = now - j * 60 * NS
            row = dict(timestamp=ts // NS, ts_ns=ts, start_ns=ts, service="svc", instance="i", name="busy",
                       description="", unit="1", type=1, temporality=0, is_monotonic=0, flags=0, value=float(j),
                       count=0, sum=0.0, min=0.0, max=0.0, scope_name="", scope_version="", exp_scale=0,
                       exp_zero_count=0, exp_positive_offset=0, exp_negative_offset=0, attr_keys=k, attr_values=v,
                       attr_types=t)
            for key in cols:
                cols[key].append(row.get(key, []))
    store.insert("metric_points", cols)


def test_metric_series_are_capped_in_sql(store):
    _metric_series(store, 260, 3)
    spy = RowCounter(store)
    out = qtel.metric_series(spy, "busy", parse_range("30m", None))
    assert out["truncated"] and len(out["series"]) == qtel.MAX_SERIES
    assert spy.rows == [qtel.MAX_SERIES + 1]  # not 260 × 3 point rows
    assert all(len(s["points"]) == 3 and s["points"] == sorted(s["points"]) for s in out["series"])
    grouped = qtel.metric_series(spy, "busy", parse_range("30m", None), group_by=["pod"], agg="max")
    assert grouped["series"][0]["labels"] == {"pod": "p0000"} and grouped["series"][0]["points"][-1][1] == 0.0


def test_row_limit_stops_a_user_query_and_the_api_says_so(store):
    cols, _ = generate(3000, time.time_ns() - 300 * NS, 290 * NS, Gen(), store=store)
    store.insert("spans", cols)
    tr = parse_range("15m", None)
    assert qtr.search(store, tr, attrs=[("region", "eu-west")], limit=5)
    store.limits = QueryLimits(max_rows_to_read=500)
    with pytest.raises(QueryLimitExceeded):
        qtr.search(store, tr, attrs=[("region", "eu-west")], limit=5)
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), store)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/traces", params={"attr": "region=eu-west"})
        assert r.status_code == 422 and r.json()["error_id"] and "narrow" in r.json()["error"]
        assert "Code" not in r.text
    store.limits = QueryLimits(max_memory_bytes=1)
    with pytest.raises(QueryLimitExceeded):
        qtr.search(store, tr, attrs=[("region", "eu-west")], limit=5)


def test_settings_sent_with_user_queries(store):
    store.limits = QueryLimits(timeout_s=7, max_memory_bytes=123456789, max_rows_to_read=99999999,
                               max_bytes_to_read=888888888, max_threads=1)
    got = dict(store.read("SELECT name, value FROM system.settings WHERE name IN ('max_execution_time', "
                          "'max_memory_usage', 'max_rows_to_read', 'max_bytes_to_read', 'max_threads')").rows)
    assert {k: str(v).split(".")[0] for k, v in got.items()} == {
        "max_execution_time": "7", "max_memory_usage": "123456789", "max_rows_to_read": "99999999",
        "max_bytes_to_read": "888888888", "max_threads": "1"}


def test_raw_ranges_are_bounded(store):
    long = parse_range("40d", None)
    for call in (lambda: qtel.metric_series(store, "busy", long), lambda: qtel.logs(store, long),
                 lambda: qtr.search(store, long)):
        with pytest.raises(InvalidParameter, match="31 days"):
            call()
    assert qtel.metric_series(store, "busy", parse_range("30d", None))["series"] == []


def test_a_slow_read_holds_neither_inserts_nor_more_than_its_slots_on_chdb(chdb_store):
    store = chdb_store
    store.limits = QueryLimits(max_concurrent=1, timeout_s=3)
    cols, _ = generate(500, time.time_ns() - 60 * NS, 50 * NS, Gen(), store=store)
    slow = threading.Thread(target=store.read, args=("SELECT sleep(1.5) AS x",))
    slow.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    store.insert("spans", cols)
    insert_s = time.monotonic() - t0
    t0 = time.monotonic()
    assert store.read("SELECT 1 AS x").rows == [(1,)]
    waited_s = time.monotonic() - t0
    slow.join()
    assert insert_s < 0.8, f"an insert waited {insert_s:.2f} s behind a read"
    assert waited_s > 0.8, "a second user query ran beside the first with one slot"


def test_busy_budget_passes_bursts_and_paces_a_loop():
    from tracehouse.storage.limits import BusyBudget

    now = [0.0]
    b = BusyBudget(share=0.5, burst_s=2.0, clock=lambda: now[0])
    for _ in range(4):  # 4 × 0.5 s of queries inside the 2 s burst: no waiting
        assert b.wait_s() == 0.0
        b.spend(0.5)
        now[0] += 0.5
    # burst spent (1 s refilled meanwhile): a loop now waits so that queries take half the time
    b.spend(2.0)
    assert b.wait_s() == pytest.approx(2.0)
    now[0] += 2.0
    assert b.wait_s() == 0.0


def test_a_loop_of_reads_is_paced_on_chdb(chdb_store):
    store = chdb_store
    store.limits = QueryLimits(busy_share=0.5, busy_burst_s=0.2, timeout_s=5)
    store.read("SELECT sleep(0.6) AS x")  # spends 0.6 s of a 0.2 s burst
    t0 = time.monotonic()
    store.read("SELECT 1 AS x")
    assert time.monotonic() - t0 > 0.5  # waited for the share to come back (≈ 0.8 s)
    store.limits = QueryLimits(busy_share=0.5, busy_burst_s=0.2, timeout_s=1)
    store.read("SELECT sleep(0.9) AS x")
    with pytest.raises(StorageUnavailable):  # the wait would pass the time limit: 503, not a stall
        store.read("SELECT 1 AS x")


def test_a_trace_too_big_for_the_memory_limit_is_answered_cut_at_its_text_budget(store):
    """``/api/traces/{id}`` sorted every column of every span: a trace of 100,000 spans with 6 kB of
    attributes each answered 422 after 7 s (the sort passed 1 GiB) with the server's RSS 900 MB up, so
    it could not be read at all. Here: 25,000 spans of 6 kB under a 320 MB limit. Now the spans' sizes
    are read first and the answer stops at ``MAX_TRACE_TEXT_BYTES`` of text, ``truncated``."""
    tids, n = _big_trace(store)
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), store)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get(f"/api/traces/{tids[0].hex()}")
        assert r.status_code == 200, r.text[:300]
        body = r.json()
        kept = body["span_count"]
        assert body["truncated"] and 0 < kept < n
        assert kept * 6_000 <= qtr.MAX_TRACE_TEXT_BYTES < (kept + 1) * 6_400
        starts = [s["start_ns"] for s in body["spans"]]
        assert starts == sorted(starts) and len({s["span_id"] for s in body["spans"]}) == kept
        # the spans kept are the ones that start first: the outline's first ones
        outline = c.get(f"/api/traces/{tids[0].hex()}/outline").json()["spans"]
        assert [s["span_id"] for s in body["spans"]] == [s["span_id"] for s in outline[:kept]]


def _big_trace(store) -> tuple[list[bytes], int]:
    """One trace of 25,000 spans with 6 kB of attributes each, and a user-query memory limit of
    320 MB, which sorting all of it passes."""
    cols, tids = generate(25_000, time.time_ns() - 300 * NS, 290 * NS, Gen(error_rate=0), store=store)
    n = len(cols["trace_id"])
    keys, values, types = encode_map({f"k{i}": chr(97 + i) * 300 for i in range(20)})
    cols["trace_id"] = [tids[0]] * n
    cols["attr_keys"], cols["attr_values"], cols["attr_types"] = [keys] * n, [values] * n, [types] * n
    store.insert("spans", cols)
    store.limits = QueryLimits(max_memory_bytes=320 << 20)
    return tids, n


def test_the_query_after_one_stopped_at_a_limit_is_answered(store):
    """On chDB, a statement stopped at the memory limit left its output on its reader connection,
    and the next statement there (the pool hands back the same one) failed reading it as its own
    Arrow result: 'Message metadata too long', a 500 on the next page anyone opened."""
    _big_trace(store)
    heavy = (f"SELECT attr_values FROM {store.t('spans')} ORDER BY start_ns, span_id "
             "LIMIT 1 BY span_id LIMIT 50001")
    for _ in range(2):
        with pytest.raises(QueryLimitExceeded):
            store.read(heavy)
        assert store.read("SELECT 1 AS x").rows == [(1,)]
