"""Every route of the JSON API that takes a body, hostile bodies: each answer is a 4xx with a reason,
never a 500, and nothing a refused body held can break a later answer. Found this way, once: a
rule holding a ``\\ud800`` escape (a lone surrogate) was stored, and from then on every listing
of the rules answered 500; a body nested 10,000 deep answered 500 (``RecursionError``) on the
snapshot and retention routes; and after any 500 the server closed the kept-alive connection
without saying so, so the client's next request on it failed."""

from __future__ import annotations

import http.client
from types import SimpleNamespace

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from testkit.servers import serving
from tracehouse.alerts import Engine, alerts_router
from tracehouse.alerts.rules import RuleError, parse_rule
from tracehouse.alerts.silences import parse_silence
from tracehouse.dashboard import create_app, require_role

SURROGATE = "\\ud800"  # as JSON text: the escape, not a character
RULE = ('{"alert": "Fz", "kind": "red", "service": "payments", "signal": "error_rate", "window": "1m", '
        '"op": ">", "threshold": 0.5, "labels": {"severity": "page"}, "annotations": {"summary": "s"}}')
SILENCE = '{"matchers": [{"name": "service", "value": "payments"}], "duration": "1h", "comment": "c"}'
ROUTES = [("POST", "/api/alerts/rules", RULE), ("PUT", "/api/alerts/rules/fz", RULE),
          ("POST", "/api/alerts/rules/preview", RULE), ("POST", "/api/alerts/silences", SILENCE),
          ("POST", "/api/snapshots", '{"service": "payments", "kind": "threads", "reason": "r"}'),
          ("PUT", "/api/storage/retention", '{"spans": 7}')]


def _app(store):
    engine = Engine(store)
    return create_app(SimpleNamespace(users={}, api_tokens=[]), store, alerts=engine,
                      routers=[alerts_router(engine, require_role, previews_per_minute=10_000)])


def _surrogate_variants(body: str) -> list[str]:
    """``body`` with a lone surrogate put into each of its string values, and into one key."""
    out, i = [], body.find(': "')
    while i != -1:
        out.append(body[:i + 3] + SURROGATE + body[i + 3:])
        i = body.find(': "', i + 1)
    return [*out, body.replace('{"', '{"' + SURROGATE, 1)]


def test_no_body_makes_the_api_answer_500_or_breaks_a_later_answer(chdb_store):
    hostile = ['{"a": ' * 10_000 + "1" + "}" * 10_000, "[" * 100_000, "", "null", "[]", '"x"', "1e999",
               '{"a": NaN}', '{"a": "\\udc00\\ud800"}']
    failures, sent = [], 0
    with TestClient(_app(chdb_store), raise_server_exceptions=False) as c:
        for method, path, body in ROUTES:
            for text in [*hostile, *_surrogate_variants(body), body.replace("a", "\udcff", 1)]:
                # the last: a byte that is not UTF-8 (0xff, carried by surrogateescape) in a text
                r = c.request(method, path, content=text.encode("utf-8", "surrogateescape"),
                              headers={"content-type": "application/json"})
                sent += 1
                if r.status_code >= 500 or (SURROGATE in text and r.status_code < 400):
                    failures.append((method, path, text[:60], r.status_code, r.text[:120]))
            r = c.request(method, path, content=body, headers={"content-type": "text/plain"})
            assert r.status_code == 415 and "application/json" in r.text, (path, r.status_code, r.text)
            r = c.request(method, path, content=body, headers={"content-type": "application/json; charset=utf-8"})
            assert r.status_code < 500 and r.status_code != 415, (path, r.status_code, r.text)
        for path in ("/api/alerts/rules", "/api/alerts/silences", "/api/alerts", "/api/snapshots"):
            assert c.get(path).status_code == 200, path
    assert sent > 90
    assert failures == []


@pytest.mark.parametrize("where", ["service", "labels", "filter key", "group_by"])
def test_a_rule_file_with_a_lone_surrogate_is_refused_with_its_place(where):
    bad = "\ud800"
    rule = {"alert": "Fz", "kind": "red", "signal": "error_rate", "service": "payments",
            "labels": {"severity": "page"}, "annotations": {"summary": "s"}}
    if where == "service":
        rule["service"] = bad
    elif where == "labels":
        rule["labels"] = {"severity": bad}
    elif where == "filter key":
        rule["filters"] = {bad: "x"}
    else:
        rule["group_by"] = [bad]
    with pytest.raises(RuleError, match="lone surrogate"):
        parse_rule(rule)
    with pytest.raises(RuleError, match="lone surrogate"):
        parse_silence({"matchers": [{"name": "service", "value": bad}]}, 0)


def test_an_answer_to_a_bug_closes_its_connection_and_says_so(chdb_store):
    """A bug is answered 500 with an error id, then Starlette re-raises it and uvicorn closes the
    connection: the answer says ``Connection: close`` (JSON and pages alike), so a client that keeps
    connections alive opens a new one instead of sending its next request into the close."""
    boom = APIRouter()

    @boom.get("/api/boom")
    @boom.get("/boom")
    def _boom():
        raise RuntimeError("a bug")

    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store, routers=[boom])
    with serving(app) as port:
        for path in ("/api/boom", "/boom"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", path)
                r = conn.getresponse()
                r.read()
                assert r.status == 500 and (r.getheader("connection") or "").lower() == "close", path
                conn.request("GET", "/healthz")  # http.client opens a new connection after a close
                ok = conn.getresponse()
                assert ok.status == 200 and ok.read()
            finally:
                conn.close()
