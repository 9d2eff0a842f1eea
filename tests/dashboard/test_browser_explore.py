"""The Logs, Explore, flame graph and compare pages, exemplars and the virtualized waterfall in
headless Chromium against a real uvicorn server over seeded chDB data."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, urlparse

import pytest
from playwright.sync_api import expect

from testkit.seed import XSS_METRIC, XSS_SERVICE, big_trace
from tests.dashboard.browsing import open_page

pytestmark = pytest.mark.browser


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlparse(url).query)


def _figures_drawn(page) -> None:
    # locator waits, not wait_for_function: its polling evaluates a string, which the page's CSP forbids
    expect(page.locator("[data-fig]:not([data-rendered])")).to_have_count(0, timeout=20_000)


def test_new_pages_load_cleanly_and_draw(page, live_server, info):
    pages = {"logs": "/logs", "explore-list": "/explore",
             "explore": "/explore?metric=http.server.request.duration&group_by=http.route&agg=p95",
             "explore-memory": "/explore?metric=system.memory.usage", "flamegraph": "/flamegraph?service=orders",
             "compare": f"/compare?a={info['trace_id']}&b={info['trace_ids'][3]}",
             "snapshot-flame": "/snapshots/" + quote(info["snapshot_ids"][0], safe=""),
             "service-exemplars": "/services/orders"}
    for name, path in pages.items():
        open_page(page, live_server + path, name)
        _figures_drawn(page)
        assert page.title().endswith("tracehouse"), name
        for a in page.locator("main a[href^='/']").all()[:40]:  # every internal link resolves
            href = a.get_attribute("href")
            assert page.request.get(live_server + href).status == 200, (name, href)
        assert page.problems == [], (name, page.problems)
    assert page.locator("nav a", has_text="Logs").count() == 1 and page.locator("nav a", has_text="Explore").count() == 1


def test_logs_form_round_trips_through_the_url_and_links_to_the_span(page, live_server, info):
    open_page(page, f"{live_server}/logs?since=1h")
    page.fill("#l-service", "payments")
    page.select_option("#l-severity", "error")
    page.fill("#l-q", "declined")
    page.locator("#add-log-attr").click()
    page.locator("#log-attr-list input[name=attr]").last.fill("logger=app")
    page.locator("#l-submit").click()
    page.wait_for_load_state("networkidle")
    q = _query(page.url)
    assert q["service"] == ["payments"] and q["severity"] == ["error"] and q["q"] == ["declined"]
    assert q["attr"] == ["logger=app"] and "trace_id" not in q  # empty fields stay out of the URL
    rows = page.locator("#log-results > tbody > tr")
    assert rows.count() == 1 and "card declined" in rows.inner_text()
    page.reload()
    assert page.input_value("#l-service") == "payments" and page.input_value("#l-severity") == "error"
    assert page.input_value("#l-q") == "declined"
    page.locator("#log-results a.trace-link").click()
    page.wait_for_url(f"**/traces/{info['trace_id']}?*span={info['span_ids']['paysrv']}*")
    expect(page.locator("#d-title")).to_contain_text("POST /charge")
    expect(page.locator(f".wf-row.selected[data-span='{info['span_ids']['paysrv']}']")).to_have_count(1)
    # and back: the span's details link to the span's logs
    page.locator("#d-logs").click()
    page.wait_for_url("**/logs?**")
    q = _query(page.url)
    assert q["trace_id"] == [info["trace_id"]] and q["span_id"] == [info["span_ids"]["paysrv"]]
    expect(page.locator("#log-results > tbody > tr")).to_have_count(3)  # seeded on that span: 2 lines, 1 snapshot
    assert "card declined" in page.locator("#log-results").inner_text()
    assert page.problems == []


def test_logs_pages_older_and_back(page, live_server):
    open_page(page, f"{live_server}/logs?since=1h&limit=2")
    first = page.locator("#log-results > tbody > tr > td:first-child").all_inner_texts()
    page.locator("#older").click()
    page.wait_for_load_state("networkidle")
    second = page.locator("#log-results > tbody > tr > td:first-child").all_inner_texts()
    assert "cursor" in _query(page.url) and second and second[0] <= first[-1] and second != first
    page.locator("#newest").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#log-results > tbody > tr > td:first-child").all_inner_texts() == first


def test_explore_builds_the_query_in_the_url(page, live_server):
    open_page(page, f"{live_server}/explore?since=1h")
    page.locator("#metric-names a", has_text="http.server.request.duration").click()
    page.wait_for_load_state("networkidle")
    _figures_drawn(page)
    assert page.locator("#fig-explore .scatterlayer .trace").count() == 1  # all series in one
    page.locator("#e-group-by input[value='http.route']").check()
    page.select_option("#e-agg", "p99")
    page.select_option("#e-step", "30s")
    page.locator("#e-submit").click()
    page.wait_for_load_state("networkidle")
    _figures_drawn(page)
    q = _query(page.url)
    assert q["metric"] == ["http.server.request.duration"] and q["group_by"] == ["http.route"]
    assert q["agg"] == ["p99"] and q["step"] == ["30s"]
    assert page.locator("#fig-explore .scatterlayer .trace").count() == 3
    assert page.locator("#explore-series tbody tr").count() == 3
    # the y axis speaks seconds with SI prefixes ("50ms"), not bare numbers
    ticks = page.locator("#fig-explore .ytick text").all_text_contents()
    assert any(re.fullmatch(r"[\d.]+[mµ]?s", t) for t in ticks), ticks
    page.locator("#label-keys a", has_text="/orders").first.click()
    page.wait_for_load_state("networkidle")
    assert _query(page.url)["attr"] == ["http.route=/orders"] and _query(page.url)["agg"] == ["p99"]
    _figures_drawn(page)
    assert page.locator("#fig-explore .scatterlayer .trace").count() == 1
    assert page.problems == []


def test_memory_axis_reads_gigabytes(page, live_server):
    open_page(page, f"{live_server}/explore?since=1h&metric=system.memory.usage")
    _figures_drawn(page)
    ticks = page.locator("#fig-explore .ytick text").all_text_contents()
    assert any(t.endswith("GB") for t in ticks), ticks
    assert not any(re.fullmatch(r"[1-9][\d.]*B", t) for t in ticks), ticks  # no "2B" for two gigabytes


def test_exemplar_point_opens_its_trace(page, live_server, info):
    open_page(page, f"{live_server}/services/orders?since=1h")
    _figures_drawn(page)
    points = page.locator("#fig-latency .scatterlayer .trace:last-child .point")
    assert points.count() > 0
    # the highest exemplar: clear of the quantile lines' markers, which carry no trace
    top = min(points.all(), key=lambda p: p.bounding_box()["y"])
    top.click(force=True)
    page.wait_for_url(re.compile(r".*/traces/[0-9a-f]{32}.*"))
    tid = urlparse(page.url).path.rsplit("/", 1)[1]
    assert tid in info["trace_ids"] and page.locator(".wf-row").count() > 0
    assert page.problems == []


def test_flame_graph_zooms_into_a_frame(page, live_server):
    open_page(page, f"{live_server}/flamegraph?since=1h&service=orders")
    _figures_drawn(page)
    labels = page.locator("#fig-flame .slice text").all_text_contents()
    assert any("fetch_rows" in t for t in labels) and any("<module>" in t for t in labels)
    page.locator("#fig-flame .slice", has_text="checkout").first.click()
    page.wait_for_timeout(800)  # plotly animates the zoom
    assert page.locator("#fig-flame .slice", has_text="serve_forever").count() == 0  # outside the zoomed frame
    assert page.problems == []


def test_compare_two_traces_picked_in_the_search(page, live_server):
    open_page(page, f"{live_server}/traces?since=1h&service=orders")
    boxes = page.locator("#trace-results input[name=t]")
    boxes.nth(0).check()
    boxes.nth(1).check()
    picked = [boxes.nth(i).get_attribute("value") for i in (0, 1)]
    page.locator("#compare-selected").click()
    page.wait_for_load_state("networkidle")
    assert urlparse(page.url).path == "/compare" and _query(page.url)["t"] == picked
    _figures_drawn(page)
    assert page.locator("#compare-rows tbody tr").count() > 0
    page.locator("a", has_text=picked[0][:12]).first.click()
    page.wait_for_url(f"**/traces/{picked[0]}*")
    page.locator("#compare-link").click()
    page.wait_for_url("**/compare?**")
    assert page.locator("h2", has_text="Pick a trace").count() == 1
    assert page.problems == []


def test_fifty_thousand_span_trace_draws_only_rows_in_view(page, live_server, seeded_store, info):
    store = seeded_store[0]
    tid = big_trace(store, info["now"] - 300 * 1_000_000_000, 50_000)
    open_page(page, f"{live_server}/traces/{tid}")
    assert page.locator("#span-count").inner_text() == "50000"
    drawn = page.locator(".wf-row").count()
    assert 0 < drawn < 200
    height = page.locator("#wf-body").evaluate("e => e.getBoundingClientRect().height")
    assert height == 50_000 * 22
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    expect(page.locator(".wf-row[data-row='49999']")).to_have_count(1)
    assert page.locator(".wf-row").count() < 200
    last = page.locator(".wf-row[data-row='49999']")
    last.click()
    expect(page.locator("#d-body")).to_contain_text("db.statement")
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#collapse-all").click()
    expect(page.locator(".wf-row")).to_have_count(1)
    page.locator("#expand-all").click()
    assert page.locator(".wf-row").count() > 1
    assert page.problems == []


def test_hostile_payloads_on_new_pages_do_not_execute(page, live_server, info):
    for path in ("/logs?since=1h", "/logs?service=" + quote(XSS_SERVICE), "/explore?metric=" + quote(XSS_METRIC),
                 "/flamegraph?service=" + quote(XSS_SERVICE), f"/compare?a={info['xss_trace_id']}&b={info['trace_id']}",
                 "/explore"):
        open_page(page, live_server + path)
        _figures_drawn(page)
        for d in page.locator("details.log-attrs").all():
            d.locator("summary").click()  # the hostile attributes, shown
        assert page.locator("img").count() == 0
        assert page.evaluate("window.__xss === undefined")
        assert page.problems == [], (path, page.problems)
    open_page(page, f"{live_server}/logs?service=" + quote(XSS_SERVICE))
    assert "<script>alert(1)</script>" in page.locator("#log-results").inner_text()
