"""The attacks of a web page the developer visits, played in headless Chromium against real uvicorn
servers built the way ``tracehouse serve`` builds its listeners (``exposure.guard``): a DNS name
rebound to 127.0.0.1, a cross-site ``text/plain`` snapshot request, and pages that must sign in
when only API tokens are configured. Chromium maps ``*.test`` names to 127.0.0.1 by itself
(``--host-resolver-rules``): no DNS server, nothing leaves the machine."""

from __future__ import annotations

import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import uvicorn
from playwright.sync_api import sync_playwright

from testkit.servers import free_port
from tests.dashboard.browsing import CHROMIUM_ARGS
from tracehouse import exposure
from tracehouse.dashboard.app import create_app
from tracehouse.storage import queries_snapshots as qsnap

pytestmark = pytest.mark.browser

VICTIM = "victim-svc"


def _serve(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                           **exposure.uvicorn_options(SimpleNamespace())))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return str(port), server, thread


def _listener(store, **settings):
    """The dashboard as ``tracehouse serve`` puts it on its port (loopback, default allow-list)."""
    s = SimpleNamespace(**({"host": "127.0.0.1", "users": {}, "api_tokens": [], "secret_key": "k",
                            "allowed_hosts": []} | settings))
    return exposure.guard(create_app(s, store), s)


class _Attacker(BaseHTTPRequestHandler):
    page = b""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def servers(seeded_store):
    store = seeded_store[0]
    running = [_serve(_listener(store)), _serve(_listener(store, api_tokens=["ro:viewer:view-secret"]))]
    yield {"open": running[0][0], "tokens": running[1][0]}
    for _, server, thread in running:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def attacker(servers):
    target = f"http://127.0.0.1:{servers['open']}/api/snapshots"
    body = f'{{"service": "{VICTIM}", "kind": "threads"}}'
    _Attacker.page = f"""<!doctype html><title>cute cats</title>
<form id="f" method="post" action="{target}" enctype="text/plain" target="sink">
<input type="hidden" name='{{"service": "{VICTIM}", "kind": "memory", "x": "' value='"}}'></form>
<iframe name="sink"></iframe>
<script>
fetch("{target}", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: '{body}'}})
  .then(function () {{ document.getElementById("f").submit(); }})
  .finally(function () {{ setTimeout(function () {{ document.title = "sent"; }}, 300); }});
</script>""".encode()
    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), _Attacker)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://attacker.test:{port}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def chromium():
    rules = "--host-resolver-rules=MAP rebind.test 127.0.0.1, MAP attacker.test 127.0.0.1"
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path="/usr/bin/chromium", headless=True,
            args=[*CHROMIUM_ARGS, rules, "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable"])
        yield ctx
        ctx.close()


def test_a_rebound_dns_name_gets_nothing_from_the_dashboard(chromium, servers):
    page = chromium.new_page()
    try:
        resp = page.goto(f"http://rebind.test:{servers['open']}/services")
        assert resp.status == 400 and "host not allowed" in page.content()
        assert "orders" not in page.content()
        resp = page.goto(f"http://rebind.test:{servers['open']}/api/services")
        assert resp.status == 400
        resp = page.goto(f"http://localhost:{servers['open']}/services")  # the developer's own address works
        assert resp.status == 200 and "orders" in page.content()
    finally:
        page.close()


def test_a_cross_site_page_cannot_request_a_snapshot(chromium, servers, attacker, seeded_store):
    page = chromium.new_page()
    try:
        page.goto(attacker)
        page.wait_for_function("document.title === 'sent'", timeout=15000)
    finally:
        page.close()
    assert qsnap.list_requests(seeded_store[0], VICTIM, 50) == []


def test_with_only_api_tokens_pages_need_a_sign_in_in_the_browser(chromium, servers, info):
    base = f"http://127.0.0.1:{servers['tokens']}"
    page = chromium.new_page()
    try:
        sid = quote(info["snapshot_ids"][0], safe="")
        for path in ("/alerts", f"/snapshots/{sid}", f"/traces/{info['trace_id']}"):
            page.goto(base + path)
            assert page.url.startswith(base + "/login?next="), path
            assert page.locator(".wf-row").count() == 0
        page.fill("#login-token input[name=token]", "wrong")
        page.locator("#login-token button").click()
        assert page.locator("#login-error").inner_text() == "Unknown token."
        page.goto(f"{base}/login?next=" + quote(f"/traces/{info['trace_id']}", safe=""))
        page.fill("#login-token input[name=token]", "view-secret")
        page.locator("#login-token button").click()
        page.wait_for_url(f"{base}/traces/{info['trace_id']}")
        assert page.locator(".wf-row").count() > 0
        assert "token:ro (viewer)" in page.locator("header").inner_text()
    finally:
        page.close()
