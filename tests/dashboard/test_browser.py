"""The dashboard in headless Chromium against a real uvicorn server over seeded chDB data
(the ``browser`` and ``page`` fixtures are in conftest.py)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from testkit.seed import CRITICAL, TREE
from tests.dashboard.browsing import open_page

pytestmark = pytest.mark.browser


def _open(page, url: str, shot: str | None = None):
    open_page(page, url, shot)


def test_every_page_loads_cleanly_and_draws_its_figures(page, live_server, info):
    pages = {"services": "/services", "service": "/services/orders", "service-map": "/service-map",
             "traces": "/traces", "trace": f"/traces/{info['trace_id']}", "snapshots": "/snapshots",
             "snapshot": "/snapshots/" + quote(info["snapshot_ids"][0], safe=""), "infrastructure": "/infrastructure",
             "alerts": "/alerts", "storage": "/storage"}
    for name, path in pages.items():
        _open(page, live_server + path, name)
        assert page.title().endswith("tracehouse"), name
        figs = page.locator("[data-fig]")
        n = figs.count()
        if n:
            # a locator wait: wait_for_function's polling evaluates a string, which the CSP forbids
            expect(page.locator("[data-fig]:not([data-rendered])")).to_have_count(0, timeout=20_000)
            assert page.locator("[data-fig] .main-svg").count() >= n, name
            assert page.evaluate("typeof Plotly") == "object"
        else:  # plotly.js (4.8 MB) is only fetched by pages that draw figures
            assert page.evaluate("typeof Plotly") == "undefined"
        assert page.problems == [], (name, page.problems)


def test_the_api_reference_is_a_page_of_its_own_with_every_operation(page, live_server):
    """It was FastAPI's Swagger page, whose script and styles come from a CDN: the CSP refused
    them, so it stayed blank (and an offline deployment cannot reach a CDN anyway)."""
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    _open(page, live_server + "/api/docs")
    assert page.title().endswith("tracehouse") and page.problems == []
    spec = page.request.get(live_server + "/api/openapi.json").json()
    n = sum(1 for item in spec["paths"].values() for m in item if m in ("get", "post", "put", "patch", "delete"))
    rows = page.locator("#api-operations tbody tr")
    assert n >= 20 and rows.count() == n
    services = page.locator("#api-operations tr", has_text="/api/services").first
    assert "GET" in services.inner_text()
    assert all(u.startswith(live_server) for u in requests), [u for u in requests if not u.startswith(live_server)]
    assert page.request.get(live_server + "/redoc").status in (401, 404)


def test_waterfall_nests_every_span_collapses_and_shows_details(page, live_server, info):
    _open(page, f"{live_server}/traces/{info['trace_id']}")
    ids = info["span_ids"]
    rows = page.locator(".wf-row")
    assert rows.count() == len(TREE)
    depth = {}
    for key, parent, *_ in TREE:
        depth[key] = 0 if parent is None else depth[parent] + 1
        row = page.locator(f".wf-row[data-span='{ids[key]}']")
        assert row.get_attribute("data-depth") == str(depth[key])
        pad = row.locator(".wf-name").evaluate("e => parseInt(getComputedStyle(e).paddingLeft)")
        assert pad == depth[key] * 14 + 4
        assert ("crit" in row.get_attribute("class")) == (key in CRITICAL)
    # collapse "payments call": its 3 descendants hide, the rest stay
    page.locator(f".wf-row[data-span='{ids['pay']}'] .tog").click()
    assert page.locator(".wf-row:visible").count() == len(TREE) - 3
    page.locator(f".wf-row[data-span='{ids['pay']}'] .tog").click()
    assert page.locator(".wf-row:visible").count() == len(TREE)
    page.locator("#collapse-all").click()
    assert page.locator(".wf-row:visible").count() == 1
    page.locator("#expand-all").click()
    page.locator(f".wf-row[data-span='{ids['db']}']").click()
    details = page.locator("#details")
    expect(details).to_be_visible()
    expect(page.locator("#d-title")).to_contain_text("SELECT cart")
    expect(details).to_contain_text("postgresql")
    assert "order.id" in details.inner_text()
    assert page.problems == []


def test_trace_filters_change_results_and_scatter_click_opens_a_trace(page, live_server, info):
    _open(page, f"{live_server}/traces?since=1h")
    all_rows = page.locator("#trace-results tbody tr").count()
    page.select_option("#f-status", "error")
    page.locator("#f-submit").click()
    page.wait_for_load_state("networkidle")
    assert "status=error" in page.url and "min_ms" not in page.url  # empty fields are not submitted
    err_rows = page.locator("#trace-results tbody tr")
    assert 0 < err_rows.count() and err_rows.count() == page.locator("#trace-results tbody tr.err").count()
    assert all_rows > 0
    page.fill("#f-service", "auth")
    page.locator("#add-attr").click()
    page.locator("#attr-list input[name=attr]").last.fill("order.id=o-42")
    page.locator("#f-submit").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#trace-results tbody tr").count() == 1
    assert page.locator("#trace-results tbody tr").get_attribute("data-trace") == info["trace_id"]
    # the scatter point of that trace opens it
    page.wait_for_selector("[data-fig=scatter][data-rendered] .point")
    page.locator("[data-fig=scatter] .point").first.click(force=True)
    page.wait_for_url(f"**/traces/{info['trace_id']}*")
    assert page.locator(".wf-row").count() == len(TREE)
    assert page.problems == []


def test_range_picker_and_refresh_stay_in_the_url(page, live_server):
    _open(page, f"{live_server}/traces?since=1h&service=orders")
    page.select_option("#range-since", "6h")
    page.wait_for_url("**since=6h**")
    assert "service=orders" in page.url
    page.select_option("#refresh", "10s")
    page.wait_for_url("**refresh=10s**")
    assert "since=6h" in page.url and page.locator("body").get_attribute("data-refresh") == "10"
    assert "refresh=10s" in page.locator("nav a[href^='/services']").first.get_attribute("href")


def test_services_table_sorts(page, live_server):
    _open(page, f"{live_server}/services")
    page.locator("#services-table th", has_text="Spans").click()
    values = [int(v) for v in page.locator("#services-table tbody td:last-child").all_inner_texts()]
    assert values == sorted(values)
    page.locator("#services-table th", has_text="Spans").click()
    values = [int(v) for v in page.locator("#services-table tbody td:last-child").all_inner_texts()]
    assert values == sorted(values, reverse=True)


def test_service_map_shows_seeded_dependencies_and_links(page, live_server):
    _open(page, f"{live_server}/service-map")
    for node in ("gateway", "orders", "payments", "inventory", "users", "cache:redis"):
        assert page.locator(f"svg#service-map [data-node='{node}']").count() == 1
    assert page.locator("svg#service-map a.edge[data-source='gateway'][data-target='orders']").count() == 1
    page.locator("svg#service-map [data-node='orders'] rect").click()
    page.wait_for_url("**/services/orders**")
    assert page.problems == []


def test_hostile_payloads_do_not_execute(page, live_server, info):
    from testkit.seed import XSS_SERVICE

    for path in ("/services", f"/traces/{info['xss_trace_id']}", "/traces", "/service-map",
                 "/services/" + quote(XSS_SERVICE, safe=""), "/snapshots",
                 "/snapshots/" + quote(info["snapshot_ids"][2], safe="")):
        _open(page, live_server + path, "xss" if path.startswith("/traces/") else None)
        if path.startswith("/traces/"):
            for row in page.locator(".wf-row").all():
                row.click()  # renders hostile attribute keys/values into the details panel
                expect(page.locator("#d-body table").first).to_be_visible()
            expect(page.locator("#details")).to_contain_text("<script>alert(1)</script>")
        assert page.locator("img").count() == 0
        assert page.evaluate("window.__xss === undefined")
        assert page.problems == [], (path, page.problems)
