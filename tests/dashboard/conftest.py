"""One seeded chDB store per dashboard test module, a TestClient, a real uvicorn server and
headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import tempfile
import uuid

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import sync_playwright

from testkit.seed import seed_all
from testkit.servers import serving
from tests.dashboard.browsing import CHROMIUM_ARGS
from tracehouse.dashboard.app import create_app
from tracehouse.storage import Store


@pytest.fixture(scope="module")
def seeded_store(chdb_dir):
    db = "d_" + uuid.uuid4().hex[:12]
    store = Store.open(f"chdb://{chdb_dir}?database={db}")
    store.migrate()
    info = seed_all(store)
    yield store, info
    try:
        store.query(f"DROP DATABASE IF EXISTS {db}")
    finally:
        store.close()


@pytest.fixture(scope="module")
def app(seeded_store):
    return create_app(None, seeded_store[0])


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def info(seeded_store):
    return seeded_store[1]


@pytest.fixture(scope="module")
def live_server(app):
    with serving(app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS,
                                                   headless=True, viewport={"width": 1400, "height": 900})
        yield ctx
        ctx.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page()
    pg.problems = []  # console errors, page errors and any dialog (an executed XSS payload would open one)
    pg.on("console", lambda m: pg.problems.append(f"console: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.problems.append(f"pageerror: {e}"))

    def on_dialog(d):
        pg.problems.append(f"dialog: {d.message}")
        d.dismiss()

    pg.on("dialog", on_dialog)
    yield pg
    pg.close()

