"""The dashboard while its ClickHouse server hangs (SIGSTOP), on a private real clickhouse-server
started and resumed by its pid, over real HTTP: /readyz and the API answer 503 within a bounded
time (the query's time limit and a margin, not the driver's 60 s receive timeout), and answer
again by themselves once the server does."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import httpx

from testkit import servers
from testkit.servers import serving
from tests.support import hung_store, oneshot
from tests.support.waiting import wait_for
from tracehouse.alerts import Engine, alerts_router, build_config
from tracehouse.dashboard import require_role
from tracehouse.dashboard.app import create_app
from tracehouse.dashboard.auth import hash_password
from tracehouse.storage.limits import QueryLimits

clickhouse, hang, outage_store = hung_store.clickhouse, hung_store.hang, hung_store.outage_store


def _timed_get(client, url: str, timeout: float) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = client.get(url, timeout=timeout)
    return r, time.monotonic() - t0


def test_readyz_and_the_api_answer_503_soon_while_the_store_hangs(outage_store, hang):
    # a page's query: 2 s; waited for: the limit and a 5 s margin, in all
    outage_store.limits = QueryLimits(timeout_s=2)
    with serving(create_app(None, outage_store)) as port:
        base = f"http://127.0.0.1:{port}"
        assert oneshot.get(base + "/readyz", timeout=10).status_code == 200
        assert oneshot.get(base + "/api/services", timeout=10).status_code == 200  # a pooled connection now
        hang()
        r, took = _timed_get(httpx, base + "/readyz", timeout=15)
        assert r.status_code == 503 and "store unreachable" in r.text
        assert took < 6, f"/readyz took {took:.1f} s"
        r, took = _timed_get(httpx, base + "/api/services", timeout=20)
        assert r.status_code == 503 and r.json()["error"] == "storage unavailable"
        assert r.headers["retry-after"] == "5"
        assert took < 16, f"/api/services took {took:.1f} s"
        hang.resume()
        wait_for(lambda: oneshot.get(base + "/readyz", timeout=10).status_code == 200, 15, what="ready again")
        assert oneshot.get(base + "/api/services", timeout=10).status_code == 200


def _signed_in(base: str) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=15)
    csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
    assert c.post("/login", data={"csrf": csrf, "username": "ed", "password": "pw", "next": "/"}).status_code == 303
    return c


def test_signed_in_requests_do_not_wait_for_the_sign_out_list_of_a_hung_store(outage_store, hang):
    settings = SimpleNamespace(users={"ed": {"password_hash": hash_password("pw", n=2**10), "role": "editor"}},
                               api_tokens=[], secret_key="k")
    with serving(create_app(settings, outage_store)) as port:
        c = _signed_in(f"http://127.0.0.1:{port}")
        assert c.get("/api/auth/me").json() == {"name": "ed", "role": "editor"}
        hang()
        time.sleep(2.2)  # the list of sign-outs is due to be read again (every 2 s)
        for _ in range(2):
            r, took = _timed_get(c, "/api/auth/me", timeout=10)
            assert r.status_code == 200 and took < 3, f"/api/auth/me: {r.status_code} in {took:.1f} s"
        hang.resume()
        r = c.get("/api/auth/me")
        assert r.status_code == 200
        # signed out while the store answers again: refused
        csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/alerts").text)[1]
        kept = c.cookies.get("th_session")
        assert c.post("/logout", data={"csrf": csrf}).status_code == 303
        assert oneshot.get(f"http://127.0.0.1:{port}/api/auth/me", cookies={"th_session": kept}).status_code == 401
        c.close()


def test_a_rule_preview_while_the_store_is_down_answers_503_and_works_when_it_returns(outage_store, clickhouse):
    engine = Engine(outage_store, build_config([]))
    app = create_app(None, outage_store, alerts=engine, routers=[alerts_router(engine, require_role)])
    rule = {"alert": "CartSilent", "kind": "absence", "service": "cart", "window": "1m"}
    with serving(app) as port:
        preview = f"http://127.0.0.1:{port}/api/alerts/rules/preview"
        assert oneshot.post(preview, json=rule, timeout=15).status_code == 200
        clickhouse.stop()
        r = oneshot.post(preview, json=rule, timeout=15)
        assert r.status_code == 503 and r.headers["retry-after"] == "5"  # not 400: the rule is fine
        assert r.json()["error"].startswith("storage unavailable (error id ")
        restarted = servers.restart_clickhouse(clickhouse)
        clickhouse.pid = restarted.pid  # the module's fixture stops the restarted server
        wait_for(lambda: oneshot.post(preview, json=rule, timeout=15).status_code == 200, 20, what="previews again")


def test_a_silence_made_while_the_store_hangs_answers_503_soon_and_works_when_it_returns(outage_store, hang):
    # a small write: 1 s here; waited for: the limit and a 5 s margin, in all
    outage_store.SMALL_WRITE_TIMEOUT_S = 1
    engine = Engine(outage_store, build_config([]))
    app = create_app(None, outage_store, alerts=engine, routers=[alerts_router(engine, require_role)])
    silence = {"matchers": [{"name": "service", "value": "cart"}], "duration": "1h", "comment": "deploy"}
    with serving(app) as port:
        silences = f"http://127.0.0.1:{port}/api/alerts/silences"
        assert oneshot.post(silences, json=silence, timeout=15).status_code == 201
        hang()
        t0 = time.monotonic()
        r = oneshot.post(silences, json=silence, timeout=20)
        took = time.monotonic() - t0
        assert r.status_code == 503 and r.json()["error"] == "storage unavailable"
        assert took < 15, f"the silence took {took:.1f} s"
        hang.resume()
        assert oneshot.post(silences, json=silence, timeout=15).status_code == 201
        assert len(oneshot.get(silences, timeout=15).json()["silences"]) == 2


def test_the_alert_history_while_the_store_hangs_answers_503_soon(outage_store, hang):
    # a read of the small tables: 1 s here; waited for: the limit and 5 s, in all
    outage_store.SMALL_READ_TIMEOUT_S = 1
    engine = Engine(outage_store, build_config([]))
    app = create_app(None, outage_store, alerts=engine, routers=[alerts_router(engine, require_role)])
    with serving(app) as port:
        history = f"http://127.0.0.1:{port}/api/alerts/history"
        assert oneshot.get(history, timeout=15).status_code == 200
        hang()
        r, took = _timed_get(httpx, history, timeout=20)
        assert r.status_code == 503 and r.json()["error"] == "storage unavailable"
        assert took < 15, f"the history took {took:.1f} s"
        hang.resume()
        assert oneshot.get(history, timeout=15).status_code == 200


def test_page_queries_on_a_hung_store_answer_503_within_their_limit_and_the_margin(outage_store, hang):
    """Each pooled call is bounded as a whole: the ping of a pooled connection, a reconnection's hello
    and the wait for a free connection all count against the query's limit and the margin, so that
    more requests than pooled connections, on connections made before the hang, all answer in time."""
    from concurrent.futures import ThreadPoolExecutor

    from tracehouse.storage.server_backend import ANSWER_MARGIN_S

    outage_store.limits = QueryLimits(timeout_s=2)
    bound = 2 + ANSWER_MARGIN_S + 1.5  # the limit, the margin, and HTTP and scheduling on a busy machine
    # six turns at the store for this one client at once (the dashboard's fairness gives a client 2
    # by default and queues the rest): the pooled calls' own bound is what is measured here
    fair = SimpleNamespace(dashboard_running_per_client=6, dashboard_max_running=6)
    with serving(create_app(fair, outage_store)) as port:
        url = f"http://127.0.0.1:{port}/api/services"
        with ThreadPoolExecutor(6) as pool:  # every pooled connection made and kept (4), before the hang
            assert [r.status_code for r in pool.map(lambda _: oneshot.get(url, timeout=15), range(6))] == [200] * 6
        hang()
        with ThreadPoolExecutor(6) as pool:  # more requests than pooled connections
            answers = list(pool.map(lambda _: _timed_get(httpx, url, timeout=30), range(6)))
        print("answered in", sorted(round(t, 1) for _, t in answers), "s")
        for r, took in answers:
            assert r.status_code == 503 and r.json()["error"] == "storage unavailable"
            assert took < bound, f"/api/services took {took:.1f} s: {sorted(round(t, 1) for _, t in answers)}"
        hang.resume()
        wait_for(lambda: oneshot.get(url, timeout=10).status_code == 200, 15, what="the API answering again")


def test_a_sign_out_while_the_store_hangs_answers_soon_clears_the_cookie_and_reaches_the_store_later(
        outage_store, hang):
    from tracehouse.storage.queries_sessions import ended_sessions

    settings = SimpleNamespace(users={"ed": {"password_hash": hash_password("pw", n=2**10), "role": "editor"}},
                               api_tokens=[], secret_key="k")
    app = create_app(settings, outage_store)
    other = create_app(settings, outage_store)  # another replica on the same store
    with serving(app) as port, serving(other) as other_port:
        c = _signed_in(f"http://127.0.0.1:{port}")
        kept = c.cookies.get("th_session")
        csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/alerts").text)[1]
        elsewhere = f"http://127.0.0.1:{other_port}/api/auth/me"
        assert oneshot.get(elsewhere, cookies={"th_session": kept}, timeout=10).status_code == 200
        hang()
        t0 = time.monotonic()
        r = c.post("/logout", data={"csrf": csrf}, timeout=30)
        took = time.monotonic() - t0
        print(f"/logout on the hung store answered in {took:.1f} s")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert 'th_session=""' in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
        assert took < 4, f"/logout took {took:.1f} s"
        # this process refuses the session at once; the store did not take it: counted
        assert oneshot.get(f"http://127.0.0.1:{port}/api/auth/me", cookies={"th_session": kept}).status_code == 401
        assert app.state.metrics.signouts_unrecorded._value.get() == 1
        assert app.state.auth.shared_signouts.pending() == 1
        hang.resume()
        # written once the store answers again (by the write under way, or with the next read of the list)
        wait_for(lambda: (c.get("/api/auth/me"), app.state.auth.shared_signouts.pending() == 0)[1], 30,
                 what="the kept sign-out written to the store")
        assert len(ended_sessions(outage_store, int(time.time()))) == 1
        wait_for(lambda: oneshot.get(elsewhere, cookies={"th_session": kept}, timeout=10).status_code == 401, 10,
                 what="the other replica refusing the signed-out session")
        c.close()


def _signouts_settings(tmp_path):
    return SimpleNamespace(users={"ed": {"password_hash": hash_password("pw", n=2**10), "role": "editor"}},
                           api_tokens=[], secret_key="k", dashboard_dir=str(tmp_path / "dashboard"))


def test_a_sign_out_the_store_did_not_take_is_refused_after_a_restart_and_written_in_the_background(
        outage_store, clickhouse, tmp_path):
    """Signed out while the store is down: the sign-out waits in the dashboard's data directory, so a
    process started again (a second app on the same directory and store) refuses the cookie before
    the store is back, and writes the sign-out to the store by itself once it is (no request needed),
    leaving no file."""
    import os

    from tracehouse.dashboard.app import SIGNOUTS_FILE
    from tracehouse.storage.queries_sessions import ended_sessions

    settings = _signouts_settings(tmp_path)
    app = create_app(settings, outage_store)
    with serving(app) as port:
        c = _signed_in(f"http://127.0.0.1:{port}")
        kept = c.cookies.get("th_session")
        csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/alerts").text)[1]
        clickhouse.stop()
        r = c.post("/logout", data={"csrf": csrf}, timeout=30)
        assert r.status_code == 303 and app.state.auth.shared_signouts.pending() == 1
        c.close()
    app.state.auth.shared_signouts.close()  # the process ends (its shutdown handler)
    assert os.path.exists(os.path.join(settings.dashboard_dir, SIGNOUTS_FILE))
    again = create_app(settings, outage_store)  # started again while the store is still down
    signouts = again.state.auth.shared_signouts
    try:
        with serving(again) as port:
            r = oneshot.get(f"http://127.0.0.1:{port}/api/auth/me", cookies={"th_session": kept}, timeout=15)
            assert r.status_code == 401, "a signed-out cookie works again after a restart"
            restarted = servers.restart_clickhouse(clickhouse)
            clickhouse.pid = restarted.pid  # the module's fixture stops the restarted server
            signouts.retry_s = 0.2
            # no request comes: the background retries write it
            wait_for(lambda: signouts.pending() == 0, 30, what="the kept sign-out written in the background")
            assert len(ended_sessions(outage_store, int(time.time()))) == 1
            assert os.listdir(settings.dashboard_dir) == []
    finally:
        signouts.close()
    third = create_app(_signouts_settings(tmp_path / "elsewhere"), outage_store)  # from the store now
    with serving(third) as port:
        assert oneshot.get(f"http://127.0.0.1:{port}/api/auth/me", cookies={"th_session": kept},
                         timeout=15).status_code == 401


def test_sign_outs_the_store_did_not_take_are_written_in_the_background_without_requests(outage_store, clickhouse):
    settings = SimpleNamespace(users={"ed": {"password_hash": hash_password("pw", n=2**10), "role": "editor"}},
                               api_tokens=[], secret_key="k")
    app = create_app(settings, outage_store)
    signouts = app.state.auth.shared_signouts
    signouts.retry_s = 0.2
    try:
        with serving(app) as port:
            c = _signed_in(f"http://127.0.0.1:{port}")
            csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/alerts").text)[1]
            clickhouse.stop()
            assert c.post("/logout", data={"csrf": csrf}, timeout=30).status_code == 303
            assert signouts.pending() == 1
            c.close()
            restarted = servers.restart_clickhouse(clickhouse)
            clickhouse.pid = restarted.pid  # the module's fixture stops the restarted server
            wait_for(lambda: signouts.pending() == 0, 30, what="the kept sign-out written without any request")
    finally:
        signouts.close()


def test_a_hostile_file_of_sign_outs_is_read_safely(tmp_path):
    import json

    from tracehouse.dashboard.signouts import SignOuts, session_digest

    path = tmp_path / "signouts.json"
    good, now = session_digest("s1"), int(time.time())
    path.write_text(json.dumps({"format": 1, "signouts": {
        good: now + 3600, session_digest("old"): now - 10, "<script>": now + 3600, "a" * 32: "soon",
        "b" * 32: -1, "c" * 32: 2**40}}))
    s = SignOuts(None, path=str(path), retry_s=3600)
    s.close()
    assert s.pending() == 1 and s.ended("s1") and not s.ended("old")
    assert json.loads(path.read_text())["signouts"] == {good: now + 3600}  # rewritten without the rest
    for junk in (b"\xff not json", b"[1]", b'{"format": 2, "signouts": {}}', b"[" * 100_000, b" " * (2 << 20)):
        path.write_bytes(junk)
        s = SignOuts(None, path=str(path), retry_s=3600)
        s.close()
        assert s.pending() == 0 and path.read_bytes() == junk  # ignored, left for inspection


def test_the_storage_api_answers_503_soon_while_the_store_hangs(outage_store, hang):
    """``GET /api/storage`` reads without a statement time limit (parts, settings, versions): each
    such call ends within the ping and a reconnection's connect and hello, not their 60 s receive
    timeout (65 s before)."""
    with serving(create_app(None, outage_store)) as port:
        url = f"http://127.0.0.1:{port}/api/storage"
        assert oneshot.get(url, timeout=30).status_code == 200
        hang()
        r, took = _timed_get(httpx, url, timeout=120)
        print(f"/api/storage on the hung store answered in {took:.1f} s")
        assert r.status_code == 503 and r.json()["error"] == "storage unavailable"
        assert took < 16, f"/api/storage took {took:.1f} s"
        hang.resume()
        wait_for(lambda: oneshot.get(url, timeout=30).status_code == 200, 30, what="the storage API answering again")
