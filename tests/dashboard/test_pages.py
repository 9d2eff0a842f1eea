"""Pages over seeded chDB data through the ASGI app: content, errors, escaping, headers."""

from __future__ import annotations

import html
import json
import re
from urllib.parse import quote

import pytest

from testkit.seed import CRITICAL, TREE, XSS_IMG, XSS_SCRIPT, XSS_SERVICE

PAGES = ["/services", "/service-map", "/traces", "/snapshots", "/infrastructure", "/alerts"]


def _main(body: str) -> str:
    return body.split("<main>", 1)[1].split("</main>", 1)[0]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_with_security_headers(client, path):
    r = client.get(path)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    # no inline executable script anywhere: only src= scripts and JSON data blocks
    for tag in re.findall(r"<script[^>]*>", r.text):
        assert "src=" in tag or 'type="application/json"' in tag, tag


def test_static_files_are_cacheable_but_a_missing_one_is_not(client):
    # browsers may keep a 404 heuristically: one kept from before an upgrade would hide the file the
    # new version ships
    found = client.get("/static/app.js")
    assert found.status_code == 200 and "no-store" not in found.headers.get("cache-control", "")
    for path in ("/static/no-such-file.js", "/static/../app.py", "/favicon.ico"):
        r = client.get(path)
        if r.status_code != 200:
            assert r.headers.get("cache-control") == "no-store", (path, r.status_code)
    missing = client.get("/static/no-such-file.js")
    assert missing.status_code == 404 and missing.headers["x-content-type-options"] == "nosniff"


def test_root_redirects_to_services_keeping_the_range(client):
    r = client.get("/?since=6h", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/services?since=6h"


def test_services_lists_every_seeded_service_with_red_and_sparkline(client):
    body = _main(client.get("/services?since=1h&refresh=30s").text)
    for name in ("gateway", "orders", "payments", "inventory", "users", "shop", "auth"):
        assert f'data-service="{name}"' in body
    assert re.search(r'<polyline points="[\d., ]{20,}"', body)
    assert 'class="badge critical"' in body  # spangen errors in payments/inventory at 10% of traces
    # the range and refresh travel in links
    assert "/services/orders?since=1h&amp;refresh=30s" in body


def test_service_page_shows_red_operations_resources_probes_and_traces(client):
    body = _main(client.get("/services/orders").text)
    for fig in ("rate", "errors", "latency", "ops", "res-0"):
        assert f'data-fig="{fig}"' in body
    data = json.loads(re.search(r'<script type="application/json" id="data-latency">(.*?)</script>', body, re.S)[1])
    assert [t["name"] for t in data["data"]][:3] == ["p50", "p95", "p99"] and data["data"][0]["y"]
    assert "GET /orders" in body and "SELECT orders" in body
    assert "container.cpu.utilization" in body and "process.cpu.utilization" in body
    assert "postgresql://db:5432" in body and ">down<" in body  # redis probe was down at the last point
    assert "Slowest requests" in body and "/traces/" in body


def test_service_page_lists_slowest_and_failing_requests(client, info):
    body = _main(client.get("/services/shop").text)
    slow, failing = body.split("Slowest requests", 1)[1].split("Failing requests", 1)
    assert f"/traces/{info['trace_id']}" in slow and "GET /checkout" in slow
    failing = failing.split("<h2>Snapshots", 1)[0]
    assert f"/traces/{info['trace_id']}" in failing and "payments call" in failing  # shop's own error span
    assert failing.count(f"/traces/{info['trace_id']}") == 1  # one row per trace


@pytest.mark.parametrize("since", ["60d", "400d"])
def test_service_page_over_more_days_than_raw_rows_allow_shows_what_it_can(client, info, since):
    # the rate, error and latency charts read rollups (400 days); resources, requests and snapshots
    # read raw rows, limited to 31 days: the whole page answered 400 past that
    r = client.get(f"/services/shop?since={since}")
    assert r.status_code == 200, r.text[:300]
    body = _main(r.text)
    for fig in ("rate", "errors", "latency"):
        assert f'data-fig="{fig}"' in body
    assert 'id="raw-days"' in body and "last 31 days" in body
    assert f"/traces/{info['trace_id']}" in body.split("Slowest requests", 1)[1]
    assert 'id="raw-days"' not in _main(client.get("/services/shop?since=7d").text)


def test_service_page_for_a_quiet_service_has_empty_states(client):
    body = _main(client.get("/services/no-such-service").text)
    assert "No spans from no-such-service" in body and "No probes reported" in body


def _waterfall(body: str) -> dict:
    return json.loads(html.unescape(re.search(r'<script type="application/json" id="wf-data">(.*?)</script>',
                                              body, re.S)[1]))


def test_trace_page_nests_every_span_and_marks_the_critical_path(client, info):
    body = _main(client.get(f"/traces/{info['trace_id']}").text)
    wf = _waterfall(body)
    ids = info["span_ids"]
    assert len(wf["depth"]) == len(TREE)
    row_ids = [wf["ids"][i * 16:(i + 1) * 16] for i in range(len(TREE))]
    row = {sid: i for i, sid in enumerate(row_ids)}
    depth = {}
    for key, parent, *_ in TREE:
        depth[key] = 0 if parent is None else depth[parent] + 1
        i = row[ids[key]]
        assert wf["depth"][i] == depth[key]
        assert wf["parent"][i] == (row[ids[parent]] if parent else -1)
        assert bool(wf["flags"][i] & 2) == (key in CRITICAL)
        assert bool(wf["flags"][i] & 4) == any(p == key for _, p, *_ in TREE)
        assert wf["names"][wf["op"][i]] == next(t[3] for t in TREE if t[0] == key)
    assert row_ids[:3] == [ids["root"], ids["auth"], ids["authsrv"]]  # pre-order
    assert wf["flags"][row[ids["bank"]]] & 1
    assert wf["critical"] == [ids[k] for k in CRITICAL]
    assert wf["start"][row[ids["root"]]] == 0 and wf["dur"][row[ids["paydb"]]] == 10_000_000
    assert "checkout started" in body  # linked logs
    assert f'href="/api/traces/{info["trace_id"]}"' in body
    assert "/snapshots/" in body  # the thread snapshot taken during the trace


def test_span_details_come_from_the_api(client, info):
    ids = info["span_ids"]
    s = client.get(f"/api/traces/{info['trace_id']}/spans/{ids['bank']}").json()
    assert s["status"]["code"] == "error" and s["name"] == "bank call" and s["events"][0]["name"] == "exception"
    assert client.get(f"/api/traces/{info['trace_id']}/spans/{ids['db']}").json()["attributes"]["db.system"]
    assert client.get(f"/api/traces/{info['trace_id']}/spans/{'ab' * 8}").status_code == 404
    assert client.get(f"/api/traces/{info['trace_id']}/spans/xyz").status_code == 400
    out = client.get(f"/api/traces/{info['trace_id']}/outline").json()
    assert out["span_count"] == len(TREE) and not out["truncated"]
    assert {s["span_id"] for s in out["spans"]} == set(ids.values())


def test_unknown_trace_is_404_and_bad_params_are_400(client):
    r = client.get("/traces/" + "ab" * 16)
    assert r.status_code == 404 and "not found" in r.text and r.headers["content-type"].startswith("text/html")
    for path in ("/traces/not-a-trace-id", "/traces?min_ms=abc", "/traces?status=maybe", "/traces?attr=novalue",
                 "/services?since=yesterday", "/services?refresh=5s", "/services?since=1h&until=2h",
                 "/snapshots/garbage"):
        assert client.get(path).status_code == 400, path
    assert client.get("/snapshots/1-nobody").status_code == 404


def test_trace_search_filters_change_results(client, info):
    def ids(qs):
        return re.findall(r'data-trace="(\w+)"', client.get("/traces?" + qs).text)

    everything = ids("since=1h")
    errors = ids("since=1h&status=error")
    assert errors and set(errors) != set(everything)
    rows = re.findall(r'<tr class="(\w*)" data-trace="(\w+)"', client.get("/traces?since=1h&status=error").text)
    assert rows and all(cls == "err" for cls, _ in rows)
    assert not any(cls == "err" for cls, _ in re.findall(r'<tr class="(\w*)" data-trace="(\w+)"',
                                                        client.get("/traces?since=1h&status=ok").text))
    assert info["trace_id"] in ids("since=1h&service=auth")
    assert ids("since=1h&attr=order.id%3Do-42") == [info["trace_id"]]
    assert ids("since=1h&min_ms=99&max_ms=101&service=shop") == [info["trace_id"]]
    assert ids("since=1h&service=shop&status=ok") == []
    via_edge = ids("since=1h&service=gateway&calls=payments")
    assert via_edge and info["trace_id"] not in via_edge
    body = client.get("/traces?since=1h&status=error").text
    fig = json.loads(re.search(r'id="data-scatter">(.*?)</script>', body, re.S)[1])
    assert sorted(fig["data"][1]["customdata"]) == sorted(errors)  # the error series is clickable by trace id


def test_service_map_shows_dependencies_and_lone_services(client):
    body = _main(client.get("/service-map").text)
    nodes = dict(re.findall(r'data-node="([^"]+)" data-kind="(\w+)"', body))
    assert nodes["gateway"] == "service" and nodes["shop"] == "service" and nodes["auth"] == "service"
    assert nodes["cache:redis"] == "cache" and nodes["database:postgresql/orders"] == "database"
    edges = set(re.findall(r'data-source="([^"]+)" data-target="([^"]+)"', body))
    assert {("gateway", "orders"), ("orders", "payments"), ("inventory", "cache:redis")} <= edges
    assert "/traces?since=1h&amp;service=gateway&amp;calls=orders" in body


def test_snapshots_list_and_detail(client, info):
    body = _main(client.get("/snapshots").text)
    for sid in info["snapshot_ids"]:
        assert quote(sid, safe="") in body
    threads = _main(client.get("/snapshots/" + quote(info["snapshot_ids"][0], safe="")).text)
    assert "3 threads" in threads and "fetch_rows" in threads and "worker-0" in threads
    assert threads.index("fetch_rows") < threads.index("serve_forever")  # biggest group first
    mem = _main(client.get("/snapshots/" + quote(info["snapshot_ids"][1], safe="")).text)
    assert "256.0 MiB" in mem and "app/cache.py:40" in mem


def test_infrastructure_shows_hosts_and_containers(client):
    body = _main(client.get("/infrastructure").text)
    assert "node-1" in body and "orders-1" in body and 'data-fig="infra-0"' in body


def test_alerts_empty_state_without_engine(client):
    assert "alert engine is not running" in client.get("/alerts").text


def test_plotly_is_served_locally(client):
    r = client.get("/static/plotly.min.js")
    assert r.status_code == 200 and "plotly.js" in r.text[:200]
    assert "cdn" not in client.get("/services").text.lower()


@pytest.mark.parametrize("path_key", ["services", "service", "trace", "traces", "snapshots", "snapshot", "map"])
def test_hostile_strings_are_escaped(client, info, path_key):
    path = {"services": "/services", "service": "/services/" + quote(XSS_SERVICE, safe=""),
            "trace": f"/traces/{info['xss_trace_id']}", "traces": "/traces?service=" + quote(XSS_SERVICE),
            "snapshots": "/snapshots", "snapshot": "/snapshots/" + quote(info["snapshot_ids"][2], safe=""),
            "map": "/service-map"}[path_key]
    r = client.get(path)
    assert r.status_code == 200
    assert XSS_SCRIPT not in r.text and XSS_IMG not in r.text and "<img" not in r.text
    assert html.escape(XSS_SCRIPT, quote=False) in r.text or "\\u003cscript\\u003e" in r.text
