"""Browsers as OTLP and Zipkin clients: code on a page of an origin listed in
TRACEHOUSE_OTLP_CORS_ORIGINS sends to a real ``tracehouse serve`` with fetch (as the OpenTelemetry
JS web SDK's OTLP/HTTP exporters and zipkin-js do); a page of any other origin cannot."""

from __future__ import annotations

import tempfile

import pytest
from playwright.sync_api import sync_playwright

from testkit.servers import free_port, wait_port
from tests.collector.harness import start_serve_process
from tests.dashboard.browsing import CHROMIUM_ARGS
from tests.support import oneshot
from tests.support.pages import serving_pages
from tracehouse.collector.cors import allowed

TOKEN = "browser-token"
SPAN = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "click",
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000", "kind": 1}
SEND = """async ([url, token, body]) => {
  try {
    const r = await fetch(url, {method: "POST", body: JSON.stringify(body),
                                headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token}});
    return [r.status, await r.text()];
  } catch (e) { return ["blocked", String(e)]; }
}"""


def _otlp(service: str, span_id: str) -> dict:
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                               "scopeSpans": [{"spans": [dict(SPAN, spanId=span_id)]}]}]}


def _zipkin(service: str) -> list:
    return [{"traceId": "5b8efff798038103d269b633813fc60d", "id": "eee19b7ec3c1b175", "name": "click",
             "timestamp": 1700000000000000, "duration": 1000, "localEndpoint": {"serviceName": service}}]


def test_origin_patterns():
    listed = ["https://shop.example.com", "https://*.example.org", "http://localhost:3000"]
    assert allowed("https://shop.example.com", listed) and allowed("https://a.b.example.org", listed)
    assert allowed("http://localhost:3000", listed)
    for origin in ("https://evil.com", "http://shop.example.com", "https://shop.example.com.evil.com",
                   "https://example.org", "https://evilexample.org", "http://localhost:3001", "null", ""):
        assert not allowed(origin, listed), origin
    assert allowed("https://anything.test", ["*"]) and not allowed("null", ["*"])


@pytest.fixture
def page_server():
    with serving_pages({"/": (b"<!doctype html><title>shop</title><p>a page that sends telemetry", "text/html")}) as port:
        yield port


def test_a_listed_origins_page_sends_and_another_cannot(tmp_path, page_server):
    otlp, http_port, zipkin = free_port(), free_port(), free_port()
    listed = f"http://localhost:{page_server}"  # the same page server as 127.0.0.1 is another origin
    srv = start_serve_process(f"chdb://{tmp_path}/data", str(tmp_path / "buf"), otlp, http_port, env={
        "TRACEHOUSE_OTLP_CORS_ORIGINS": listed, "TRACEHOUSE_INGEST_TOKENS": TOKEN,
        "TRACEHOUSE_ZIPKIN_PORT": str(zipkin), "TRACEHOUSE_OTLP_GRPC_PORT": "0"})
    try:
        assert wait_port(zipkin, 30)
        with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
            ctx = p.chromium.launch_persistent_context(profile, executable_path="/usr/bin/chromium",
                                                       args=CHROMIUM_ARGS, headless=True)
            try:
                page = ctx.new_page()
                page.goto(f"{listed}/")
                status, text = page.evaluate(SEND, [f"http://127.0.0.1:{otlp}/v1/traces", TOKEN,
                                                    _otlp("web-shop", "eee19b7ec3c1b174")])
                assert (status, text) == (200, "{}")  # the answer is readable: an empty ExportTraceServiceResponse
                status, text = page.evaluate(SEND, [f"http://127.0.0.1:{otlp}/v1/traces", "wrong",
                                                    _otlp("web-shop", "eee19b7ec3c1b176")])
                assert status == 401 and "token" in text, (status, text)  # readable too: the page can say why
                status, _ = page.evaluate(SEND, [f"http://127.0.0.1:{zipkin}/api/v2/spans", TOKEN, _zipkin("web-zipkin")])
                assert status == 202
                page.goto(f"http://127.0.0.1:{page_server}/")  # an origin that is not listed
                status, text = page.evaluate(SEND, [f"http://127.0.0.1:{otlp}/v1/traces", TOKEN,
                                                    _otlp("not-listed", "eee19b7ec3c1b177")])
                assert status == "blocked", (status, text)
                status, _ = page.evaluate(SEND, [f"http://127.0.0.1:{zipkin}/api/v2/spans", TOKEN, _zipkin("not-listed")])
                assert status == "blocked"
            finally:
                ctx.close()
        auth = {"authorization": f"Bearer {TOKEN}"}
        # no page may read the collector's own figures or an agent's commands, listed or not
        for path in ("/metrics", "/v1/tracehouse/commands?service=a&instance=i"):
            pre = oneshot.options(f"http://127.0.0.1:{otlp}{path}", headers={
                "origin": listed, "access-control-request-method": "GET"})
            assert "access-control-allow-origin" not in pre.headers, path
        pre = oneshot.options(f"http://127.0.0.1:{otlp}/v1/traces", headers={
            "origin": "https://evil.example", "access-control-request-method": "POST"})
        assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
        metrics = oneshot.get(f"http://127.0.0.1:{otlp}/metrics", headers=auth).text
        accepted = {line.split('signal="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                    for line in metrics.splitlines() if line.startswith("tracehouse_collector_accepted_items_total{")}
        assert accepted.get("traces") == 2, metrics  # one OTLP span, one Zipkin span
    finally:
        srv.terminate()
