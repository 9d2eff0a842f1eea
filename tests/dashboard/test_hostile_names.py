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
from urllib.parse import quote, unquote, urlencode, urlsplit

import pytest

from testkit.seed import NS, log_row, snapshot_records, span_row
from testkit.servers import serving
from tracehouse.alerts import Engine, alerts_router, build_config
from tracehouse.alerts.templates import render_all
from tracehouse.dashboard import create_app
from tracehouse.dashboard.auth import hash_password

NAMES = ["new\nline", "trail\n", ".", "..", "a?b=1&c=2", "a#frag", "a%2Fb", "%00", "%41", "nul\x00",
         "slash/svc", "x/operations", "x/series", "plain"]
SERVICE_LINK = re.compile(r'href="(/services/[^"]*|/service\?[^"]*)"')


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


def _browser(url: str) -> str:
    """``url`` (a path and query) as a browser requests it (WHATWG URL): tabs and newlines dropped,
    the fragment too, dot segments resolved ("%2e" is a dot), other characters percent-encoded."""
    path, _, query = re.sub(r"[\t\n\r]", "", url).split("#", 1)[0].partition("?")
    segs, out = path.split("/")[1:], []
    for i, seg in enumerate(segs):
        dot = seg.lower().replace("%2e", ".")
        if dot in (".", ".."):
            if dot == ".." and out:
                out.pop()
            if i == len(segs) - 1:
                out.append("")
        else:
            out.append(seg)
    safe = "/%!$&'()*+,;=:@~"
    return quote("/" + "/".join(out), safe=safe) + ("?" + quote(query, safe=safe + "?") if query else "")


def _service_links(body: str) -> list[str]:
    return [html.unescape(h) for h in SERVICE_LINK.findall(body)]


def _dot_segment(href: str) -> bool:
    """A segment browsers resolve away (WHATWG URL: "%2e" is a dot, too)."""
    return any(s.lower().replace("%2e", ".") in (".", "..") for s in urlsplit(href).path.split("/"))


def _h1_service(body: str) -> str:
    return html.unescape(re.search(r'class="crumb">Services</a> / (.*?)</h1>', body, re.S)[1])


def _range_form(body: str) -> tuple[str, list[tuple[str, str]]]:
    form = re.search(r'<form class="range" method="get" action="([^"]*)" id="range-form">(.*?)</form>', body, re.S)
    hidden = re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', form[2])
    return html.unescape(form[1]), [(html.unescape(k), html.unescape(v)) for k, v in hidden]


def _submit_range(c: _Client, body: str, since: str = "6h"):
    """What static/app.js does on a range change: the form's action + "?" + its fields."""
    action, hidden = _range_form(body)
    return action, c.get(_browser(action + "?" + urlencode(hidden + [("since", since)])))


def test_every_page_links_each_service_to_its_own_page(names_store):
    store, sids = names_store
    with _client(store) as c:
        pages = ["/services?since=1h", "/service-map?since=1h", "/logs?since=1h"]
        pages += ["/snapshots/" + quote(sids[n], safe="") + "?since=1h" for n in NAMES]
        seen: dict[str, set[str]] = {}
        for page in pages:
            r = c.get(page)
            assert r.status_code == 200, (page, r.status_code, r.text[:200])
            for href in _service_links(r.text):
                assert not _dot_segment(href), (page, href)
                seen.setdefault(href, set()).add(page)
        opened = {}
        for href in seen:
            r = c.get(_browser(href))
            assert r.status_code == 200, (href, r.status_code, r.text[:200])
            name = _h1_service(r.text)
            opened[name] = href
            assert html.escape("op " + name) in r.text  # its own operations, not another service's
        assert set(NAMES) <= set(opened), set(NAMES) - set(opened)
        for name in NAMES:  # each page that shows a name links it
            pages_linking = seen[opened[name]]
            assert {"/services?since=1h", "/service-map?since=1h", "/logs?since=1h"} <= pages_linking, name
            assert "/snapshots/" + quote(sids[name], safe="") + "?since=1h" in pages_linking, name
        assert c.get("/service").status_code == 400  # the query form without a name


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


def test_an_alerts_dashboard_link_opens_its_service(names_store):
    """The ``dashboard`` annotation of an alert (sent with its notifications) had the name unencoded:
    ``/services/a?b=1&c=2`` opened service ``a``, ``/services/a#frag`` ``a``."""
    store, _ = names_store
    with _client(store) as c:
        for name in NAMES:
            link = render_all({}, 1.0, {"service": name}, "http://dash.example/", "r")["dashboard"]
            assert link.startswith("http://dash.example/") and not _dot_segment(link), (name, link)
            r = c.get(_browser(link[len("http://dash.example"):]))
            assert r.status_code == 200 and _h1_service(r.text) == name, (name, link, r.status_code)


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


def test_the_range_form_stays_on_the_same_page(names_store):
    """The range form's action is the path as requested (still encoded): on service ``a%2Fb`` it went to
    service ``a/b``, on ``%41`` to ``A``, on ``a#frag`` to ``a``, on ``new\\nline`` to ``newline``."""
    store, sids = names_store
    engine = _engine(store)
    with _client(store, alerts=engine) as c:
        links = {_h1_service(c.get(_browser(h)).text): h for h in _service_links(c.get("/services?since=1h").text)}
        for name in NAMES:
            href = links[name]
            action, r = _submit_range(c, c.get(_browser(href)).text)
            assert action == urlsplit(href).path, (name, action, href)
            assert r.status_code == 200 and _h1_service(r.text) == name, (name, action, r.status_code)
            assert 'value="6h" selected' in r.text
            snap = "/snapshots/" + quote(sids[name], safe="")  # a snapshot id carries the service name
            action, r = _submit_range(c, c.get(snap).text)
            assert action == snap and r.status_code == 200 and 'value="6h" selected' in r.text, (name, action)
        for rule_id in RULE_IDS:
            href = "/alerts/rules/" + quote(rule_id, safe="")
            action, r = _submit_range(c, c.get(href).text)
            assert action == href and r.status_code == 200, (rule_id, action, r.status_code)
            assert f'data-rule-id="{html.escape(rule_id)}"' in r.text


def test_the_login_redirect_keeps_the_encoded_path(names_store):
    store, _ = names_store
    settings = SimpleNamespace(users={"ann": {"password_hash": hash_password("pw", n=2**10), "role": "viewer"}},
                               api_tokens=[], secret_key="test-key")
    with _client(store, settings) as c:
        for name in ("a%2Fb", "slash/svc", "a?b=1&c=2", "new\nline", "%41"):
            path = "/services/" + quote(name, safe="")
            r = c.get(path + "?since=6h")
            assert r.status_code == 303
            assert unquote(r.headers["location"].split("next=", 1)[1]) == path + "?since=6h", name


@pytest.mark.browser
def test_in_chromium_each_service_link_and_its_range_form_open_that_service(names_store, page):
    """The same through Chromium's own URL handling (dot segments, fragments, newlines) and app.js."""
    store, _ = names_store

    def shown(text: str) -> str:  # an HTML parser drops or replaces a NUL
        return text.replace("\x00", "").replace("\ufffd", "")

    with serving(create_app(SimpleNamespace(users={}, api_tokens=[]), store)) as port:
        base = f"http://127.0.0.1:{port}"
        page.goto(f"{base}/services?since=1h")
        cells = page.locator("#services-table tbody tr td:first-child")
        names = [shown(cells.nth(i).get_attribute("data-v")) for i in range(cells.count())]
        assert sorted(names) == sorted(map(shown, NAMES))
        for i, name in enumerate(names):
            page.goto(f"{base}/services?since=1h")
            page.locator("#services-table tbody tr td:first-child a").nth(i).click()
            page.wait_for_load_state()
            assert shown(page.locator("h1").text_content()) == f"Services / {name}", (name, page.url)
            page.select_option("#range-since", "6h")
            page.wait_for_url("**since=6h**")
            assert shown(page.locator("h1").text_content()) == f"Services / {name}", (name, page.url)
        assert page.problems == []
