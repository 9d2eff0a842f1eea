"""Log search, the metrics explorer and exemplars, on embedded chDB and a ClickHouse 18.16 server."""

from __future__ import annotations

import os
import time

import pytest

from testkit.metricgen import point
from tracehouse.storage import InvalidParameter, TimeRange, parse_range
from tracehouse.storage import queries_logs as ql
from tracehouse.storage import queries_metrics as qm
from tracehouse.storage.attr_filters import parse_filters
from tracehouse.storage.attrs import encode_map

NS = 1_000_000_000
MIN = 60 * NS


def _logs(store, recs):
    cols = store.columns_for("logs")
    for ts, sev, service, body, attrs, tid, sid in recs:
        k, v, t = encode_map(attrs)
        row = dict(timestamp=ts // NS, ts_ns=ts, observed_ns=ts, trace_id=tid or b"\x00" * 16,
                   span_id=sid or b"\x00" * 8, flags=0, severity_number=sev, severity_text="", service=service,
                   instance="i-1", event_name="", body=body, attr_keys=k, attr_values=v, attr_types=t,
                   resource_keys=["service.name", "host.name"], resource_values=[service, f"host-{service}"],
                   scope_name="", scope_version="")
        for key, val in row.items():
            cols[key].append(val)
    store.insert("logs", cols)


def test_log_search_filters_paging_and_volume(store):
    now = time.time_ns() // NS * NS
    tid, sid = os.urandom(16), os.urandom(8)
    recs = []
    for i in range(60):
        # three records share each timestamp: paging must neither repeat nor skip them
        ts = now - 100 * NS + (i // 3) * NS
        recs.append((ts, (9, 13, 17)[i % 3], ("api", "db")[i % 2], f"line {i} " + ("Timeout!" if i % 10 == 0 else "ok"),
                     {"n": i, "logger": "app.db" if i % 4 == 0 else "app.web"}, tid if i < 6 else None,
                     sid if i < 3 else None))
    _logs(store, recs)
    tr = parse_range("10m", None)
    q = ql.LogQuery(tr)

    seen, cursor, pages = [], None, 0
    while True:
        page = ql.search(store, q, limit=7, cursor=cursor)
        seen += [r["body"] for r in page["logs"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == 9 and len(seen) == 60 and len(set(seen)) == 60
    times = [int(b.split()[1]) // 3 for b in seen]
    assert times == sorted(times, reverse=True)  # newest first

    def bodies(**kw):
        return {int(r["body"].split()[1]) for r in ql.search(store, ql.LogQuery(tr, **kw), limit=500)["logs"]}

    assert bodies(service="api") == set(range(0, 60, 2))
    assert bodies(severity="error") == set(range(2, 60, 3))
    assert bodies(severity="warn") == {i for i in range(60) if i % 3}
    assert bodies(q="timeout") == set(range(0, 60, 10))
    assert bodies(filters=tuple(parse_filters(["logger=app.db"]))) == set(range(0, 60, 4))
    assert bodies(filters=tuple(parse_filters(["n>=57"]))) == {57, 58, 59}
    assert bodies(filters=tuple(parse_filters(["host.name~HOST-DB"]))) == set(range(1, 60, 2))  # resource
    assert bodies(trace_id=tid.hex()) == set(range(6))
    assert bodies(trace_id=tid.hex(), span_id=sid.hex()) == {0, 1, 2}
    row = ql.search(store, ql.LogQuery(tr, trace_id=tid.hex(), span_id=sid.hex()), limit=1)["logs"][0]
    assert row["trace_id"] == tid.hex() and row["span_id"] == sid.hex() and row["attributes"]["n"] in (0, 1, 2)

    vol = ql.volume(store, ql.LogQuery(tr), step_s=60)
    assert vol["total"] == 60 and vol["step_s"] == 60
    by = {}
    for p in vol["points"]:
        for g, n in p["counts"].items():
            by[g] = by.get(g, 0) + n
    assert by == {"info": 20, "warn": 20, "error": 20}
    assert ql.volume(store, ql.LogQuery(tr, service="db", severity="error"))["total"] == 10
    assert set(ql.services(store, tr)) == {"api", "db"}

    for bad in ("x", "1-", "-1", "12-x"):
        with pytest.raises(InvalidParameter):
            ql.search(store, q, cursor=bad)
    with pytest.raises(InvalidParameter):
        ql.search(store, ql.LogQuery(tr, severity="loud"))
    with pytest.raises(InvalidParameter):
        ql.search(store, ql.LogQuery(tr, span_id="xyz"))


def _series(res):
    return {tuple(sorted(s["labels"].items())): [v for _, v in s["points"]] for s in res["series"]}


def test_explorer_gauges_counters_and_labels(store):
    now = time.time_ns() // (60 * NS) * (60 * NS)
    t0 = now - 10 * MIN
    cols = store.columns_for("metric_points")
    for i in range(10):  # one point a minute
        ts = t0 + i * MIN + NS
        for cpu, base in (("0", 10.0), ("1", 30.0)):
            point(cols, ts, "orders", "cpu.util", {"cpu": cpu}, {"service.name": "orders", "host.name": "h1"},
                  value=base + i, unit="1")
        # a cumulative counter that restarts at i == 5 (from 500 down to 0): +100 a minute throughout
        point(cols, ts, "orders", "requests", {"route": "/a"}, type=2, is_monotonic=1, unit="{request}",
              value=float((i if i < 5 else i - 5) * 100 + (0 if i < 5 else 100)))
        point(cols, ts, "orders", "requests", {"route": "/b"}, type=2, is_monotonic=1, unit="{request}",
              value=float(i * 60))
        point(cols, ts, "orders", "bytes.sent", {}, type=2, temporality=1, is_monotonic=1, unit="By", value=600.0)
    # a counter that started inside the window and exported once: all it counted is new
    point(cols, t0 + 90 * NS, "orders", "jobs", {}, type=2, is_monotonic=1, start_ns=t0 + 30 * NS, value=60.0)
    store.insert("metric_points", cols)
    tr = TimeRange(t0, now)

    def run(name, **kw):
        return qm.explore(store, qm.MetricQuery(name, tr, step_s=60, **kw))

    avg = run("cpu.util")
    assert avg["type"] == "gauge" and avg["agg"] == "avg" and avg["unit"] == "1"
    assert _series(avg) == {(): [20.0 + i for i in range(10)]}  # one series: the mean of both cpus
    by_cpu = _series(run("cpu.util", group_by=("cpu",), agg="max"))
    assert by_cpu == {(("cpu", "0"),): [10.0 + i for i in range(10)], (("cpu", "1"),): [30.0 + i for i in range(10)]}
    assert _series(run("cpu.util", agg="sum")) == {(): [40.0 + 2 * i for i in range(10)]}
    assert _series(run("cpu.util", group_by=("host.name", "service"), agg="min")) == {
        (("host.name", "h1"), ("service", "orders")): [10.0 + i for i in range(10)]}  # resource label
    assert _series(run("cpu.util", filters=tuple(parse_filters(["cpu!=0"])))) == {(): [30.0 + i for i in range(10)]}
    assert _series(run("cpu.util", filters=tuple(parse_filters(["service=nope"])))) == {}

    rate = run("requests")  # default for a monotonic sum
    assert rate["agg"] == "rate"
    # both routes: /a +100/min (the restart is not a drop), /b +60/min → 160/60 per second from the 2nd minute
    assert [round(v, 4) for v in _series(rate)[()][1:]] == [round(160 / 60, 4)] * 9
    inc = _series(run("requests", group_by=("route",), agg="increase"))
    assert inc[(("route", "/a"),)][1:] == [100.0] * 9 and inc[(("route", "/b"),)][1:] == [60.0] * 9
    assert _series(run("jobs", agg="increase")) == {(): [60.0]} and _series(run("jobs")) == {(): [1.0]}
    delta = run("bytes.sent")
    assert [round(v, 3) for v in _series(delta)[()]] == [10.0] * 10  # 600 bytes a minute as deltas

    labels = {x["key"]: x["values"] for x in qm.labels(store, tr, "cpu.util")}
    assert labels["service"] == ["orders"] and sorted(labels["cpu"]) == ["0", "1"] and labels["host.name"] == ["h1"]
    cols = store.columns_for("metric_points")
    point(cols, t0 + NS, "billing", "cpu.util", {"cpu": "9"}, {"service.name": "billing", "host.name": "h2"}, value=1.0)
    store.insert("metric_points", cols)
    labels = {x["key"]: x["values"] for x in qm.labels(store, tr, "cpu.util")}
    assert labels["host.name"] == ["h1", "h2"] and set(labels["service"]) == {"orders", "billing"}
    assert qm.explore(store, qm.MetricQuery("no.such.metric", tr))["series"] == []
    with pytest.raises(InvalidParameter):
        run("cpu.util", agg="p95")
    with pytest.raises(InvalidParameter):
        run("requests", agg="median; DROP TABLE spans")


def test_explorer_histogram_quantiles_over_time(store):
    now = time.time_ns() // (60 * NS) * (60 * NS)
    t0 = now - 10 * MIN
    cols = store.columns_for("metric_points")
    bounds = [0.1, 0.2, 0.5, 1.0]
    for i in range(10):
        ts = t0 + i * MIN + NS
        # cumulative: each minute adds 10 observations in (0.1, 0.2] for instance a and, from minute
        # 5 on, 10 in (0.5, 1.0] for instance b; b restarts at minute 5 (counts start again)
        point(cols, ts, "api", "rpc.duration", {"m": "x"}, type=3, unit="s", instance="a",
              count=10 * (i + 1), sum=0.15 * 10 * (i + 1), bucket_counts=[0, 10 * (i + 1), 0, 0, 0],
              explicit_bounds=bounds)
        if i >= 5:
            point(cols, ts, "api", "rpc.duration", {"m": "x"}, type=3, unit="s", instance="b",
                  count=10 * (i - 4), sum=0.75 * 10 * (i - 4), bucket_counts=[0, 0, 0, 10 * (i - 4), 0],
                  explicit_bounds=bounds)
        else:
            point(cols, ts, "api", "rpc.duration", {"m": "x"}, type=3, unit="s", instance="b",
                  count=1000, sum=1000.0, bucket_counts=[0, 0, 0, 0, 1000], explicit_bounds=bounds)
        # delta temporality exponential histogram, scale 0 (bounds 1, 2, 4, 8 …): 4 values in (2, 4]
        point(cols, ts, "api", "queue.latency", {}, type=4, unit="ms", temporality=1, count=4, sum=12.0,
              exp_scale=0, exp_positive_offset=1, exp_positive_counts=[4])
        point(cols, ts, "api", "old.summary", {}, type=5, unit="s", count=10 * (i + 1), sum=1.0 * (i + 1),
              quantiles=[0.5, 0.99], quantile_values=[0.05, 0.5])
    store.insert("metric_points", cols)
    tr = TimeRange(t0, now)

    def run(name, **kw):
        return qm.explore(store, qm.MetricQuery(name, tr, step_s=60, **kw))

    p50 = run("rpc.duration", agg="p50", group_by=("instance",))
    s = _series(p50)
    a, b = s[(("instance", "a"),)], s[(("instance", "b"),)]
    assert [round(v, 3) for v in a[1:]] == [0.15] * 9  # middle of (0.1, 0.2]
    assert [round(v, 3) for v in b[6:]] == [0.75] * 4  # after the restart, middle of (0.5, 1.0]
    assert b[5] == pytest.approx(0.75)  # the restart step: the new counts themselves
    both = _series(run("rpc.duration", agg="p95"))[()]
    assert 0.5 < both[-1] <= 1.0 and both[1] == pytest.approx(0.195)  # before b serves: (0.1, 0.2]
    avg = _series(run("rpc.duration", agg="avg", group_by=("instance",)))
    assert [round(v, 3) for v in avg[(("instance", "a"),)][1:]] == [0.15] * 9
    cnt = _series(run("rpc.duration", agg="count", group_by=("instance",)))
    assert cnt[(("instance", "a"),)][1:] == [10.0] * 9
    rate = _series(run("rpc.duration", agg="rate", group_by=("instance",)))
    assert [round(v, 4) for v in rate[(("instance", "a"),)][1:]] == [round(10 / 60, 4)] * 9

    exp = run("queue.latency")
    assert exp["type"] == "exponential_histogram" and exp["agg"] == "p95"
    assert all(2 < v <= 4 for v in _series(exp)[()])
    assert _series(run("queue.latency", agg="p50"))[()][0] == pytest.approx(3.0)
    summ = run("old.summary", agg="p99")
    assert _series(summ)[()] == [0.5] * 10
    assert [round(v, 3) for v in _series(run("old.summary", agg="avg"))[()][1:]] == [0.1] * 9


def test_exemplars_of_a_service_latency_histogram(store):
    # every point inside one hour, so that one exemplar per 1-hour step is one in all, whatever the clock says
    hour = 3600 * NS
    now = (time.time_ns() // hour - 1) * hour + 30 * 60 * NS
    cols = store.columns_for("metric_points")
    tids = [os.urandom(16) for _ in range(8)]
    for i, tid in enumerate(tids):
        point(cols, now - (8 - i) * 30 * NS, "api", "http.server.request.duration", {"http.route": "/x"}, type=3,
              unit="s", count=1, sum=0.1 * i, bucket_counts=[1], explicit_bounds=[],
              exemplar_trace_ids=[tid], exemplar_span_ids=[os.urandom(8)], exemplar_values=[0.1 * (i + 1)],
              exemplar_times_ns=[now - (8 - i) * 30 * NS - NS])
    point(cols, now, "other", "http.server.request.duration", {}, type=3, unit="s", count=1, sum=1.0,
          exemplar_trace_ids=[os.urandom(16)], exemplar_span_ids=[os.urandom(8)], exemplar_values=[9.0],
          exemplar_times_ns=[now])
    # not latencies: a size histogram, a duration without a time unit
    point(cols, now, "api", "http.request.body.size", {}, type=3, unit="By", count=1, sum=1.0,
          exemplar_trace_ids=[os.urandom(16)], exemplar_span_ids=[os.urandom(8)], exemplar_values=[1e6],
          exemplar_times_ns=[now])
    point(cols, now, "api", "job.duration", {}, type=3, unit="{jobs}", count=1, sum=1.0,
          exemplar_trace_ids=[os.urandom(16)], exemplar_span_ids=[os.urandom(8)], exemplar_values=[1e6],
          exemplar_times_ns=[now])
    point(cols, now, "api", "db.latency", {}, type=3, unit="us", count=1, sum=1.0,
          exemplar_trace_ids=[tids[0]], exemplar_span_ids=[os.urandom(8)], exemplar_values=[5000.0],
          exemplar_times_ns=[now - NS])
    store.insert("metric_points", cols)
    tr = parse_range("15m", None, now_ns=now + NS)
    found = qm.exemplars(store, tr, "api")  # every latency histogram of the service, in ms
    assert {(e["metric"], e["value_ms"]) for e in found} >= {("db.latency", 5.0), ("http.server.request.duration", 800.0)}
    assert {e["metric"] for e in found} == {"db.latency", "http.server.request.duration"}
    ex = qm.exemplars(store, tr, "api", ["http.server.request.duration"], per_step=1, step_s=3600)
    assert len(ex) == 1 and ex[0]["trace_id"] == tids[-1].hex() and ex[0]["value_ms"] == pytest.approx(800.0)
    ex = qm.exemplars(store, tr, "api", ["http.server.request.duration"])
    assert {e["trace_id"] for e in ex} == {t.hex() for t in tids}
    assert [e["time_ns"] for e in ex] == sorted(e["time_ns"] for e in ex)
    assert qm.exemplars(store, tr, "api", []) == []
    names = [{"name": "http.server.request.duration", "type": "histogram", "unit": "s"},
             {"name": "tracehouse.probe.duration", "type": "gauge", "unit": "s"},
             {"name": "db.duration", "type": "histogram", "unit": "{thing}"}]
    assert qm.latency_metrics(names) == ["http.server.request.duration"]


def test_points_of_another_type_under_the_same_name_are_not_mixed_in(store):
    """A name sent as a gauge and as a histogram (two services disagreeing, or one that changed its
    instrument): the explorer took ``any(type)`` and averaged the histogram points' empty value (0)
    into the gauge's series. Now the type with the most points is shown, and only its points."""
    now = time.time_ns() // (60 * NS) * (60 * NS)
    t0 = now - 5 * MIN
    cols = store.columns_for("metric_points")
    for i in range(2):
        point(cols, t0 + i * 10 * NS, "a", "mixed", {}, value=4.0)
    point(cols, t0 + 5 * NS, "b", "mixed", {}, type=3, count=2, sum=1.0, bucket_counts=[1, 1], explicit_bounds=[1.0])
    store.insert("metric_points", cols)
    res = qm.explore(store, qm.MetricQuery("mixed", TimeRange(t0 - MIN, now), step_s=60))
    assert res["type"] == "gauge" and res["info"]["points"] == 2
    assert [p[1] for s in res["series"] for p in s["points"]] == [4.0]
