"""Login, sessions, CSRF, roles and API tokens when users / tokens are configured."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from tracehouse.dashboard.app import create_app
from tracehouse.dashboard.auth import Auth, hash_password, verify_password


def test_password_hashes():
    h = hash_password("s3cret", n=2**10)
    assert h.startswith("scrypt$") and verify_password("s3cret", h) and not verify_password("S3cret", h)
    salt = b"0123456789abcdef"
    dk = hashlib.pbkdf2_hmac("sha256", b"pw", salt, 1000, 32)
    b = lambda x: base64.urlsafe_b64encode(x).decode().rstrip("=")  # noqa: E731
    assert verify_password("pw", f"pbkdf2_sha256$1000${b(salt)}${b(dk)}")
    assert not verify_password("pw", "md5$abc") and not verify_password("pw", "scrypt$x$y")


def test_sessions_expire_and_cannot_be_forged():
    now = [1000.0]
    auth = Auth(SimpleNamespace(users={"ann": {"password_hash": hash_password("pw", n=2**10), "role": "admin"}},
                                api_tokens=[], secret_key="k"), clock=lambda: now[0])
    s = auth.login("ann", "pw")
    cookie = auth.sign(s)
    assert auth.session(cookie)["r"] == "admin"
    payload, sig = cookie.rsplit(".", 1)
    forged = base64.urlsafe_b64encode(b'{"u":"ann","r":"admin","exp":9999999999,"csrf":"x"}').decode().rstrip("=")
    assert auth.session(f"{forged}.{sig}") is None and auth.session("garbage") is None
    assert Auth(SimpleNamespace(users=auth.users, secret_key="other")).session(cookie) is None
    now[0] += 13 * 3600
    assert auth.session(cookie) is None
    assert auth.login("ann", "nope") is None and auth.login("bob", "pw") is None


@pytest.fixture(scope="module")
def secured(seeded_store):
    settings = SimpleNamespace(users={"ann": {"password_hash": hash_password("pw", n=2**10), "role": "viewer"},
                                      "ed": {"password_hash": hash_password("pw2", n=2**10), "role": "editor"}},
                               api_tokens=["tok-123"], secret_key="test-key")
    return create_app(settings, seeded_store[0])


def _login(c: TestClient, user: str, pw: str, next_: str = "/services"):
    form = c.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]
    return c.post("/login", data={"csrf": csrf, "username": user, "password": pw, "next": next_},
                  follow_redirects=False)


def test_pages_need_login_and_api_needs_a_token_or_session(secured):
    with TestClient(secured) as c:
        r = c.get("/services?since=6h", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fservices%3Fsince%3D6h"
        assert r.headers["content-security-policy"]
        assert c.get("/api/services").status_code == 401
        assert c.get("/api/services", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/services", headers={"Authorization": "Bearer tok-123"}).status_code == 200
        assert c.get("/static/app.js").status_code == 200 and c.get("/healthz").status_code == 200
        # a login without the form's CSRF cookie/token is refused; a wrong password too
        assert c.post("/login", data={"csrf": "x", "username": "ann", "password": "pw"}).status_code == 403
        assert _login(c, "ann", "bad").status_code == 401
        r = _login(c, "ann", "pw", "//evil.example/")
        assert r.status_code == 303 and r.headers["location"] == "/services"
        page = c.get("/services")
        assert page.status_code == 200 and "ann (viewer)" in page.text
        assert c.get("/api/services").status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
        # viewers cannot change anything, even with the right CSRF token
        assert c.post("/api/services", json={}, headers={"X-CSRF-Token": csrf}).status_code == 403
        assert c.post("/logout", data={"csrf": "wrong"}, follow_redirects=False).status_code == 403
        assert c.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
        assert c.get("/services", follow_redirects=False).status_code == 303


def test_editor_unsafe_requests_need_the_csrf_token(secured):
    with TestClient(secured) as c:
        assert _login(c, "ed", "pw2").status_code == 303
        csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/services").text)[1]
        assert c.post("/api/services", json={}).status_code == 403  # no token: refused before routing
        assert c.post("/api/services", json={}, headers={"X-CSRF-Token": csrf}).status_code == 405  # passed the gate


def test_a_session_cookie_kept_after_signing_out_is_refused(secured):
    """Sign-out only deleted the cookie: a copy of it (taken before) still read and changed things
    until it expired, 12 hours later."""
    with TestClient(secured) as c:
        assert _login(c, "ed", "pw2").status_code == 303
        kept = c.cookies.get("th_session")
        csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/services").text)[1]
        assert c.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    with TestClient(secured, cookies={"th_session": kept}) as replay:
        assert replay.get("/api/auth/me").status_code == 401
        assert replay.get("/services", follow_redirects=False).status_code == 303
        r = replay.post("/api/alerts/silences", json={"matchers": [{"name": "rule", "value": "x"}], "duration": "1h"},
                        headers={"X-CSRF-Token": csrf})
        assert r.status_code == 401


def test_a_signed_out_session_is_refused_by_other_replicas_and_after_a_restart(seeded_store):
    """Sign-out was remembered by the process that did it only: another replica behind the same
    load balancer, or the same dashboard after a restart, still took a kept copy of the cookie (an
    editor's) until it expired. Two apps on one store stand for two replicas (or before and after a
    restart): the sign-out goes through the store, and the other refuses the copy."""
    store = seeded_store[0]
    settings = SimpleNamespace(users={"ed": {"password_hash": hash_password("pw2", n=2**10), "role": "editor"}},
                               api_tokens=[], secret_key="replica-key")
    a, b = create_app(settings, store), create_app(settings, store)
    b.state.auth.shared_signouts.interval = 0  # read the store at every request (default: every 2 s)
    with TestClient(a) as ca:
        assert _login(ca, "ed", "pw2").status_code == 303
        kept = ca.cookies.get("th_session")
        csrf = re.search(r'name="csrf" value="([^"]+)"', ca.get("/services").text)[1]
        with TestClient(b, cookies={"th_session": kept}) as cb:
            assert cb.get("/api/auth/me").json() == {"name": "ed", "role": "editor"}  # one key: valid on both
            assert ca.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
            assert cb.get("/api/auth/me").status_code == 401
            assert cb.get("/services", follow_redirects=False).status_code == 303
            r = cb.post("/api/alerts/silences", json={"matchers": [{"name": "rule", "value": "x"}], "duration": "1h"},
                        headers={"X-CSRF-Token": csrf})
            assert r.status_code == 401
    restarted = create_app(settings, store)  # reads the store at its first request
    with TestClient(restarted, cookies={"th_session": kept}) as cr:
        assert cr.get("/api/auth/me").status_code == 401
    rows = store.query(f"SELECT id FROM {store.t('ended_sessions')}").rows
    assert rows and all(csrf not in str(r[0]) for r in rows)  # a digest, not the session's id


def test_sign_outs_in_force_when_the_store_cannot_be_read(seeded_store):
    """A failed read (here: the table is away) keeps the last list read, so a sign-out once seen
    is never forgotten, and the read is tried again after the interval."""
    import asyncio

    from tracehouse.dashboard.signouts import SignOuts

    store = seeded_store[0]
    mono = [0.0]
    shared = SignOuts(store, interval=2.0, monotonic=lambda: mono[0])
    other = SignOuts(store)
    other.record("sid-gone", int(time.time()) + 3600)
    asyncio.run(shared.refresh_if_due())
    assert shared.ended("sid-gone") and not shared.ended("sid-live")
    table = store.t("ended_sessions")
    store.query(f"RENAME TABLE {table} TO {table}_away")
    try:
        mono[0] += 2.5
        asyncio.run(shared.refresh_if_due())  # fails: the last list stays
        assert shared.ended("sid-gone")
    finally:
        store.query(f"RENAME TABLE {table}_away TO {table}")
    other.record("sid-expired", int(time.time()) - 1)  # expired: never read back
    mono[0] += 1.0
    asyncio.run(shared.refresh_if_due())  # not due yet: nothing read
    assert not shared.ended("sid-expired")
    other.record("sid-later", int(time.time()) + 3600)
    assert not shared.ended("sid-later")
    mono[0] += 1.5
    asyncio.run(shared.refresh_if_due())
    assert shared.ended("sid-gone") and shared.ended("sid-later") and not shared.ended("sid-expired")


def test_the_session_key_is_the_same_from_the_environment_and_from_a_file(tmp_path):
    """The file's content was stripped and the variable's was not: replicas given the same key,
    one from TRACEHOUSE_SECRET_KEY with a trailing newline (a Kubernetes secret made from a file)
    and one from TRACEHOUSE_SECRET_KEY_FILE, signed different cookies and refused each other's."""
    users = {"ann": {"password_hash": hash_password("pw", n=2**10), "role": "viewer"}}
    key_file = tmp_path / "key"
    key_file.write_text("shared-key\n")
    from_env = Auth(SimpleNamespace(users=users, api_tokens=[], secret_key="shared-key\r\n"))
    from_file = Auth(SimpleNamespace(users=users, api_tokens=[], secret_key_file=str(key_file)))
    cookie = from_env.sign(from_env.login("ann", "pw"))
    assert from_file.session(cookie)["u"] == "ann"


def test_expired_sign_outs_are_deleted_from_the_store(store):
    """On both backends (chDB, a private clickhouse-server): the first read of the list deletes the
    sign-outs whose session has expired, so the table does not grow with every sign-out for ever."""
    from tests.support.waiting import wait_for
    from tracehouse.dashboard.signouts import SignOuts
    from tracehouse.storage.queries_sessions import record_ended_session

    now = int(time.time())
    for i in range(3):
        record_ended_session(store, f"expired-{i}", now - 60)
    record_ended_session(store, "alive", now + 3600)

    def kept() -> list[str]:
        return sorted(r[0] for r in store.query(f"SELECT id FROM {store.t('ended_sessions')}").rows)

    assert kept() == ["alive", "expired-0", "expired-1", "expired-2"]
    asyncio.run(SignOuts(store).refresh_if_due())
    wait_for(lambda: kept() == ["alive"], 20, what="expired sign-outs deleted")


def test_login_next_with_whitespace_or_control_characters_goes_to_the_services_page(secured):
    """Browsers drop tabs and line breaks from a URL, so `/<TAB>/evil.example/` reads as
    `//evil.example/`, another site. The old check let such a `next` through, and only Starlette's
    encoding of the Location header (`/%09/evil.example/`) kept it on this site."""
    with TestClient(secured) as c:
        for target in ("/\t/evil.example/", "/\n/evil.example/", "/\r\n/evil.example/", "/ /evil.example/",
                       "/\x00/evil.example/", "/\u2028/evil.example/", "/" + "a" * 3000):
            r = _login(c, "ann", "pw", target)
            assert r.status_code == 303 and r.headers["location"] == "/services", (target, r.headers["location"])
        r = _login(c, "ann", "pw", "/traces/abc?since=1h&q=a%20b")
        assert r.status_code == 303 and r.headers["location"] == "/traces/abc?since=1h&q=a%20b"
