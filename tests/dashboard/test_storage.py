"""The Storage page and ``/api/storage``: disk use per table and day, retention in effect, and
retention changes by an admin only (API and page), applied at once."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from testkit.servers import serving
from testkit.spangen import generate
from tests.dashboard.browsing import open_page
from tracehouse.dashboard.app import create_app
from tracehouse.dashboard.auth import hash_password

NS = 1_000_000_000
DAY = 86400


def _seed(store) -> None:
    today = int(time.time()) // DAY * DAY
    for d in (0, 1, 6):
        cols, _ = generate(300, (today - d * DAY + 3600) * NS, 600 * NS, store=store)
        store.insert("spans", cols)


@pytest.fixture
def open_client(chdb_store):
    _seed(chdb_store)
    with TestClient(create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)) as c:
        yield c, chdb_store


def test_api_storage_reports_disk_use_and_retention_from_the_tables(open_client):
    c, store = open_client
    body = c.get("/api/storage").json()
    assert body["backend"] == "chdb" and body["ttl_supported"] is True
    assert body["retention_days"] == {"spans": 7, "metrics": 30, "logs": 7, "alerts": 90}
    assert body["retention"]["spans"]["ttl_days"] == 7 and body["retention"]["spans"]["oldest_day"]
    spans = next(t for t in body["disk"]["tables"] if t["table"] == "spans")
    assert spans["rows"] == store.query(f"SELECT count() FROM {store.t('spans')}").scalar()
    assert len(spans["days"]) == 3 and all(d["bytes_on_disk"] > 0 for d in spans["days"])
    assert len(body["disk"]["days"]) >= 3


def test_api_retention_change_applies_at_once_and_bad_input_is_a_400(open_client):
    c, store = open_client
    r = c.put("/api/storage/retention", json={"spans": 2})
    assert r.status_code == 200, r.text
    out = r.json()
    assert any(d["table"] == "spans" for d in out["applied"]["dropped"])  # the 6-day-old partition
    assert out["retention"]["spans"]["ttl_days"] == 2 and out["retention"]["spans"]["days"] == 2
    assert c.get("/api/storage").json()["retention_days"]["spans"] == 2
    for bad in ({"spans": 0}, {"spans": "x"}, {"bogus": 3}, {}, [1, 2]):
        r = c.put("/api/storage/retention", json=bad)
        assert r.status_code == 400 and r.json()["error"], (bad, r.text)
    r = c.put("/api/storage/retention", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert c.get("/api/storage").json()["retention_days"]["spans"] == 2



def test_retention_days_int_cannot_read_or_foreign_digits_are_400s_and_change_nothing(open_client):
    """``str.isdigit`` admits ``²`` and other scripts' digits: ``"²"``, ``"1³"`` and 5,000 digits
    answered 500 (``int()`` refuses them), and ``"٣"`` (Arabic-Indic three) set 3 days and dropped
    every older partition."""
    c, store = open_client
    before = store.query(f"SELECT count() FROM {store.t('spans')}").scalar()
    for days in ("\u00b2", "1\u00b3", "9" * 5000, "\u0663", "\uff17"):
        r = c.put("/api/storage/retention", json={"spans": days})
        assert r.status_code == 400 and "whole number of days" in r.json()["error"], (days[:5], r.status_code, r.text)
    assert c.get("/api/storage").json()["retention_days"]["spans"] == 7
    assert store.query(f"SELECT count() FROM {store.t('spans')}").scalar() == before
    assert c.put("/api/storage/retention", json={"spans": " 6 "}).status_code == 200  # spaces as before

USERS = {"ann": ("pw-a", "admin"), "ed": ("pw-e", "editor"), "vi": ("pw-v", "viewer")}


@pytest.fixture
def secured(chdb_store):
    _seed(chdb_store)
    settings = SimpleNamespace(users={u: {"password_hash": hash_password(p, n=2**10), "role": r}
                                      for u, (p, r) in USERS.items()},
                               api_tokens=["tok-1"], secret_key="k")
    return create_app(settings, chdb_store), chdb_store


def _login(c: TestClient, user: str) -> str:
    form = c.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]
    r = c.post("/login", data={"csrf": token, "username": user, "password": USERS[user][0], "next": "/storage"},
               follow_redirects=False)
    assert r.status_code == 303
    page = c.get("/storage")
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text)[1]


def test_only_an_admin_changes_retention(secured):
    app, store = secured
    with TestClient(app) as c:
        assert c.put("/api/storage/retention", json={"spans": 3}, headers={"authorization": "Bearer tok-1"}
                     ).status_code == 403  # API tokens are editors
        assert c.get("/api/storage", headers={"authorization": "Bearer tok-1"}).status_code == 200
    for user in ("vi", "ed"):
        with TestClient(app) as c:
            csrf = _login(c, user)
            page = c.get("/storage").text
            assert "Only an admin can change retention" in page and 'name="spans"' not in page
            assert c.put("/api/storage/retention", json={"spans": 3}, headers={"x-csrf-token": csrf}).status_code == 403
    assert store.retention()["spans"] == 7
    with TestClient(app) as c:
        csrf = _login(c, "ann")
        assert c.put("/api/storage/retention", json={"spans": 3}).status_code == 403  # no CSRF token
        # a form post (what another site could make a browser send) changes nothing
        assert c.post("/storage/retention", data={"csrf": csrf, "spans": "3"}).status_code in (403, 405, 415)
        r = c.put("/api/storage/retention", json={"spans": 3, "logs": 7}, headers={"x-csrf-token": csrf})
        assert r.status_code == 200, r.text
        assert store.retention()["spans"] == 3 and "toIntervalDay(3)" in store.table_ttl("spans")
        r = c.put("/api/storage/retention", json={"spans": 0}, headers={"x-csrf-token": csrf})
        assert r.status_code == 400 and "1 to 3650" in r.text
        r = c.put("/api/storage/retention", json={"logs": 5}, headers={"x-csrf-token": csrf})
        assert r.status_code == 200 and store.retention()["logs"] == 5


@pytest.fixture
def live(chdb_store):
    _seed(chdb_store)
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)
    with serving(app) as port:
        yield f"http://127.0.0.1:{port}", chdb_store


@pytest.mark.browser
def test_storage_page_in_chromium_changes_retention(page, live):
    url, store = live
    open_page(page, url + "/storage", "storage")
    assert page.locator("#table-usage tr[data-table='spans']").count() == 1
    assert page.locator("#day-usage tr[data-day]").count() >= 3
    assert page.locator("#retention-table tr[data-signal='spans'] td[data-days]").inner_text() == "7"
    page.fill("input[name=spans]", "2")
    page.click("#retention-apply")  # sent as JSON by app.js, then the page reloads
    page.wait_for_url("**/storage?changed=spans")
    assert page.locator("#retention-changed").count() == 1
    assert page.locator("#retention-table tr[data-signal='spans'] td[data-days]").inner_text() == "2"
    assert page.locator("#day-usage tr[data-day]").count() == 2  # the 6-day-old partition is gone
    assert store.retention()["spans"] == 2
    assert page.problems == []
