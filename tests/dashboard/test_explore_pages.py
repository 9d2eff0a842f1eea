"""The Logs, Explore, flame graph and compare pages, exemplars and the new JSON API, over seeded
data on embedded chDB and on a ClickHouse 18.16 server."""

from __future__ import annotations

import html
import json
import re
import uuid
from urllib.parse import quote, urlencode

import pytest
from fastapi.testclient import TestClient

from testkit.seed import XSS_IMG, XSS_METRIC, XSS_SCRIPT, XSS_SERVICE, seed_all
from tracehouse.dashboard.app import create_app
from tracehouse.storage import Store


@pytest.fixture(scope="module", params=["chdb", "clickhouse"])
def env(request, chdb_dir):
    db = "e_" + uuid.uuid4().hex[:12]
    if request.param == "chdb":
        store = Store.open(f"chdb://{chdb_dir}?database={db}")
    else:
        base = request.getfixturevalue("clickhouse_url").rsplit("/", 1)[0]
        store = Store.open(f"{base}/{db}")
    store.migrate()
    info = seed_all(store, n_spans=1500)
    with TestClient(create_app(None, store)) as client:
        yield client, info
    try:
        store.query(f"DROP DATABASE IF EXISTS {db}")
    finally:
        store.close()


def _main(body: str) -> str:
    return body.split("<main>", 1)[1].split("</main>", 1)[0]


def _fig(body: str, fid: str) -> dict:
    return json.loads(html.unescape(re.search(rf'<script type="application/json" id="data-{fid}">(.*?)</script>',
                                              body, re.S)[1]))


def _get(client, path: str) -> str:
    r = client.get(path)
    assert r.status_code == 200, (path, r.status_code, r.text[:800])
    return r.text


def test_logs_page_filters_links_and_volume(env):
    client, info = env
    body = _main(_get(client, "/logs?since=1h"))
    assert "checkout started" in body and "card declined" in body
    vol = _fig(body, "volume")
    assert {t["name"] for t in vol["data"]} >= {"info", "warn", "error"}
    total = int(re.search(r'id="log-count">(\d+) record', body)[1])
    assert total == sum(sum(t["y"]) for t in vol["data"])
    # the record on the known trace links to the trace with its span selected
    assert f'href="/traces/{info["trace_id"]}?since=1h&amp;span={info["span_ids"]["paysrv"]}"' in body

    errors = _main(_get(client, "/logs?since=1h&severity=error"))
    assert "card declined" in errors and "checkout started" not in errors
    assert 'class="lvl lvl-error"' in errors and 'class="lvl lvl-info"' not in errors
    shop = _main(_get(client, "/logs?since=1h&service=shop&q=CHECKOUT"))
    assert "checkout started" in shop and "card declined" not in shop
    by_attr = _main(_get(client, "/logs?since=1h&" + urlencode({"attr": "logger=app"})))
    assert "checkout started" in by_attr and "snapshot" not in by_attr.split("<tbody>", 1)[1]
    span = _main(_get(client, f"/logs?since=1h&trace_id={info['trace_id']}&span_id={info['span_ids']['paysrv']}"))
    assert "card declined" in span and 'value="' + info["span_ids"]["paysrv"] + '"' in span
    # filters are written back into the form
    assert 'value="shop"' in shop and 'value="CHECKOUT"' in shop
    assert 'value="logger=app"' in by_attr


def test_logs_paging_and_api(env):
    client, info = env
    first = _main(_get(client, "/logs?since=1h&limit=3"))
    older = re.search(r'<a href="/logs\?([^"]+)" id="older">', first)[1]
    second = _main(_get(client, "/logs?" + html.unescape(older)))
    rows1 = re.findall(r'<td class="mono nowrap">([^<]+)</td>', first)
    rows2 = re.findall(r'<td class="mono nowrap">([^<]+)</td>', second)
    assert len(rows1) == 3 and rows2 and rows1[-1] >= rows2[0]
    assert 'id="newest"' in second

    api = client.get("/api/logs/search", params={"since": "1h", "limit": 2}).json()
    assert len(api["logs"]) == 2 and api["next"]
    seen = [x["time_ns"] for x in api["logs"]]
    nxt = client.get("/api/logs/search", params={"since": "1h", "limit": 2, "cursor": api["next"]}).json()
    assert nxt["logs"][0]["time_ns"] <= seen[-1]
    vol = client.get("/api/logs/volume", params={"since": "1h", "severity": "error", "step": "60"}).json()
    assert vol["step_s"] == 60 and vol["total"] >= 2
    for bad in ({"severity": "loud"}, {"cursor": "x"}, {"limit": "0"}, {"attr": "novalue"}, {"trace_id": "zz"},
                {"step": "abc"}):
        path = "/api/logs/volume" if "step" in bad else "/api/logs/search"
        assert client.get(path, params=bad).status_code == 400, bad
    assert client.get("/logs?severity=loud").status_code == 400


def test_explore_lists_metrics_and_charts_histogram_quantiles(env):
    client, _ = env
    listing = _main(_get(client, "/explore?since=1h"))
    assert "http.server.request.duration" in listing and "histogram" in listing
    body = _main(_get(client, "/explore?" + urlencode({"since": "1h", "metric": "http.server.request.duration",
                                                        "group_by": "service", "agg": "p99"})))
    fig = _fig(body, "explore")
    assert sorted(t["name"] for t in fig["data"]) == ["service=orders", "service=payments"]
    assert fig["layout"]["yaxis"]["ticksuffix"] == "s"  # seconds, with SI prefixes: "250ms"
    ys = [y for t in fig["data"] for y in t["y"] if y is not None]
    assert ys and all(0 < y <= 10 for y in ys)
    assert 'name="group_by" value="service" checked' in body and 'name="group_by" value="http.route"' in body
    assert '<option value="p99" selected>' in body
    # a label value links to the same query plus that filter
    assert "attr=http.route%3D%2Forders" in body
    one = _fig(_main(_get(client, "/explore?" + urlencode({"since": "1h", "metric": "http.server.request.duration",
                                                           "attr": "http.route=/orders", "agg": "rate"}))), "explore")
    assert len(one["data"]) == 1 and one["layout"]["yaxis"]["ticksuffix"] == "/s"


def test_units_on_memory_axes(env):
    client, _ = env
    mem = _fig(_main(_get(client, "/explore?since=1h&metric=system.memory.usage")), "explore")
    assert mem["layout"]["yaxis"]["ticksuffix"] == "B" and mem["layout"]["yaxis"]["tickformat"] == "~s"
    infra = _main(_get(client, "/infrastructure?since=1h"))
    figs = [json.loads(html.unescape(x)) for x in re.findall(r'id="data-infra-\d+">(.*?)</script>', infra, re.S)]
    by_title = {f["layout"]["title"]["text"]: f for f in figs}
    assert by_title["system.memory.usage"]["layout"]["yaxis"]["ticksuffix"] == "B"
    assert by_title["system.cpu.utilization"]["layout"]["yaxis"]["tickformat"] == ".0%"
    table = _main(_get(client, "/explore?since=1h&metric=system.memory.usage&agg=max"))
    assert re.search(r'<td class="num">2\.0\d* GB</td>', table)


def test_explore_api_and_errors(env):
    client, _ = env
    r = client.get("/api/metrics/explore", params={"metric": "http.server.request.duration", "since": "1h",
                                                   "group_by": "http.route", "agg": "p50"}).json()
    assert r["type"] == "histogram" and r["unit"] == "s" and len(r["series"]) == 3
    labels = client.get("/api/metrics/labels", params={"metric": "http.server.request.duration", "since": "1h"}).json()
    keys = {x["key"] for x in labels["labels"]}
    assert {"service", "instance", "http.route", "http.request.method", "host.name"} <= keys
    for bad in ({"metric": "http.server.request.duration", "agg": "median"},
                {"metric": "http.server.request.duration", "step": "1ms"},
                {"metric": "system.memory.usage", "attr": "x>y"}):
        assert client.get("/api/metrics/explore", params=bad).status_code == 400, bad
    assert client.get("/explore?metric=system.memory.usage&agg=p99").status_code == 400
    assert "No points of nope" in _get(client, "/explore?metric=nope")


def test_service_page_latency_chart_has_exemplars_that_open_traces(env):
    client, info = env
    body = _main(_get(client, "/services/orders?since=1h"))
    fig = _fig(body, "latency")
    ex = next(t for t in fig["data"] if t["name"] == "exemplars")
    assert ex["customdata"] and set(ex["customdata"]) <= set(info["trace_ids"])
    assert all(y > 0 for y in ex["y"])  # milliseconds from the histogram's seconds
    assert 'data-fig="latency" id="fig-latency"' in body and 'class="fig clickable" data-fig="latency"' in body
    tid = ex["customdata"][0]
    assert client.get(f"/traces/{tid}").status_code == 200
    assert '<a href="/flamegraph?since=1h&amp;service=orders"' in body and "/logs?since=1h&amp;service=orders" in body


def test_flame_graph_merges_threads_across_snapshots(env):
    client, _ = env
    body = _main(_get(client, "/flamegraph?since=1h&service=orders"))
    fig = _fig(body, "flame")["data"][0]
    assert fig["type"] == "icicle"
    nodes = dict(zip(fig["labels"], fig["values"]))
    assert nodes["all threads"] == 24  # 6 snapshots x 4 threads
    assert nodes["handle"] == 18 and nodes["checkout"] == 18 and nodes["fetch_rows"] == 18  # merged across lines
    assert nodes["&lt;module&gt;"] == 6 and nodes["serve_forever"] == 6  # outermost frame at the bottom
    parent = dict(zip(fig["ids"], fig["labels"]))
    child_of = {lab: parent.get(p) for lab, p in zip(fig["labels"], fig["parents"])}
    assert child_of["checkout"] == "handle" and child_of["fetch_rows"] == "checkout"
    assert re.search(r'id="fl-snapshots">6<', body) and re.search(r'id="fl-samples">24<', body)
    top = body.split('id="flame-top"', 1)[1]
    assert top.index("fetch_rows") < top.index("serve_forever")
    listing = _main(_get(client, "/flamegraph?since=1h"))
    assert "/flamegraph?since=1h&amp;service=orders" in listing


def test_snapshot_page_draws_its_threads_as_a_flame_graph(env):
    client, info = env
    body = _main(_get(client, "/snapshots/" + quote(info["snapshot_ids"][0], safe="")))
    fig = _fig(body, "flame")["data"][0]
    nodes = dict(zip(fig["labels"], fig["values"]))
    assert nodes["all threads"] == 4 and nodes["checkout"] == 3 and nodes["fetch_rows"] == 3


def test_compare_two_traces_aligned_by_service_and_operation(env):
    client, info = env
    a = info["trace_id"]
    picker = _main(_get(client, f"/compare?since=1h&a={a}"))
    assert "Pick a trace to compare" in picker
    b = info["xss_trace_id"]
    body = _main(_get(client, f"/compare?since=1h&t={a}&t={b}"))
    rows = re.findall(r"<tr class=\"[^\"]*\">\s*<td>([^<]*)</td><td>([^<]*)", body)
    assert ("shop", "GET /checkout") in {(html.unescape(s), html.unescape(o).strip()) for s, o in rows}
    assert "only in A" in body and "only in B" in body
    fig = _fig(body, "compare")
    assert [t["name"] for t in fig["data"]] == ["A", "B"]
    # self time: "payments call" (60 ms) is covered by POST /charge from 37 to 95 ms → 2 ms of its own
    row = body.split('id="compare-rows"', 1)[1].split("payments call", 1)[1].split("</tr>", 1)[0]
    assert "2.00 ms" in row
    assert client.get(f"/compare?a={a}&b=zz").status_code == 400
    assert client.get(f"/compare?a={a}&b={'ab' * 16}").status_code == 404
    assert client.get(f"/compare?t={a}&t={b}&t={a}").status_code == 400


def test_trace_search_with_operators(env):
    client, info = env

    def ids(*attrs, **kw):
        q = urlencode([("since", "1h"), *[("attr", a) for a in attrs], *kw.items()])
        return set(re.findall(r'data-trace="(\w+)"', client.get("/traces?" + q).text))

    failing = client.get("/traces?" + urlencode({"since": "1h", "attr": "http.response.status_code>=500"})).text
    rows = re.findall(r'<tr class="(\w*)" data-trace="(\w+)"', failing)
    assert rows and all(cls == "err" for cls, _ in rows)  # spangen answers 500 exactly on error spans
    assert not ids("http.response.status_code>=500", "http.response.status_code<500")
    assert info["trace_id"] in ids("order.id~O-4")
    assert info["trace_id"] not in ids("order.id!=o-42", service="shop")
    assert info["trace_id"] in ids("host.name=node-1", service="shop")  # a resource attribute
    assert client.get("/traces?attr=http.response.status_code%3Eabc").status_code == 400
    # both on one span: the port of the redis calls, made by inventory
    api = client.get("/api/traces", params=[("since", "1h"), ("attr", "server.port>6378"),
                                            ("attr", "server.port<6380")]).json()["traces"]
    assert api and all("inventory" in t["services"] for t in api)


@pytest.mark.parametrize("path", ["/logs?since=1h", "/logs?since=1h&service=" + quote(XSS_SERVICE),
                                  "/explore?since=1h", "/explore?since=1h&metric=" + quote(XSS_METRIC),
                                  "/explore?since=1h&metric=" + quote(XSS_METRIC) + "&group_by=" + quote(XSS_SCRIPT),
                                  "/flamegraph?since=1h&service=" + quote(XSS_SERVICE), "/flamegraph?since=1h",
                                  "COMPARE", "/logs?since=1h&q=" + quote(XSS_SCRIPT)])
def test_hostile_strings_on_new_pages_are_escaped(env, path):
    client, info = env
    if path == "COMPARE":
        path = f"/compare?a={info['xss_trace_id']}&b={info['trace_id']}"
    body = _get(client, path)
    assert XSS_SCRIPT not in body and XSS_IMG not in body and "<img" not in body
    assert html.escape(XSS_SCRIPT, quote=False) in body or "\\u003cscript\\u003e" in body or \
        "&amp;lt;script&amp;gt;" in body
