"""Lists with a cap keep the busiest entries and say they were cut, on embedded chDB and a ClickHouse
18.16 server. Found by a prober: 4,000 one-span services named ``aaa-flood-NNNN`` (any ingest token
can send them) pushed a real service that sorts after them off the services list and the map."""

from __future__ import annotations

import os
import time

from testkit import floods
from testkit.metricgen import point
from testkit.seed import span_row
from tracehouse.storage import attr_filters, parse_range
from tracehouse.storage import queries_infra as qinfra
from tracehouse.storage import queries_map as qmap
from tracehouse.storage import queries_metrics as qm
from tracehouse.storage import queries_services as qsvc
from tracehouse.storage import queries_telemetry as qtel

NS = 1_000_000_000
FLOOD = 4000


def _flood(store, now: int) -> None:
    """4,000 one-span services sorting first (the last with an error), and ``zz-victim`` with 3
    spans calling ``zz-db``."""
    cols = store.columns_for("spans")
    for i in range(FLOOD):
        span_row(cols, os.urandom(16), os.urandom(8), b"\0" * 8, f"aaa-flood-{i:05d}", "x", now - 30 * NS, 1000,
                 {}, error=i == FLOOD - 1)
    for _ in range(3):
        tid, root = os.urandom(16), os.urandom(8)
        span_row(cols, tid, root, b"\0" * 8, "zz-victim", "GET /", now - 20 * NS, 5_000_000, {})
        span_row(cols, tid, os.urandom(8), root, "zz-victim", "SELECT", now - 20 * NS, 1_000_000,
                 {"db.system": "postgresql", "server.address": "zz-db", "server.port": 5432}, kind=3)
    store.insert("spans", cols)


def test_a_flood_of_one_span_services_does_not_hide_a_busy_one(store):
    _flood(store, time.time_ns())
    tr = parse_range("15m", None)
    names = [s["service"] for s in qsvc.services(store, tr)]
    assert "zz-victim" in names  # most spans
    assert len(names) == qsvc.MAX_SERVICES and names == sorted(names)  # the busiest, listed by name
    got = qsvc.listing(store, tr)
    assert got["services"] == qsvc.services(store, tr) and got["truncated"] and got["total"] == FLOOD + 1
    assert f"aaa-flood-{FLOOD - 1:05d}" in names  # one span like the rest, but an error: kept before them
    assert f"aaa-flood-{qsvc.MAX_SERVICES - 2:05d}" not in names  # made room for it
    assert "zz-victim" in qsvc.sparklines(store, tr)

    small = qsvc.listing(store, tr, limit=5000)
    assert small["total"] == len(small["services"]) == FLOOD + 1 and not small["truncated"]
    # as busy as the flood: cut, but found by part of its name
    cut = f"aaa-flood-{FLOOD - 2:05d}"
    assert cut not in names
    found = qsvc.listing(store, tr, match="FLOOD-03998")
    assert [s["service"] for s in found["services"]] == [cut] and found["total"] == 1 and not found["truncated"]
    assert set(qsvc.sparklines(store, tr, match="zz-")) == {"zz-victim"}
    assert qsvc.listing(store, tr, limit=3, match="flood-0399")["total"] == 10


def test_the_map_keeps_the_busiest_services_and_their_calls(store):
    _flood(store, time.time_ns())
    full = qmap.service_map(store, parse_range("15m", None))
    assert "zz-victim" in {n["id"] for n in full["nodes"]} and full["services_total"] == FLOOD + 1
    m = qmap.service_map(store, parse_range("15m", None), limit=10)
    services = [n["id"] for n in m["nodes"] if n["kind"] == "service"]
    assert len(services) == 10 and "zz-victim" in services
    assert m["truncated"] and m["services_total"] == FLOOD + 1 and not m["edges_truncated"]
    assert [e["source"] for e in m["edges"]] == ["zz-victim"]  # its database call
    assert {n["kind"] for n in m["nodes"]} - {"service"}  # and the database it calls


def _points(store, now: int, rows) -> None:
    cols = store.columns_for("metric_points")
    for service, name, attrs, resource, n in rows:
        for j in range(n):
            point(cols, now - (10 + j) * NS, service, name, attrs, resource, value=1.0)
    store.insert("metric_points", cols)


def test_metric_names_keep_the_ones_with_most_points(store):
    now = time.time_ns()
    _points(store, now, [("flood", f"aaa.flood.{i:05d}", {}, None, 1) for i in range(5000)]
            + [("real", "zz.real", {}, None, 3)])
    tr = parse_range("15m", None)
    names = [m["name"] for m in qtel.metric_names(store, tr)]
    assert "zz.real" in names and len(names) == 5000 and names == sorted(names)
    got = qtel.metric_listing(store, tr, limit=10)
    assert "zz.real" in [m["name"] for m in got["metrics"]] and got["truncated"]
    assert got["total"] == 5001
    assert qtel.metric_listing(store, tr, service="real") == {"metrics": qtel.metric_names(store, tr, "real"),
                                                              "total": 1, "truncated": False}


def test_infrastructure_keeps_the_hosts_with_most_points(store):
    now = time.time_ns()
    _points(store, now, [("flood", "system.cpu.utilization", {}, {"host.name": f"aaa-host-{i:05d}"}, 1)
                         for i in range(5000)]
            + [("real", "system.cpu.utilization", {}, {"host.name": "zz-host"}, 5),
               ("real", "container.cpu.utilization", {}, {"host.name": "zz-host", "container.id": "zz-ctr"}, 4)])
    tr = parse_range("15m", None)
    lines = qinfra.infra_series(store, tr, "system.cpu.utilization", 60)
    assert "host zz-host" in lines and len(lines) == 30
    got = qinfra.infra_latest(store, tr)
    machines = {(r["host"], r["container"]) for r in got["rows"]}
    assert {("zz-host", ""), ("zz-host", "zz-ctr")} <= machines and len(machines) == qinfra.MAX_MACHINES
    assert got["truncated"] and got["total"] == 5002


def test_label_keys_keep_the_ones_most_points_carry(store):
    now = time.time_ns()
    flood = {f"aaa.k.{i:05d}": "x" for i in range(5000)}
    _points(store, now, [("svc", "chip.gauge", flood, None, 1), ("svc", "chip.gauge", {"zz.key": "v"}, None, 3)])
    tr = parse_range("15m", None)
    keys = [x["key"] for x in qm.labels(store, tr, "chip.gauge")]
    assert "zz.key" in keys
    got = qm.label_listing(store, tr, "chip.gauge")
    assert got["truncated"] and len(got["labels"]) == len(qm.COLUMNS) + qm.MAX_LABEL_KEYS + 1  # + service.name
    small = qm.label_listing(store, tr, "chip.gauge", max_keys=6000)
    assert not small["truncated"] and len(small["labels"]) == len(qm.COLUMNS) + 5001 + 1


def test_a_service_s_operations_keep_the_busiest_and_say_they_were_cut(store):
    """600 one-span operations named to sort first, and ``zz-checkout`` with 3 spans: the list of 500
    keeps it and says it was cut (the answer was a bare list of 500)."""
    floods.operations(store, "shop", time.time_ns())
    tr = parse_range("15m", None)
    got = qsvc.operation_listing(store, "shop", tr)
    names = [o["operation"] for o in got["operations"]]
    assert names[0] == "zz-checkout" and len(names) == qsvc.MAX_OPERATIONS == 500
    assert got["truncated"] and got["total"] == 601
    assert got["operations"] == qsvc.operations(store, "shop", tr)
    assert names[1:] == sorted(names[1:])  # as busy as each other: by name
    assert qsvc.operation_listing(store, "shop", tr, limit=601) == {
        "operations": qsvc.operations(store, "shop", tr, limit=601), "total": 601, "truncated": False}
    # cut, but found by part of its name
    assert "aaa-op-00599" not in names
    found = qsvc.operation_listing(store, "shop", tr, match="OP-00599")
    assert [o["operation"] for o in found["operations"]] == ["aaa-op-00599"] and not found["truncated"]
    assert qsvc.operation_listing(store, "shop", tr, limit=3, match="op-0059")["total"] == 10


def _app_edges(m) -> set[str]:
    return {e["target"] for e in m["edges"] if e["source"] == "app"}


EDGE_FLOOD = qmap.MAX_EDGES + 100


def test_the_map_keeps_the_busiest_calls_past_a_flood_of_peers_and_counts_them(store):
    """One client sends 5,100 one-call spans from ``app``, each to another peer.service."""
    now = time.time_ns()
    cols = store.columns_for("spans")
    floods.app_and_its_dependencies(cols, now)
    floods.peers(cols, now, EDGE_FLOOD)
    store.insert("spans", cols)
    m = qmap.service_map(store, parse_range("15m", None))
    assert {"database:postgresql", "zz-api", "local-svc"} <= _app_edges(m)
    assert m["edges_truncated"] and m["edges_total"] == EDGE_FLOOD + 3  # + zz-db, zz-api:8080, LOCALHOST:9090
    assert len(m["edges"]) == qmap.MAX_EDGES


def test_edges_of_services_left_off_the_map_do_not_push_out_the_edges_of_those_drawn(store):
    """5,100 services of three client spans each, each calling a peer of its own three times, and
    ``zz-victim``: 20 requests and one database call. With the map cut to 10 services, the victim
    is drawn (it has the most spans), but its database call was missing: the 5,000 busiest edges
    were read before the edges of services left off were dropped, and the flood's, three calls
    each, filled them all."""
    now = time.time_ns()
    cols = store.columns_for("spans")
    for i in range(EDGE_FLOOD):
        for _ in range(3):
            span_row(cols, os.urandom(16), os.urandom(8), os.urandom(8), f"aaa-flood-{i:05d}", "call", now - 30 * NS,
                     1000, {"peer.service": f"aaa-peer-{i:05d}"}, kind=3)
    tid, root = os.urandom(16), os.urandom(8)
    for _ in range(20):
        span_row(cols, tid, os.urandom(8), b"\0" * 8, "zz-victim", "GET /", now - 20 * NS, 5_000_000, {}, kind=2)
    span_row(cols, tid, os.urandom(8), root, "zz-victim", "SELECT", now - 20 * NS, 1_000_000,
             {"db.system": "postgresql"}, kind=3)
    store.insert("spans", cols)
    m = qmap.service_map(store, parse_range("15m", None), limit=10)
    drawn = {n["id"] for n in m["nodes"] if n["kind"] == "service"}
    assert "zz-victim" in drawn and len(drawn) == 10 and m["truncated"]
    # the nine flood services drawn call peers that are not drawn: only the victim's edge is left
    assert [(e["source"], e["target"]) for e in m["edges"]] == [("zz-victim", "database:postgresql")]
    assert not m["edges_truncated"] and m["edges_total"] == 10  # the edges of the services drawn


def test_a_flood_of_server_addresses_does_not_unresolve_a_called_service(store):
    """5,100 addresses a flood service answers at, twice each, against zz-api answering once at the
    address ``app`` calls: that call stays an edge to the service zz-api (it became external
    zz-api:8080: only the 5,000 busiest addresses were read, whatever was called)."""
    now = time.time_ns()
    cols = store.columns_for("spans")
    floods.app_and_its_dependencies(cols, now)
    for i in range(EDGE_FLOOD):
        for _ in range(2):
            span_row(cols, os.urandom(16), os.urandom(8), b"\0" * 8, "flood", "x", now - 30 * NS, 1000,
                     {"server.address": f"aaa-ep-{i:05d}", "server.port": 80})
    store.insert("spans", cols)
    m = qmap.service_map(store, parse_range("15m", None))
    assert _app_edges(m) == {"database:postgresql", "zz-api", "local-svc"}
    assert not m["edges_truncated"] and m["edges_total"] == 3


def test_metric_series_grouped_keep_the_groups_with_most_points(store):
    """3,000 one-point label values sorting first, and ``zz-route`` with 5 points: the explorer kept
    the first 100 groups by name, /api/metrics the first 200."""
    now = time.time_ns()
    _points(store, now, [("flood", "http.requests", {"route": f"aaa-route-{i:05d}"}, None, 1) for i in range(3000)]
            + [("real", "http.requests", {"route": "zz-route"}, None, 5)])
    tr = parse_range("15m", None)
    got = qm.explore(store, qm.MetricQuery("http.requests", tr, group_by=("route",), agg="count"))
    routes = [s["labels"]["route"] for s in got["series"]]
    assert "zz-route" in routes and len(routes) == qm.MAX_GROUPS
    assert got["truncated"] and got["series_total"] == 3001
    assert sum(p[1] for s in got["series"] if s["labels"]["route"] == "zz-route" for p in s["points"]) == 5
    whole = qm.explore(store, qm.MetricQuery("http.requests", tr, agg="count"))
    assert len(whole["series"]) == 1 and whole["series_total"] == 1 and not whole["truncated"]
    one = qm.explore(store, qm.MetricQuery("http.requests", tr, group_by=("route", "service"),
                                           filters=tuple(attr_filters.parse_filters(["route~aaa-route-0299"]))))
    assert one["series_total"] == 10 and not one["truncated"]

    series = qtel.metric_series(store, "http.requests", tr, group_by=["route"])
    routes = [s["labels"]["route"] for s in series["series"]]
    assert "zz-route" in routes and len(routes) == qtel.MAX_SERIES and series["truncated"]
    assert routes == sorted(routes)


def test_an_address_is_normalized_alike_in_python_and_in_sql(chdb_store):
    # the map matches a client span's peer address (SQL) against the names Python gives; a port of
    # non-ASCII digits ("²".isdigit() is true) split in Python and not in SQL
    addresses = ["localhost:²", "LOCALHOST:80", "db:5432", "db:٣", "::1", "[::1]:8080", "host:", "0.0.0.0:9"]
    sql = f"SELECT {qmap._normalized('a', 'x')} FROM (SELECT {{a:String}} AS a)"
    got = [chdb_store.query(sql, {"a": a}).scalar() for a in addresses]
    assert got == [qmap.normalize_address(a) for a in addresses]
