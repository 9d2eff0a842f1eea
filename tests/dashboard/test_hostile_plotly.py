"""plotly.js reads a subset of HTML in every text it draws (titles, tick labels, tick suffixes, hover
text): ``<a href>`` becomes a live link that opens in a new tab, ``<b>``/``<span style>`` restyle.
Telemetry any ingest client sends reached those texts unescaped: a metric's unit (tick suffix and
hover text of the explorer and of the service page's resource charts), a metric name and the
explorer's ``group_by`` (its chart title), a service name (the flame graph's title) and alert labels
(the alert timeline's hover text). Found by sending such telemetry through a running collector and
looking for the elements plotly made in headless Chromium."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from testkit.servers import serving
from tests.collector.harness import run_collector
from tests.dashboard.browsing import open_page
from tests.support import oneshot
from tracehouse.alerts import Engine, alerts_router, build_config
from tracehouse.dashboard import create_app

pytestmark = pytest.mark.browser

NS = 1_000_000_000
PAYLOAD = '<a href="https://evil.example/p">PWNLINK</a><b>PWNBOLD</b>'
SERVICE = "svc" + PAYLOAD
PROTOBUF = {"content-type": "application/x-protobuf"}
RULES = {"groups": [{"name": "g", "interval": "10s", "rules": [
    {"alert": "HostileLabels", "kind": "metric", "metric": "evil.unit", "aggregation": "max", "window": "15m",
     "group_by": ["lbl"], "op": ">=", "threshold": 0}]}]}

# every element plotly made from markup in a text, and every drawn text that shows the payload as text
MARKUP = """() => {
  const svg = Array.from(document.querySelectorAll('.js-plotly-plot svg'));
  const made = [];
  svg.forEach(s => s.querySelectorAll('a').forEach(a => made.push(a.outerHTML.slice(0, 160))));
  svg.forEach(s => s.querySelectorAll('tspan').forEach(t => {
    if (/bold/.test(t.getAttribute('style') || '')) made.push(t.outerHTML.slice(0, 160)); }));
  return {made: made, text: svg.map(s => s.textContent).join(' '), pwned: !!window.__pwned};
}"""


def _kv(coll, key: str, value: str) -> None:
    coll.append(KeyValue(key=key))
    coll[-1].value.string_value = value


def _telemetry(now: int):
    traces = ExportTraceServiceRequest()
    rs = traces.resource_spans.add()
    _kv(rs.resource.attributes, "service.name", SERVICE)
    rs.scope_spans.add().spans.add(trace_id=b"\x11" * 16, span_id=b"\x01" * 8, name="op", kind=2,
                                   start_time_unix_nano=now - 5 * NS, end_time_unix_nano=now - 4 * NS)
    metrics = ExportMetricsServiceRequest()
    rm = metrics.resource_metrics.add()
    _kv(rm.resource.attributes, "service.name", SERVICE)
    for name in ("evil.unit", "process.evil", "evil" + PAYLOAD):
        m = rm.scope_metrics.add().metrics.add(name=name, unit=PAYLOAD)
        for i in range(4):
            p = m.gauge.data_points.add(time_unix_nano=now - (60 - 10 * i) * NS, as_double=float(i))
            _kv(p.attributes, "lbl", PAYLOAD)
    logs = ExportLogsServiceRequest()
    rl = logs.resource_logs.add()
    _kv(rl.resource.attributes, "service.name", SERVICE)
    snap = {"kind": "threads", "threads": [{"name": "t", "id": 1, "stack": [{"file": "f.py", "line": 1,
                                                                            "function": "fn"}]}]}
    rec = rl.scope_logs.add().log_records.add(time_unix_nano=now - 2 * NS, severity_number=9,
                                              event_name="tracehouse.snapshot")
    rec.body.string_value = json.dumps(snap)
    _kv(rec.attributes, "snapshot.kind", "threads")
    return (("/v1/traces", traces), ("/v1/metrics", metrics), ("/v1/logs", logs))


def _wait(store, sql: str, want: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and store.read(sql).rows[0][0] < want:
        time.sleep(0.2)
    assert store.read(sql).rows[0][0] == want


def _figures(page, url: str) -> dict:
    open_page(page, url)
    page.wait_for_selector("[data-fig][data-rendered] .main-svg")
    page.wait_for_function("() => Array.from(document.querySelectorAll('[data-fig]'))"
                           ".every(d => d.hasAttribute('data-rendered'))")
    return page.evaluate(MARKUP)


def _hover(page, fig: str) -> dict:
    """What the pointer over the first point of ``fig`` shows (plotly's own hover, as a mouse makes it)."""
    page.evaluate("f => window.Plotly.Fx.hover(document.querySelector('[data-fig=' + f + ']'), "
                  "[{curveNumber: 0, pointNumber: 0}])", fig)
    page.wait_for_selector(f"[data-fig={fig}] .hoverlayer .hovertext")
    return page.evaluate("""f => {
      const h = document.querySelector('[data-fig=' + f + '] .hoverlayer');
      return {made: Array.from(h.querySelectorAll('a')).map(a => a.outerHTML.slice(0, 160)), text: h.textContent};
    }""", fig)


def test_telemetry_is_text_in_every_chart(chdb_store, tmp_path, page):
    now = time.time_ns()
    running = run_collector(chdb_store, str(tmp_path / "buf"), max_batch_age=0.05)
    try:
        for path, msg in _telemetry(now):
            r = oneshot.post(running.url + path, content=msg.SerializeToString(), headers=PROTOBUF, timeout=10)
            assert r.status_code == 200, r.text
        _wait(chdb_store, f"SELECT count() FROM {chdb_store.t('metric_points')}", 12)
        _wait(chdb_store, f"SELECT count() FROM {chdb_store.t('logs')}", 1)
        _wait(chdb_store, f"SELECT count() FROM {chdb_store.t('spans')}", 1)
    finally:
        running.stop()
    engine = Engine(chdb_store, build_config([("/etc/tracehouse/rules.yaml", yaml.safe_load(yaml.safe_dump(RULES)))]))
    engine.run_once(time.time_ns())
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store, alerts=engine,
                     routers=[alerts_router(engine)])
    with serving(app) as port:
        base = f"http://127.0.0.1:{port}"
        pages = {
            "explore: the unit": "/explore?since=1h&metric=evil.unit",
            "explore: group_by in the title": "/explore?since=1h&metric=evil.unit&group_by=" + quote(PAYLOAD),
            "explore: the metric name in the title": "/explore?since=1h&metric=" + quote("evil" + PAYLOAD),
            "service page: a resource chart's unit": "/services/" + quote(SERVICE, safe="") + "?since=1h",
            "flame graph: the service in the title": "/flamegraph?since=1h&service=" + quote(SERVICE),
            "alerts: the timeline": "/alerts?since=1h",
        }
        found = {}
        for what, path in pages.items():
            got = _figures(page, base + path)
            assert not got["pwned"], what
            if got["made"]:
                found[what] = got["made"]
        assert not found, {k: v[:1] for k, v in found.items()}
        # what was markup shows as the characters it is
        assert PAYLOAD in _figures(page, base + pages["flame graph: the service in the title"])["text"]
        assert PAYLOAD in _figures(page, base + pages["explore: group_by in the title"])["text"]
        for path, fig in ((pages["explore: the unit"], "explore"), (pages["alerts: the timeline"], "alert-timeline")):
            _figures(page, base + path)
            hover = _hover(page, fig)
            assert not hover["made"], (path, hover)
            assert "PWNLINK" in hover["text"], (path, hover)
    assert not [p for p in page.problems if not p.startswith("console: Failed to load resource")], page.problems
