"""Every error under /api answers ``{"error": reason}`` (and ``error_id`` where the log has more), the
alerts API, unknown routes and methods and unreadable parameters included: FastAPI's own answers
were ``{"detail": ...}`` (a list, with 422, for a bad parameter type). Pages answer an HTML page.
A trailing-slash redirect names no host: Starlette's was built from the request's Host header."""

from __future__ import annotations

import http.client
from types import SimpleNamespace

from fastapi.testclient import TestClient

from testkit.servers import serving
from tracehouse.alerts import alerts_router
from tracehouse.dashboard import create_app


def _app(store):
    return create_app(SimpleNamespace(users={}, api_tokens=[]), store, routers=[alerts_router(None)])


def test_api_errors_have_one_shape(chdb_store):
    with TestClient(_app(chdb_store), raise_server_exceptions=False) as c:
        cases = [("GET", "/api/no-such-route", None, 404), ("POST", "/api/services", {}, 405),
                 ("GET", "/api/snapshots?limit=abc", None, 400), ("GET", "/api/snapshots?limit=1e99", None, 400),
                 ("GET", "/api/alerts", None, 503), ("POST", "/api/alerts/rules", [], 400),
                 ("GET", "/api/traces?limit=0", None, 400), ("GET", "/api/snapshots/nope", None, 404),
                 ("DELETE", "/api/logs/search", None, 405)]
        for method, path, body, status in cases:
            r = c.request(method, path, json=body)
            assert r.status_code == status, (method, path, r.status_code, r.text)
            got = r.json()
            assert set(got) <= {"error", "error_id"} and isinstance(got["error"], str) and got["error"], (path, got)
        r = c.get("/api/snapshots", params={"limit": "abc"})
        assert "limit" in r.json()["error"] and "integer" in r.json()["error"]
        assert c.post("/api/services", json={}).headers["allow"] == "GET"
        assert c.get("/api/alerts").json() == {"error": "the alert engine is not running"}
        doc = c.get("/api/openapi.json")
        assert '"422"' not in doc.text and "ValidationError" not in doc.text  # FastAPI's, not what is answered
        assert doc.json()["paths"]["/api/snapshots"]["get"]["responses"]["400"]["content"]["application/json"] == {
            "schema": {"$ref": "#/components/schemas/Error"}}
        page = c.get("/no-such-page")
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html") and "Error 404" in page.text


def _raw_get(port: int, target: str, host: str) -> tuple[int, dict[str, str]]:
    """``GET target`` as sent, with this Host header (no client rewrites either)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def test_a_trailing_slash_redirect_names_no_host(chdb_store):
    with serving(_app(chdb_store)) as port:
        for target, location in (("/api/services/", "/api/services"), ("/logs/?since=1h&q=a%20b", "/logs?since=1h&q=a%20b"),
                                 ("/services/a%2Fb/operations/", None)):
            status, headers = _raw_get(port, target, "evil.example")
            if location is None:
                assert "location" not in headers or "evil" not in headers["location"], (target, headers)
                continue
            assert (status, headers.get("location")) == (307, location), (target, status, headers)
        for target in ("//evil.example/", "//evil.example/services/", "/\\evil.example/"):
            status, headers = _raw_get(port, target, "127.0.0.1")
            loc = headers.get("location", "")
            assert not loc.startswith(("//", "/\\", "http")), (target, status, loc)
