"""Every GET route of the JSON API, every query and path parameter, hostile values: each answer is
an answer (2xx, 3xx or 4xx with a reason), never a 500 and never a dropped connection. Found this
way, once: ``until=0`` reached the store as a negative time and answered 500."""

from __future__ import annotations

import time
import urllib.parse
from types import SimpleNamespace

from fastapi.testclient import TestClient

from testkit.spangen import Gen, generate
from tracehouse.dashboard import create_app

NS = 1_000_000_000
HOSTILE = ["", " ", "-1", "0", "999999999999999999999999", "1e308", "NaN", "-inf", "'", "\\", "\x00", "a" * 3000,
           "' OR 1=1 --", "{{7*7}}", "<script>x</script>", "\U0001F600", "2026-13-45T99:99:99Z", "9999999d", "-5m",
           "now-1h", "[]", "a=b", "0" * 32, "zz" * 16, "1960-01-01T00:00:00Z", "2200-01-01T00:00:00Z"]


def test_no_parameter_value_makes_the_api_answer_500(chdb_store):
    now = time.time_ns()
    cols, tids = generate(300, now - 300 * NS, 290 * NS, Gen(error_rate=0.2), store=chdb_store)
    chdb_store.insert("spans", cols)
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)
    known = {"trace_id": tids[0].hex(), "span_id": "0123456789abcdef", "service": "orders", "sid": "x",
             "rule_id": "x", "request_id": "x"}
    failures, sent = [], 0
    with TestClient(app, raise_server_exceptions=False) as c:
        spec = c.get("/api/openapi.json").json()
        for template, item in spec["paths"].items():
            params = (item.get("get") or {}).get("parameters", [])
            if "get" not in item:
                continue
            path_params = [p["name"] for p in params if p["in"] == "path"]
            base = template
            for name in path_params:
                base = base.replace("{" + name + "}", urllib.parse.quote(known.get(name, "x"), safe=""))
            targets = [(base, {})]
            targets += [(base, {p["name"]: v}) for p in params if p["in"] == "query" for v in HOSTILE]
            for name in path_params:
                for v in HOSTILE:
                    path = template
                    for other in path_params:
                        value = v if other == name else known.get(other, "x")
                        path = path.replace("{" + other + "}", urllib.parse.quote(value, safe="") or "%20")
                    targets.append((path, {}))
            for path, query in targets:
                r = c.get(path, params=query)
                sent += 1
                if r.status_code >= 500:
                    failures.append((path[:80], {k: v[:30] for k, v in query.items()}, r.status_code, r.text[:120]))
    assert sent > 1000
    assert failures == []


def test_numbers_int_cannot_read_are_bad_parameters_not_500s(chdb_store):
    """``str.isdigit`` admits ``²`` (and ``int()`` refuses more than 4,300 digits): a time, step,
    severity, limit or snapshot id made of them answered 500 on the API and on pages."""
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)
    odd = ["\u00b2", "1\u00b3", "9" * 5000]
    routes = [("/api/services", "since"), ("/api/services", "until"), ("/api/services/x/series", "step"),
              ("/api/metrics", "step"), ("/api/logs", "severity"), ("/api/logs/volume", "step"),
              ("/services", "since"), ("/logs", "severity"), ("/logs", "limit"), ("/explore", "step")]
    extra = {"/api/metrics": {"name": "x"}, "/explore": {"metric": "x"}}
    with TestClient(app, raise_server_exceptions=False) as c:
        answers = [(path, name, v[:5], c.get(path, params={name: v, **extra.get(path, {})}).status_code)
                   for path, name in routes for v in odd]
        answers += [("/snapshots/" + v, "", "", c.get("/snapshots/" + urllib.parse.quote(v + "-x")).status_code)
                    for v in odd]
    assert [a for a in answers if a[3] >= 500] == []
    assert all(a[3] in (400, 404) for a in answers if a[0].startswith("/api")), answers


def test_a_step_longer_than_any_range_is_refused_not_wrapped(chdb_store):
    """Steps reach SQL as UInt32 seconds: step=5000000000 wrapped round to 705 032 704 s and the
    series answered 200 with its one bucket at 2014, outside the range asked."""
    now = time.time_ns()
    cols, _ = generate(50, now - 300 * NS, 290 * NS, Gen(), store=chdb_store)
    chdb_store.insert("spans", cols)
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)
    with TestClient(app, raise_server_exceptions=False) as c:
        for path, extra in (("/api/services/orders/series", {}), ("/api/metrics", {"name": "x"}),
                            ("/api/logs/volume", {}), ("/api/metrics/explore", {"metric": "x"})):
            r = c.get(path, params={"step": "5000000000", "since": "1h", **extra})
            assert r.status_code == 400, (path, r.status_code, r.text[:200])
            assert "step" in r.json()["error"]
        assert c.get("/api/services/orders/series", params={"step": "400d", "since": "1h"}).status_code == 200


def test_a_duration_too_long_for_a_float_is_a_bad_parameter_not_a_500(chdb_store):
    """``since=1000…0d`` (a 1 and 400 zeros) read as an infinite float of seconds: converting it to
    nanoseconds raised OverflowError, and the API, the pages and the step of every chart answered 500
    (``internal error``) with a traceback in the log. Now 400 with a reason."""
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)
    huge = ["1" + "0" * 400 + "d", "9" * 310 + "s", "now-" + "9" * 400 + "w"]
    routes = [("/api/services", "since"), ("/api/services", "until"), ("/api/traces", "since"),
              ("/api/services/x/series", "step"), ("/api/metrics", "step"), ("/api/logs/volume", "step"),
              ("/api/metrics/explore", "step"), ("/services", "since"), ("/traces", "since"), ("/explore", "step")]
    extra = {"/api/metrics": {"name": "x"}, "/api/metrics/explore": {"metric": "x"}, "/explore": {"metric": "x"}}
    with TestClient(app, raise_server_exceptions=False) as c:
        answers = [(path, name, v[:8], c.get(path, params={name: v, **extra.get(path, {})}).status_code)
                   for path, name in routes for v in huge]
    assert [a for a in answers if a[3] != 400] == []
