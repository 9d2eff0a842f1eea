"""The OpenTelemetry JS OTLP/HTTP trace exporter's browser build (from npm, bundled by esbuild) on a
page in headless Chromium sends a trace to a real ``tracehouse serve`` of another origin: JSON over
fetch, through the CORS preflight, with a token. The page of an origin listed in
TRACEHOUSE_OTLP_CORS_ORIGINS gets every span stored with its types, parents, event and status; a
page of an origin that is not listed, and a wrong token, get an export error and store nothing."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from testkit.servers import free_port
from tests.collector.harness import start_serve_process
from tests.collector.node_clients import bundle_for_browser
from tests.dashboard.browsing import CHROMIUM_ARGS
from tests.support import oneshot
from tests.support.pages import serving_pages
from tests.support.waiting import wait_for

TOKEN = "browser-token"


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    script = bundle_for_browser("browser_trace.js", tmp_path_factory.mktemp("bundle") / "bundle.js").read_bytes()
    with serving_pages({"/": (b"<!doctype html><title>shop</title><script src='/bundle.js'></script>", "text/html"),
                        "/bundle.js": (script, "text/javascript")}) as port:
        yield port


def _send_from(ctx, origin: str, url: str, token: str) -> dict:
    page = ctx.new_page()
    page.goto(f"{origin}/")
    page.wait_for_function("typeof window.sendTrace === 'function'", timeout=10_000)
    sent = page.evaluate("([url, token]) => window.sendTrace(url, token)", [url, token])
    page.close()
    return sent


def test_the_js_web_exporter_sends_from_a_listed_origin_only(tmp_path: Path, page_server):
    otlp, http_port = free_port(), free_port()
    listed = f"http://localhost:{page_server}"  # the same page server as 127.0.0.1 is another origin
    srv = start_serve_process(f"chdb://{tmp_path}/data", str(tmp_path / "buf"), otlp, http_port, env={
        "TRACEHOUSE_OTLP_CORS_ORIGINS": listed, "TRACEHOUSE_INGEST_TOKENS": TOKEN, "TRACEHOUSE_OTLP_GRPC_PORT": "0"})
    url = f"http://127.0.0.1:{otlp}/v1/traces"
    api = f"http://127.0.0.1:{http_port}/api"
    try:
        with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
            ctx = p.chromium.launch_persistent_context(profile, executable_path="/usr/bin/chromium",
                                                       args=CHROMIUM_ARGS, headless=True)
            try:
                good = _send_from(ctx, listed, url, TOKEN)
                unlisted = _send_from(ctx, f"http://127.0.0.1:{page_server}", url, TOKEN)
                wrong_token = _send_from(ctx, listed, url, "wrong")
            finally:
                ctx.close()
        assert good["results"] == ["ok", "ok"] and not good["errors"], good  # one export per span (SimpleSpanProcessor)
        for bad in (unlisted, wrong_token):
            assert len(bad["results"]) == 2 and "ok" not in bad["results"], bad

        def stored(trace_id: str):
            r = oneshot.get(f"{api}/traces/{trace_id}", timeout=10)
            return r.json() if r.status_code == 200 and r.json().get("span_count") == 2 else None

        t = wait_for(lambda: stored(good["traceId"]), 30, what="the page's trace")
        spans = {s["span_id"]: s for s in t["spans"]}
        root, child = spans[good["spans"]["root"]["spanId"]], spans[good["spans"]["child"]["spanId"]]
        assert root["service"] == "web-shop" and root["name"] == "click checkout"
        assert root["resource"]["telemetry.sdk.language"] == "webjs"
        assert root["attributes"] == {"ui.element": "button#checkout", "cart.items": 3, "cart.total": 19.5,
                                      "user.returning": True, "cart.skus": ["a-1", "b-2"],
                                      "note": "naïve <b>ü</b> \u2028"}
        assert child["parent_span_id"] == root["span_id"] and child["attributes"] == {"http.request.method": "POST"}
        assert child["status"] == {"code": "error", "message": "payment declined"}
        assert [(e["name"], e["attributes"]) for e in child["events"]] == [("retry", {"attempt": 2})]
        for bad in (unlisted, wrong_token):  # nothing of theirs stored
            assert oneshot.get(f"{api}/traces/{bad['traceId']}", timeout=10).status_code == 404
    finally:
        srv.terminate()
