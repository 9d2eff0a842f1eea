"""Many names from one ingest client: lists keep the busiest entries, say they were cut, and pages
stay bounded. Found by a prober: 4,000 one-span services ``aaa-flood-NNNN`` hid a real service
``zz-victim`` from /api/services, /api/service-map and /services, without a word; 20,000 made
/services 2.4 MB. Metric names, hosts and label keys were listed the same way (by name, then cut)."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from testkit.metricgen import point
from testkit.seed import span_row
from tracehouse.dashboard import create_app

NS = 1_000_000_000
FLOOD = 5000


@pytest.fixture
def flooded(chdb_store):
    now = time.time_ns()
    cols = chdb_store.columns_for("spans")
    for i in range(FLOOD):
        span_row(cols, os.urandom(16), os.urandom(8), b"\0" * 8, f"aaa-flood-{i:05d}", "x", now - 30 * NS, 1000, {})
    for _ in range(3):
        span_row(cols, os.urandom(16), os.urandom(8), b"\0" * 8, "zz-victim", "GET /", now - 20 * NS, 5_000_000, {})
    chdb_store.insert("spans", cols)
    with TestClient(create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)) as c:
        yield c


def test_a_service_flood_hides_no_busier_service_and_says_the_list_was_cut(flooded):
    api = flooded.get("/api/services?since=15m").json()
    assert "zz-victim" in [s["service"] for s in api["services"]]
    assert api["truncated"] is True and api["total"] == FLOOD + 1 and len(api["services"]) == 2000
    graph = flooded.get("/api/service-map?since=15m").json()
    assert "zz-victim" in [n["id"] for n in graph["nodes"]]
    assert graph["truncated"] is True and graph["services_total"] == FLOOD + 1

    page = flooded.get("/services?since=15m")
    assert page.status_code == 200 and 'data-service="zz-victim"' in page.text
    assert 'id="services-truncated"' in page.text and f"of {FLOOD + 1} services" in page.text
    assert len(page.content) < 500_000  # was 2.4 MB: the page lists the 500 busiest
    smap = flooded.get("/service-map?since=15m")
    assert smap.status_code == 200 and 'data-node="zz-victim"' in smap.text and 'id="map-truncated"' in smap.text
    assert len(smap.content) < 200_000
    # a service as busy as the flood is cut, but found by part of its name
    assert "aaa-flood-04999" not in page.text and 'id="services-filter"' in page.text
    found = flooded.get("/services?since=15m&q=flood-04999")
    assert 'data-service="aaa-flood-04999"' in found.text and 'id="services-truncated"' not in found.text
    assert [s["service"] for s in flooded.get("/api/services?since=15m&q=FLOOD-04999").json()["services"]] == [
        "aaa-flood-04999"]


def test_an_uncut_list_says_so(chdb_store):
    cols = chdb_store.columns_for("spans")
    span_row(cols, os.urandom(16), os.urandom(8), b"\0" * 8, "only", "GET /", time.time_ns() - 20 * NS, 1000, {})
    chdb_store.insert("spans", cols)
    with TestClient(create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)) as c:
        api = c.get("/api/services?since=15m").json()
        assert api["truncated"] is False and api["total"] == 1
        assert c.get("/api/service-map?since=15m").json()["truncated"] is False
        assert 'id="services-truncated"' not in c.get("/services?since=15m").text


def test_metric_names_hosts_and_label_keys_flooded(chdb_store):
    """5,000 one-point metric names, hosts and label keys sorting first; the real ones have 3 points."""
    now = time.time_ns()
    cols = chdb_store.columns_for("metric_points")
    for i in range(FLOOD):
        point(cols, now - 30 * NS, "flood", f"aaa.flood.{i:05d}", {}, None, value=1.0)
        point(cols, now - 30 * NS, "flood", "system.cpu.utilization", {}, {"host.name": f"aaa-host-{i:05d}"},
              value=1.0)
    point(cols, now - 30 * NS, "flood", "chip.gauge", {f"aaa.k.{i:05d}": "x" for i in range(FLOOD)}, None, value=1.0)
    for j in range(3):
        point(cols, now - (10 + j) * NS, "real", "zz.real", {}, None, value=1.0)
        point(cols, now - (10 + j) * NS, "real", "system.cpu.utilization", {}, {"host.name": "zz-host"}, value=1.0)
        point(cols, now - (10 + j) * NS, "real", "chip.gauge", {"zz.key": "v"}, None, value=1.0)
    chdb_store.insert("metric_points", cols)
    with TestClient(create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)) as c:
        names = c.get("/api/metrics/names?since=15m").json()
        assert "zz.real" in [m["name"] for m in names["metrics"]]
        assert names["truncated"] is True and names["total"] == FLOOD + 3  # + the host metric and chip.gauge
        page = c.get("/explore?since=15m")
        assert 'value="zz.real"' in page.text and 'id="names-truncated"' in page.text
        assert len(page.content) < 300_000  # was 1.5 MB with 20,000 names

        infra = c.get("/infrastructure?since=15m")
        assert '<td data-v="zz-host">' in infra.text and 'id="infra-truncated"' in infra.text
        assert len(infra.content) < 200_000  # was 1.0 MB with 20,000 hosts

        labels = c.get("/api/metrics/labels?metric=chip.gauge&since=15m").json()
        assert "zz.key" in [x["key"] for x in labels["labels"]] and labels["truncated"] is True
        page = c.get("/explore?metric=chip.gauge&since=15m")
        assert 'value="zz.key"' in page.text and 'id="labels-truncated"' in page.text
        assert len(page.content) < 300_000  # was 1.4 MB with 20,000 keys
