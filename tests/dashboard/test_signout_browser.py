"""Signed-in pages and API answers are not kept by the browser: Chromium's Back button after signing
out showed the last page again, telemetry, user name and all, straight from its HTTP cache (history
navigation uses a cached answer however old, unless the answer said ``no-store``), although the
session was already refused by the server. Played in headless Chromium against real uvicorn."""

from __future__ import annotations

import re
from types import SimpleNamespace

import httpx
import pytest

from testkit.servers import serving
from tests.dashboard.browsing import open_page
from tracehouse.dashboard.app import create_app
from tracehouse.dashboard.auth import hash_password

pytestmark = pytest.mark.browser


def test_back_after_sign_out_asks_the_server_again(chdb_store, page):
    settings = SimpleNamespace(users={"ed": {"password_hash": hash_password("pw", n=2**10), "role": "editor"}},
                               api_tokens=[], secret_key="k")
    with serving(create_app(settings, chdb_store)) as port:
        base = f"http://127.0.0.1:{port}"
        open_page(page, f"{base}/login")
        page.fill("input[name=username]", "ed")
        page.fill("input[name=password]", "pw")
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_url(f"{base}/services")
        open_page(page, f"{base}/alerts?since=1h")
        assert page.locator("meta[name=csrf-token]").count() == 1  # signed in
        page.click("form.logout button")
        page.wait_for_url(f"{base}/login")
        page.go_back()
        page.wait_for_load_state("networkidle")
        assert page.url.startswith(f"{base}/login?next="), page.url
        assert page.locator("meta[name=csrf-token]").count() == 0
        # the same for what scripts read, and static files stay cacheable
        with httpx.Client(base_url=base) as c:
            csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
            c.post("/login", data={"csrf": csrf, "username": "ed", "password": "pw", "next": "/"})
            for path in ("/services", "/api/auth/me", "/api/services", "/login", "/traces/zz"):
                assert c.get(path).headers.get("cache-control") == "no-store", path
            assert "no-store" not in c.get("/static/app.js").headers.get("cache-control", "")
            assert c.get("/static/plotly.min.js").headers["cache-control"] == "public, max-age=86400"
