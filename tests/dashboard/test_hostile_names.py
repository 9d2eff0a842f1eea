"""Names that ingest clients choose (service names; snapshot ids carry them) and rules files choose
(rule ids) reach the dashboard in paths. Found by sending such names through a running server, once:
a newline in a name made its page answer 404 (and ``/services/x%0A`` opened service ``x``); "." and
".." were linked as ``/services/.`` and ``/services/..``, which browsers resolve to ``/services/`` and
``/``; the range form re-requested the *decoded* path (``a%2Fb`` became ``a/b``, ``%41`` became
``A``), and so did the login redirect; ``/api/services/slash%2Fsvc/operations`` answered 404."""

from __future__ import annotations

import html
import http.client
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from urllib.parse import quote, urlencode

import pytest

from testkit.seed import NS, log_row, snapshot_records, span_row
from testkit.servers import serving
from tracehouse.alerts import Engine, alerts_router, build_config
from tracehouse.dashboard import create_app

NAMES = ["new\nline", "trail\n", ".", "..", "a?b=1&c=2", "a#frag", "a%2Fb", "%00", "%41", "nul\x00",
         "slash/svc", "x/operations", "x/series", "plain"]


@pytest.fixture
def names_store(chdb_store):
    """Each name a service with one entry span (operation "op <name>"), a log line and a snapshot."""
    now = time.time_ns()
    spans, logs = chdb_store.columns_for("spans"), chdb_store.columns_for("logs")
    for i, name in enumerate(NAMES):
        span_row(spans, os.urandom(16), os.urandom(8), b"\x00" * 8, name, "op " + name, now - (60 + i) * NS,
                 5_000_000, {})
        log_row(logs, now - (30 + i) * NS, name, "", "hello from " + name, {})
    chdb_store.insert("spans", spans)
    chdb_store.insert("logs", logs)
    sids = {name: snapshot_records(chdb_store, now - i * NS, name, ['{"kind": "threads", "threads": []}'])[0]
            for i, name in enumerate(NAMES)}
    return chdb_store, sids


class _Client:
    """GETs to a real uvicorn, each path sent as given: Starlette's TestClient decodes a path twice
    (``%2541`` arrives as ``A``) and httpx drops "." and ".." segments."""

    def __init__(self, port: int):
        self.port = port

    def get(self, target: str, params: dict[str, str] | None = None) -> SimpleNamespace:
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", target)
            r = conn.getresponse()
            text = r.read().decode()
            return SimpleNamespace(status_code=r.status, headers=r.headers, text=text, json=lambda: json.loads(text))
        finally:
            conn.close()


@contextmanager
def _client(store, settings=None, **kw) -> Iterator[_Client]:
    with serving(create_app(settings or SimpleNamespace(users={}, api_tokens=[]), store, **kw)) as port:
        yield _Client(port)


def _h1_service(body: str) -> str:
    return html.unescape(re.search(r'class="crumb">Services</a> / (.*?)</h1>', body, re.S)[1])


def test_the_path_forms_of_service_and_snapshot_pages_take_any_name(names_store):
    """``/services/<name>`` keeps working (for "." and ".." only where no browser resolves it)."""
    store, sids = names_store
    with _client(store) as c:
        for name in NAMES:
            r = c.get("/services/" + quote(name, safe="") + "?since=1h")
            assert r.status_code == 200 and _h1_service(r.text) == name, (name, r.status_code, r.text[:200])
            r = c.get("/snapshots/" + quote(sids[name], safe=""))
            assert r.status_code == 200 and f"/ {html.escape(name)} ·" in r.text, (name, r.status_code)


@pytest.mark.parametrize("name", NAMES)
def test_the_service_api_routes_take_any_name(names_store, name):
    """Rule: ``/api/services/<name>/operations`` and ``/series``: the last segment picks the route and
    everything between ``/api/services/`` and it is the name, so a name may contain "/" (sent as %2F
    or not) and may itself end in "/operations"."""
    store, _ = names_store
    with _client(store) as c:
        base = "/api/services/" + quote(name, safe="")
        r = c.get(base + "/operations", params={"since": "1h"})
        assert r.status_code == 200 and r.json()["service"] == name, (r.status_code, r.text[:200])
        assert [o["operation"] for o in r.json()["operations"]] == ["op " + name]
        r = c.get(base + "/series", params={"since": "1h"})
        assert r.status_code == 200 and r.json()["service"] == name, (r.status_code, r.text[:200])
        assert sum(p["requests"] for p in r.json()["points"]) == 1


RULE_IDS = ["new\nrule", "r%2Fx", "trail\n"]


def _engine(store) -> Engine:
    """Rules whose ids (free text in a rules file) are hostile names."""
    rules = [{"alert": f"A{i}", "id": rid, "kind": "red", "service": "plain", "signal": "rate", "window": "15m",
              "threshold": 0} for i, rid in enumerate(RULE_IDS)]
    return Engine(store, build_config([("/etc/tracehouse/rules.yaml", {"groups": [{"name": "g", "rules": rules}]})]))


def test_rule_pages_and_api_take_any_rule_id(names_store):
    store, _ = names_store
    engine = _engine(store)
    with _client(store, alerts=engine, routers=[alerts_router(engine)]) as c:
        links = [html.unescape(h) for h in re.findall(r'href="(/alerts/rules/[^"?]*)', c.get("/alerts").text)]
        for rule_id in RULE_IDS:
            href = "/alerts/rules/" + quote(rule_id, safe="")
            assert href in links
            r = c.get(href)
            assert r.status_code == 200 and f'data-rule-id="{html.escape(rule_id)}"' in r.text, rule_id
            r = c.get("/api/alerts/rules/" + quote(rule_id, safe=""))
            assert r.status_code == 200 and r.json()["id"] == rule_id
