"""Filter values with backslashes, control characters, NUL and invalid UTF-8 are found exactly as
stored and never answer 500, on embedded chDB and the ClickHouse 18.16 server alike; error
responses carry an id, never the database's text."""

from __future__ import annotations

import logging
import os
import time
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from testkit.seed import span_row
from tracehouse.dashboard import create_app
from tracehouse.storage import parse_range
from tracehouse.storage import queries_services as qsvc
from tracehouse.storage import queries_telemetry as qtel
from tracehouse.storage import queries_traces as qtr
from tracehouse.storage.attrs import encode_map

NS = 1_000_000_000
# the characters ClickHouse's escaped parameter format gives a meaning to, plus NUL and CR/LF
ODD = ["a\\b", "a\tb", "a\\tb", "a\nb", "a\rb", "a\x00b", "\\", "tail\\", "a\\\\nb", "x'y\"z"]


@pytest.fixture
def odd_store(store):
    now = time.time_ns() - 30 * NS
    spans = store.columns_for("spans")
    logs = store.columns_for("logs")
    metrics = store.columns_for("metric_points")
    for i, v in enumerate(ODD):
        t = now + i * 1000
        span_row(spans, os.urandom(16), os.urandom(8), b"\x00" * 8, v, "op " + v, t, 5_000_000, {"k": v}, kind=2)
        k, vals, ty = encode_map({"k": v})
        row = dict(timestamp=t // NS, ts_ns=t, observed_ns=t, trace_id=b"\x00" * 16, span_id=b"\x00" * 8, flags=0,
                   severity_number=9, severity_text="INFO", service=v, instance="i", event_name="",
                   body="body " + v + " end", attr_keys=k, attr_values=vals, attr_types=ty, resource_keys=[],
                   resource_values=[], scope_name="", scope_version="")
        for key, val in row.items():
            logs[key].append(val)
        mrow = dict(timestamp=t // NS, ts_ns=t, start_ns=t, service=v, instance="i", name="m " + v, description="",
                    unit="1", type=1, temporality=0, is_monotonic=0, flags=0, value=float(i), count=0, sum=0.0,
                    min=0.0, max=0.0, scope_name="", scope_version="", exp_scale=0, exp_zero_count=0,
                    exp_positive_offset=0, exp_negative_offset=0, attr_keys=k, attr_values=vals, attr_types=ty)
        for key in metrics:
            metrics[key].append(mrow.get(key, []))
    store.insert("spans", spans)
    store.insert("logs", logs)
    store.insert("metric_points", metrics)
    return store


def test_odd_values_are_found_exactly_as_stored(odd_store):
    store = odd_store
    tr = parse_range("10m", None)
    for v in ODD:
        by_service = qtr.search(store, tr, service=v)
        assert len(by_service) == 1 and by_service[0]["root_service"] == v, repr(v)
        assert [t["root_operation"] for t in qtr.search(store, tr, operation="op " + v)] == ["op " + v]
        assert [t["root_service"] for t in qtr.search(store, tr, attrs=[("k", v)])] == [v]
        assert [o["operation"] for o in qsvc.operations(store, v, tr)] == ["op " + v]
        series = qtel.metric_series(store, "m " + v, tr)["series"]
        assert [s["labels"]["service"] for s in series] == [v] and series[0]["labels"]["k"] == v
        assert [r["service"] for r in qtel.logs(store, tr, service=v)] == [v]
        assert [r["body"] for r in qtel.logs(store, tr, q=" " + v + " ")] == ["body " + v + " end"]
    assert qtr.search(store, tr, service="a") == []  # `a\tb` is not read as `a`


def test_surrogates_and_invalid_utf8_never_fail(odd_store):
    store = odd_store
    tr = parse_range("10m", None)
    assert qtr.search(store, tr, service="x\ud800y") == []
    assert qtel.logs(store, tr, q="\udcff") == []
    # a String holding bytes that are not UTF-8 (written by another client) reads back with U+FFFD
    store.query(f"INSERT INTO {store.t('logs')} (timestamp, ts_ns, service, body) "
                "SELECT toDateTime({t:UInt32}), {ns:UInt64}, unhex('61FF62'), unhex('C328')",
                {"t": time.time_ns() // NS - 5, "ns": time.time_ns() - 5 * NS})
    got = [r for r in qtel.logs(store, tr) if r["service"].startswith("a\ufffd")]
    assert [(r["service"], r["body"]) for r in got] == [("a\ufffdb", "\ufffd(")]


def test_api_answers_odd_values_and_hides_database_errors(odd_store, caplog):
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), odd_store)
    with TestClient(app, raise_server_exceptions=False) as c:
        for v in ODD:
            assert c.get("/api/traces", params={"service": v, "since": "10m"}).json()["traces"][0]["root_service"] == v
            ops = c.get(f"/api/services/{quote(v, safe='')}/operations", params={"since": "10m"})
            assert ops.status_code == 200 and [o["operation"] for o in ops.json()["operations"]] == ["op " + v]
            r = c.get("/api/metrics", params={"name": "m " + v, "since": "10m"})
            assert r.status_code == 200 and len(r.json()["series"]) == 1
            r = c.get("/api/logs", params=[("q", v), ("service", v), ("since", "10m")])
            assert r.status_code == 200 and len(r.json()["logs"]) == 1
        for path in ("/api/traces?service=%FF%FE", "/api/logs?q=%C3%28", "/api/services/%FF/series",
                     "/api/metrics?name=%ED%A0%80", "/api/traces?attr=k%3D%00%5C"):
            assert c.get(path).status_code == 200, path
        # a database failure: generic text and an id, the id in the server log, no exception text
        odd_store.query(f"RENAME TABLE {odd_store.t('logs')} TO {odd_store.t('logs_gone')}")
        try:
            with caplog.at_level(logging.ERROR, logger="tracehouse.dashboard"):
                r = c.get("/api/logs")
        finally:
            odd_store.query(f"RENAME TABLE {odd_store.t('logs_gone')} TO {odd_store.t('logs')}")
        body = r.json()
        assert r.status_code == 500 and set(body) == {"error", "error_id"}
        assert "exist" not in r.text.lower() and "DB::" not in r.text and "logs" not in r.text
        assert any(body["error_id"] in rec.getMessage() for rec in caplog.records)
