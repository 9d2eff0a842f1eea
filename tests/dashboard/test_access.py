"""Who may do what on the dashboard: token roles, admin-only routes, pages behind sign-in with tokens
only, cross-site state changes, session keys and cookies, non-ASCII secrets, login rate limits and
``requested_by`` (TestClient over a seeded chDB store; the browser side is in test_exposure_browser.py)."""

from __future__ import annotations

import re
import threading
import time
from types import SimpleNamespace
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from testkit.servers import free_port
from tests.support import oneshot
from tracehouse.config import load_settings
from tracehouse.dashboard.app import create_app
from tracehouse.dashboard.auth import hash_password, parse_api_tokens
from tracehouse.dashboard.loginlimit import LoginLimiter

TOKENS = ["ro:viewer:view-secret", "ed:editor:edit-secret", "boss:admin:admin-secret", "legacy-plain-secret"]
USERS = {"vic": {"password_hash": hash_password("pw", n=2**10), "role": "viewer"},
         "ed": {"password_hash": hash_password("pw", n=2**10), "role": "editor"},
         "ada": {"password_hash": hash_password("pw", n=2**10), "role": "admin"}}


def _app(store, **settings):
    base = {"users": {}, "api_tokens": [], "secret_key": "k"}
    return create_app(SimpleNamespace(**(base | settings)), store)


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _login(c: TestClient, user: str, pw: str = "pw", next_: str = "/services", token: str = ""):
    csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
    data = {"csrf": csrf, "next": next_} | ({"token": token} if token else {"username": user, "password": pw})
    return c.post("/login", data=data, follow_redirects=False)


def _csrf(c: TestClient) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)">', c.get("/services").text)[1]


def test_token_formats_and_the_default_role_of_a_bare_token():
    got = parse_api_tokens(TOKENS + [{"name": "ci", "role": "viewer", "token": "t:with:colons"}])
    assert [(t.name, t.role, t.secret) for t in got] == [
        ("ro", "viewer", b"view-secret"), ("ed", "editor", b"edit-secret"), ("boss", "admin", b"admin-secret"),
        ("token-4", "editor", b"legacy-plain-secret"), ("ci", "viewer", b"t:with:colons")]
    with pytest.raises(ValueError, match="role must be one of"):
        parse_api_tokens([{"name": "x", "role": "root", "token": "s"}])
    # environment and YAML forms reach the same place
    env = load_settings(environ={"TRACEHOUSE_API_TOKENS": "ro:viewer:a,b"})
    assert [(t.name, t.role) for t in parse_api_tokens(env.api_tokens)] == [("ro", "viewer"), ("token-2", "editor")]


def test_yaml_mapping_of_tokens(tmp_path):
    cfg = tmp_path / "th.yaml"
    cfg.write_text("api_tokens:\n  ci: {role: viewer, token: s1}\n  ops: admin:s2\n")
    toks = parse_api_tokens(load_settings(config_file=str(cfg), environ={}).api_tokens)
    assert [(t.name, t.role, t.secret) for t in toks] == [("ci", "viewer", b"s1"), ("ops", "admin", b"s2")]


def test_token_roles_viewer_reads_editor_changes_admin_administers(seeded_store):
    with TestClient(_app(seeded_store[0], api_tokens=TOKENS)) as c:
        body = {"service": "orders", "kind": "threads"}
        for secret in ("view-secret", "edit-secret", "admin-secret", "legacy-plain-secret"):
            assert c.get("/api/services", headers=_bearer(secret)).status_code == 200
        assert c.post("/api/snapshots", json=body, headers=_bearer("view-secret")).status_code == 403
        r = c.post("/api/snapshots", json=body, headers=_bearer("edit-secret"))
        assert r.status_code == 201 and r.json()["requested_by"] == "token:ed"
        assert c.post("/api/snapshots", json=body, headers=_bearer("legacy-plain-secret")).status_code == 201
        # users and tokens are admin business: an editor is refused, an admin sees names and roles only
        assert c.get("/api/auth/principals", headers=_bearer("edit-secret")).status_code == 403
        r = c.get("/api/auth/principals", headers=_bearer("admin-secret"))
        assert r.status_code == 200 and "secret" not in r.text
        assert {t["name"]: t["role"] for t in r.json()["tokens"]} == {"ro": "viewer", "ed": "editor",
                                                                       "boss": "admin", "token-4": "editor"}
        assert c.get("/api/auth/me", headers=_bearer("view-secret")).json() == {"name": "token:ro", "role": "viewer"}


def test_admin_routes_refuse_signed_in_editors_and_admit_admins(seeded_store):
    app = _app(seeded_store[0], users=USERS)
    for who, status in (("vic", 403), ("ed", 403), ("ada", 200)):
        with TestClient(app) as c:
            assert _login(c, who).status_code == 303
            assert c.get("/api/auth/principals").status_code == status, who


def test_with_only_api_tokens_every_page_needs_a_sign_in(seeded_store, info):
    sid = quote(info["snapshot_ids"][0], safe="")
    with TestClient(_app(seeded_store[0], api_tokens=TOKENS)) as c:
        for path in (f"/traces/{info['trace_id']}", f"/snapshots/{sid}", "/alerts", "/services", "/service-map"):
            r = c.get(path, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
        form = c.get("/login").text
        assert 'id="login-token"' in form and 'id="login-user"' not in form
        assert _login(c, "", token="wrong").status_code == 401
        r = _login(c, "", token="view-secret", next_=f"/traces/{info['trace_id']}")
        assert r.status_code == 303 and r.headers["location"] == f"/traces/{info['trace_id']}"
        page = c.get(f"/traces/{info['trace_id']}")
        assert page.status_code == 200 and "token:ro (viewer)" in page.text


def test_cross_site_state_changes_are_refused_in_open_loopback_mode(seeded_store):
    store = seeded_store[0]
    with TestClient(_app(store)) as c:
        before = c.get("/api/snapshots").json()["requests"]
        payload = '{"service": "orders", "kind": "threads"}'
        assert c.post("/api/snapshots", content=payload, headers={"Content-Type": "text/plain"}).status_code == 415
        assert c.post("/api/snapshots", content=payload).status_code == 415
        form = {"service": "orders", "kind": "threads"}
        assert c.post("/api/snapshots", data=form).status_code == 415
        for origin in ("http://evil.example", "null", "http://testserver.evil.example", "https://testserver:444"):
            r = c.post("/api/snapshots", json=form, headers={"Origin": origin})
            assert r.status_code == 403, origin
        assert c.get("/api/snapshots").json()["requests"] == before
        assert c.post("/api/snapshots", json=form, headers={"Origin": "http://testserver"}).status_code == 201
        assert c.post("/api/snapshots", json=form).status_code == 201  # no Origin: not a browser's cross-site call


def test_requested_by_is_the_user_name_not_the_session(seeded_store):
    with TestClient(_app(seeded_store[0], users=USERS)) as c:
        assert _login(c, "ed").status_code == 303
        csrf = _csrf(c)
        r = c.post("/api/snapshots", json={"service": "orders", "kind": "memory"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201 and r.json()["requested_by"] == "ed"
        listed = c.get(f"/api/snapshots/{r.json()['id']}").json()
        assert listed["requested_by"] == "ed" and csrf not in c.get("/api/snapshots").text


def test_non_ascii_cookies_and_csrf_values_answer_401_or_403_never_500(seeded_store):
    with TestClient(_app(seeded_store[0], users=USERS), raise_server_exceptions=False) as c:
        for cookie in ("th_session=\u00e9\u00e9.\u00e9", "th_session=abc.\u00ff\u00fe"):
            raw = {"Cookie": cookie.encode("utf-8")}
            assert c.get("/api/services", headers=raw).status_code == 401
            assert c.get("/services", headers=raw, follow_redirects=False).status_code == 303
        login = c.get("/login")
        raw_cookie = f"th_login_csrf={login.cookies['th_login_csrf']}"
        r = c.post("/login", content="csrf=%C3%A9&username=ed&password=pw",
                   headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": raw_cookie})
        assert r.status_code == 403
        c.cookies.clear()
        assert _login(c, "ed").status_code == 303
        r = c.post("/api/snapshots", json={"service": "orders", "kind": "threads"},
                   headers={"X-CSRF-Token": "\u00e9t\u00e9".encode()})
        assert r.status_code == 403


def test_session_key_from_environment_or_file_survives_a_restart(seeded_store, tmp_path):
    key_file = tmp_path / "session.key"
    key_file.write_text("a-long-random-session-key\n")
    users = {"users": USERS}
    for environ in ({"TRACEHOUSE_SECRET_KEY": "k-from-env"}, {"TRACEHOUSE_SECRET_KEY_FILE": str(key_file)}):
        settings = load_settings(environ=environ)
        settings.users = USERS
        with TestClient(create_app(settings, seeded_store[0])) as c:
            assert _login(c, "ada").status_code == 303
            cookie = c.cookies["th_session"]
        restarted = load_settings(environ=environ)  # a new process (or another replica) with the same key
        restarted.users = USERS
        with TestClient(create_app(restarted, seeded_store[0]), cookies={"th_session": cookie}) as c:
            assert c.get("/api/auth/me").json() == {"name": "ada", "role": "admin"}, environ
    with TestClient(create_app(SimpleNamespace(**users, secret_key="other"), seeded_store[0]),
                    cookies={"th_session": cookie}) as c:
        assert c.get("/api/auth/me").status_code == 401
    # a changed password (or a removed user) ends the session at once; a changed role applies at once
    demoted = dict(USERS, ada={"password_hash": USERS["ada"]["password_hash"], "role": "viewer"})
    with TestClient(create_app(SimpleNamespace(users=demoted, secret_key_file=str(key_file)), seeded_store[0]),
                    cookies={"th_session": cookie}) as c:
        assert c.get("/api/auth/me").json() == {"name": "ada", "role": "viewer"}
    moved = dict(USERS, ada={"password_hash": hash_password("new", n=2**10), "role": "admin"})
    with TestClient(create_app(SimpleNamespace(users=moved, secret_key_file=str(key_file)), seeded_store[0]),
                    cookies={"th_session": cookie}) as c:
        assert c.get("/api/auth/me").status_code == 401


def test_cookies_are_secure_only_behind_a_declared_tls_proxy(seeded_store):
    def set_cookie(settings) -> str:
        with TestClient(create_app(settings, seeded_store[0])) as c:
            return _login(c, "ed").headers["set-cookie"]

    assert "secure" not in set_cookie(SimpleNamespace(users=USERS)).lower()
    assert "secure" in set_cookie(SimpleNamespace(users=USERS, trusted_proxies=["10.0.0.0/8"])).lower()


def test_sign_in_is_rate_limited_per_user_and_per_address(seeded_store):
    limiter_app = _app(seeded_store[0], users=USERS)
    with TestClient(limiter_app) as c:
        codes = [_login(c, "ed", "wrong").status_code for _ in range(10)]
        assert codes == [401] * 10
        r = _login(c, "ed", "pw")  # the right password no longer helps: the name is locked for a while
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert _login(c, "vic", "pw").status_code == 303  # another name from the same address still may
        codes = [_login(c, f"nobody{i}", "x").status_code for i in range(19)]
        assert codes == [401] * 19  # 30 attempts from this address so far
        assert _login(c, "ada", "pw").status_code == 429
        assert _login(c, "", token="edit-secret").status_code == 429


def test_login_limiter_memory_is_bounded_and_windows_slide():
    now = [0.0]
    lim = LoginLimiter(per_user=2, per_address=100, window_s=60, max_keys=50, clock=lambda: now[0])
    for i in range(1000):
        lim.attempt(f"u{i}", f"10.0.{i // 250}.{i % 250}")
    assert len(lim) <= 50
    assert lim.attempt("x", "a") == 0 and lim.attempt("x", "b") == 0 and lim.attempt("x", "c") == 60
    now[0] = 61
    assert lim.attempt("x", "d") == 0
    lim.succeeded("x")
    assert lim.attempt("x", "e") == 0


def test_a_flood_of_made_up_names_does_not_restart_the_guessing_of_a_users_password(seeded_store):
    """The per-name windows shared one LRU with every name tried: 10,000 made-up names (from many
    addresses: IPv6 makes them cheap) pushed a real user's window out, and the guessing of their
    password could start again. Played over HTTP with a small LRU (5 keys)."""
    app = _app(seeded_store[0], users=USERS)
    app.state.auth.limiter = LoginLimiter(per_user=3, per_address=10_000, max_keys=5)
    with TestClient(app) as c:
        for _ in range(3):
            assert _login(c, "ada", pw="guess").status_code == 401
        assert _login(c, "ada", pw="guess").status_code == 429
        for i in range(20):
            assert _login(c, f"made-up-{i}", pw="x").status_code == 401
        assert _login(c, "ada", pw="guess").status_code == 429  # before: 401, a fresh window of guesses
        assert _login(c, "made-up-0", pw="x").status_code == 401  # made-up names still come and go
    assert len(app.state.auth.limiter) <= 5 + 1


def test_ipv6_clients_are_limited_per_64_network():
    lim = LoginLimiter(per_user=100, per_address=3, window_s=60, clock=lambda: 0.0)
    for i in range(3):
        assert lim.attempt("", f"2001:db8:1:2::{i + 1:x}") == 0
    assert lim.attempt("", "2001:db8:1:2:ffff:ffff:ffff:ffff") == 60  # before: 0, a budget per address
    assert lim.attempt("", "2001:db8:1:3::1") == 0  # the next /64 is another client
    for _ in range(3):
        assert lim.attempt("", "::ffff:192.0.2.7") == 0
    assert lim.attempt("", "192.0.2.7") == 60  # IPv4-mapped is the IPv4 address


def test_metrics_path_needs_a_token_whenever_one_is_configured(seeded_store):
    store = seeded_store[0]
    with TestClient(_app(store, ingest_tokens=["ingest-1"])) as c:  # pages open (loopback), /metrics not
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=_bearer("wrong")).status_code == 401
        assert c.get("/metrics", headers=_bearer("ingest-1")).status_code != 401
        assert c.get("/services").status_code == 200
    with TestClient(_app(store, api_tokens=TOKENS, ingest_tokens=["ingest-1"])) as c:
        assert c.get("/metrics", follow_redirects=False).status_code == 401
        for secret in ("view-secret", "ingest-1"):
            assert c.get("/metrics", headers=_bearer(secret)).status_code not in (401, 303)
        assert c.get("/healthz").status_code == 200


def test_password_hashing_does_not_stall_other_requests(seeded_store):
    """A deliberately slow hash (~1 s): /healthz sent while a sign-in is hashing answers before it."""
    slow = {"slow": {"password_hash": hash_password("pw", p=16), "role": "viewer"}}
    app = _app(seeded_store[0], users=slow)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        done: dict[str, float] = {}
        with httpx.Client(base_url=base, timeout=30) as c:
            form = c.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]

            def sign_in():
                r = c.post("/login", data={"csrf": csrf, "username": "slow", "password": "pw"})
                done["login"] = time.monotonic()
                done["status"] = r.status_code

            t = threading.Thread(target=sign_in)
            t.start()
            time.sleep(0.3)  # the hash is running
            assert oneshot.get(base + "/healthz", timeout=30).status_code == 200
            done["healthz"] = time.monotonic()
            t.join(30)
        assert done["status"] == 303
        assert done["healthz"] < done["login"], "the event loop waited for the password hash"
    finally:
        server.should_exit = True
        thread.join(10)


def test_rule_previews_run_only_for_editors_and_not_cross_site(seeded_store):
    """A preview runs an editor's rule SQL: a viewer's token and a cross-site call are refused before
    it runs (no engine here: a call that gets through is answered 503 by the route itself)."""
    from tracehouse.alerts import alerts_router
    from tracehouse.dashboard import require_role

    app = create_app(SimpleNamespace(users={}, api_tokens=TOKENS, secret_key="k"), seeded_store[0],
                     routers=[alerts_router(None, require_role)])
    rule = {"alert": "P", "kind": "sql", "sql": "SELECT 1 AS value"}
    with TestClient(app) as c:
        assert c.post("/api/alerts/rules/preview", json=rule, headers=_bearer("view-secret")).status_code == 403
        cross = _bearer("edit-secret") | {"Origin": "http://evil.example"}
        assert c.post("/api/alerts/rules/preview", json=rule, headers=cross).status_code == 403
        assert c.post("/api/alerts/rules/preview", json=rule, headers=_bearer("edit-secret")).status_code == 503



def test_signing_in_again_gives_no_fresh_budget_of_rule_previews(seeded_store):
    """Previews (rule SQL run on demand) are limited per principal: the key was the whole session,
    whose CSRF token and expiry differ at every sign-in, so an editor who signed in again had a
    fresh budget each time (after 5 previews the first session got 429, a second one 503 again:
    through the limiter to the route, which has no engine here)."""
    from tracehouse.alerts import alerts_router
    from tracehouse.dashboard import require_role

    app = create_app(SimpleNamespace(users=USERS, api_tokens=TOKENS, secret_key="k"), seeded_store[0],
                     routers=[alerts_router(None, require_role, previews_per_minute=0.01)])
    rule = {"alert": "P", "kind": "sql", "sql": "SELECT 1 AS value"}
    with TestClient(app) as first, TestClient(app) as second:
        for c in (first, second):
            assert _login(c, "ed").status_code == 303
        hdr = {"x-csrf-token": _csrf(first)}
        codes = [first.post("/api/alerts/rules/preview", json=rule, headers=hdr).status_code for _ in range(6)]
        assert codes == [503] * 5 + [429]
        again = second.post("/api/alerts/rules/preview", json=rule, headers={"x-csrf-token": _csrf(second)})
        assert again.status_code == 429 and int(again.headers["retry-after"]) > 0
        # another principal keeps its own budget
        assert first.post("/api/alerts/rules/preview", json=rule,
                          headers=_bearer("edit-secret")).status_code == 503

def test_a_wrong_password_takes_as_long_for_an_unknown_name_as_for_a_user(seeded_store):
    """The sign-in answer was the same words for both, but an unknown name was answered in ~5 ms (a
    scrypt of n=2^10) and a user's wrong password in ~65 ms (the user's n=2^14 hash): which names are
    users could be read off a stopwatch, before the per-name limit ever applies. Measured over real
    loopback HTTP, interleaved, medians of five."""
    from testkit.servers import serving

    users = {"alice": {"password_hash": hash_password("right"), "role": "viewer"}}  # the default cost
    with serving(_app(seeded_store[0], users=users)) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        def attempt(name: str) -> float:
            csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
            t0 = time.perf_counter()
            r = c.post("/login", data={"csrf": csrf, "username": name, "password": "wrong", "next": "/"})
            took = time.perf_counter() - t0
            assert r.status_code == 401 and "Unknown user or wrong password." in r.text
            return took

        known, unknown = [], []
        for i in range(5):
            known.append(attempt("alice"))
            unknown.append(attempt(f"nobody{i}"))
        k, u = sorted(known)[2], sorted(unknown)[2]
        assert 0.5 < u / k < 2, f"known user {k * 1000:.1f} ms, unknown name {u * 1000:.1f} ms"


def test_sign_in_attempts_keep_no_copy_of_the_names_tried(seeded_store):
    """The limiter kept every user name tried, whole, as a key of its LRU (up to 10,000 keys, which
    no window ever removes): a name is as long as the 1 MiB body allows, so 30 sign-ins from one
    address (its limit per 5 minutes) held 15 MiB and the LRU up to ~10 GiB, without signing in.
    Played over real loopback HTTP; the keys are now a fixed-size digest of the name."""
    import sys

    from testkit.servers import serving

    app = _app(seeded_store[0], users=USERS)
    with serving(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        for i in range(30):
            csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
            r = c.post("/login", data={"csrf": csrf, "username": f"{i:04d}" + "x" * 500_000, "password": "p"})
            assert r.status_code == 401
    keys = app.state.auth.limiter._keys  # the limiter's own LRU: what it holds for these attempts
    held = sum(sys.getsizeof(part) for key in keys for part in key)
    assert len(keys) == 31 and held < 31 * 1024, f"{held / 2**20:.1f} MiB held for {len(keys)} keys"


def test_a_silence_is_recorded_as_made_by_who_is_signed_in(seeded_store):
    """createdBy was the body's free text: an editor could record a silence as made by the admin."""
    from tracehouse.alerts import Engine, alerts_router, build_config
    from tracehouse.dashboard import require_role

    engine = Engine(seeded_store[0], build_config([]))
    app = create_app(SimpleNamespace(users=USERS, api_tokens=TOKENS, secret_key="k"), seeded_store[0],
                     routers=[alerts_router(engine, require_role)])
    silence = {"matchers": [{"name": "service", "value": "orders"}], "endsAt": "2099-01-01T00:00:00Z",
               "createdBy": "ada", "comment": "deploy"}
    with TestClient(app) as c:
        assert _login(c, "ed").status_code == 303
        r = c.post("/api/alerts/silences", json=silence, headers={"X-CSRF-Token": _csrf(c)})
        assert r.status_code == 201, r.text
        assert r.json()["createdBy"] == "ed"
    with TestClient(app) as c:  # no session: the token alone
        by_token = c.post("/api/alerts/silences", json=silence, headers=_bearer("edit-secret")).json()
        assert by_token["createdBy"] == "token:ed"
        assert sorted(s["createdBy"] for s in c.get("/api/alerts/silences", headers=_bearer("view-secret"))
                      .json()["silences"]) == ["ed", "token:ed"]
