"""Many names from one ingest client: lists keep the busiest entries, say they were cut, and pages
stay bounded. Found by a prober: 4,000 one-span services ``aaa-flood-NNNN`` hid a real service
``zz-victim`` from /api/services, /api/service-map and /services, without a word; 20,000 made
/services 2.4 MB."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

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


def test_an_uncut_list_says_so(chdb_store):
    cols = chdb_store.columns_for("spans")
    span_row(cols, os.urandom(16), os.urandom(8), b"\0" * 8, "only", "GET /", time.time_ns() - 20 * NS, 1000, {})
    chdb_store.insert("spans", cols)
    with TestClient(create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)) as c:
        api = c.get("/api/services?since=15m").json()
        assert api["truncated"] is False and api["total"] == 1
        assert c.get("/api/service-map?since=15m").json()["truncated"] is False
        assert 'id="services-truncated"' not in c.get("/services?since=15m").text
