"""The Alerts pages over a real alert engine (rules from YAML, evaluated on seeded chDB data), its
JSON API mounted as the server does, through TestClient and headless Chromium.

The dashboard package never imports tracehouse.alerts; this test composes the two like
tracehouse/server.py does (``create_app(..., alerts=engine, routers=[alerts_router(engine)])``)."""

from __future__ import annotations

import ast
import html
import os
import re
import time
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import yaml
from fastapi.testclient import TestClient

from testkit.seed import XSS_SCRIPT, XSS_SERVICE
from tests.dashboard.browsing import open_page, screenshot
from tracehouse.alerts import VOCABULARY, Engine, alerts_router, build_config
from tracehouse.dashboard import AlertSource
from tracehouse.dashboard.app import create_app
from tracehouse.dashboard.auth import hash_password
from tracehouse.dashboard.pages_alerts import expression, timeline_figure
from tracehouse.storage import StorageUnavailable

NS = 1_000_000_000
RULES_FILE = "/etc/tracehouse/rules.yaml"
RULES = f"""
groups:
  - name: shop
    interval: 10s
    rules:
      - alert: PaymentsErrors
        kind: red
        service: payments
        signal: error_rate
        window: 15m
        op: ">"
        threshold: 0.01
        labels: {{severity: critical, note: "{XSS_SCRIPT}"}}
        annotations: {{summary: "payments errors at {{{{ value }}}} {XSS_SCRIPT}"}}
      - alert: SlowShop
        kind: red
        service: shop
        signal: p95
        window: 15m
        threshold: 1
        for: 1h
      - alert: HostileTraffic
        kind: red
        service: "{XSS_SERVICE}"
        signal: rate
        window: 15m
        threshold: 0
      - alert: BrokenQuery
        kind: sql
        query: SELECT count() AS value FROM spans WHERE no_such_column = 1
      - alert: ProbeDown
        kind: middleware
        service: orders
      - alert: EarlyWarning
        kind: sql
        query: SELECT toFloat64({{end:UInt32}} < toUInt32(now()) - 300) AS value
        labels: {{severity: warning}}
"""


@pytest.fixture(scope="module")
def engine(seeded_store):
    cfg = build_config([(RULES_FILE, yaml.safe_load(RULES))])
    eng = Engine(seeded_store[0], cfg)
    now = time.time_ns()
    for minutes_ago in (8, 4, 0):  # EarlyWarning fires 8 minutes ago and resolves 4 minutes ago
        eng.run_once(now - minutes_ago * 60 * NS)
    return eng


@pytest.fixture(scope="module")
def app(seeded_store, engine):
    return create_app(None, seeded_store[0], alerts=engine, routers=[alerts_router(engine)])


def _main(text: str) -> str:
    return text.split("<main>", 1)[1].split("</main>", 1)[0]


def test_alerts_page_lists_firing_first_then_rules_history_and_silences(client, engine):
    r = client.get("/alerts")
    assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]
    body = _main(r.text)
    rows = re.findall(r'<tr class="alert-row st-(\w+)" data-state="\w+" data-rule="([^"]+)"', body)
    states = [s for s, _ in rows]
    assert ("firing", "shop/PaymentsErrors") in rows and ("pending", "shop/SlowShop") in rows
    assert ("resolved", "shop/EarlyWarning") in rows
    assert states == sorted(states, key=["firing", "pending", "resolved"].index)
    assert "firing for" in body and "severity</b>=critical" in body
    # rules: every rule, its source file, state, health and last evaluation
    rules = body.split('id="alert-rules"', 1)[1].split("</table>", 1)[0]
    for name in ("PaymentsErrors", "SlowShop", "HostileTraffic", "BrokenQuery", "ProbeDown", "EarlyWarning"):
        assert f">{name}</a>" in rules
    assert rules.count("class=\"src file\">rules.yaml<") == 6 and "never" not in rules
    broken = rules.split('data-rule="shop/BrokenQuery"', 1)[1].split("</tr>", 1)[0]
    assert "badge critical\">error" in broken and "no_such_column" in broken
    assert "error_rate of payments over 15m &gt; 0.01" in rules
    # history: the transitions and the timeline figure
    hist = body.split('id="alert-history"', 1)[1].split("</table>", 1)[0]
    assert "PaymentsErrors" in hist and "st-pending" in hist and "st-firing" in hist
    assert 'data-fig="alert-timeline"' in body
    assert "firing for 8m" in body and "resolved 4m" in body
    assert 'id="silence-form"' in body and 'id="no-silences"' in body


def test_silence_created_through_the_api_is_listed_and_mutes_the_alert(client, engine):
    r = client.post("/api/alerts/silences", json={"matchers": ["service=payments"], "duration": "1h",
                                                  "comment": "maintenance"})
    assert r.status_code == 201
    sid = r.json()["id"]
    body = _main(client.get("/alerts").text)
    listed = body.split('id="silence-list"', 1)[1].split("</table>", 1)[0]
    assert f'data-silence="{sid}"' in listed and "service=payments" in listed and "maintenance" in listed
    row = body.split('data-rule="shop/PaymentsErrors"', 1)[1].split("</tr>", 1)[0]
    assert "silenced" in row
    assert client.delete(f"/api/alerts/silences/{sid}").status_code == 200
    assert f'data-silence="{sid}"' not in client.get("/alerts").text


def test_rule_editor_new_and_read_only_yaml_rule(client):
    page = client.get("/alerts/rules/new?refresh=10s").text
    assert 'data-refresh="0"' in page  # an auto-refresh would throw the edits away
    body = _main(page)
    assert 'id="rule-form"' in body and 'data-rule-id=""' in body and 'id="r-save"' in body
    assert '<option value="red" selected>' in body and 'id="r-preview"' in body
    # kind-dependent fields: only the red ones are visible at first
    assert re.search(r'data-kinds="sql" hidden>\s*<span>Query', body)
    assert not re.search(r'data-kinds="red"\s+hidden', body)
    r = client.get("/alerts/rules/" + quote("shop/PaymentsErrors", safe=""))
    body = _main(r.text)
    assert r.status_code == 200 and 'id="read-only-note"' in body and RULES_FILE in body
    assert "<fieldset disabled>" in body and 'id="r-save"' not in body and 'id="r-preview"' in body
    yaml_text = html.unescape(body.split('id="rule-yaml">', 1)[1].split("</pre>", 1)[0])
    assert yaml.safe_load(yaml_text)["signal"] == "error_rate"
    assert 'id="rule-history"' in body and "st-firing" in body
    broken = _main(client.get("/alerts/rules/shop/BrokenQuery").text)
    assert 'id="rule-last-error"' in broken and "no_such_column" in broken
    assert client.get("/alerts/rules/nope").status_code == 404


def test_service_page_shows_its_firing_alerts_only(client):
    body = _main(client.get("/services/payments").text)
    banner = body.split('id="firing-alerts"', 1)[1].split("</div>", 1)[0]
    assert "1 alert firing" in banner and "PaymentsErrors" in banner and "payments errors at" in banner
    orders = _main(client.get("/services/orders").text)  # the seeded redis probe is down
    assert "ProbeDown" in orders.split('id="firing-alerts"', 1)[1] and "PaymentsErrors" not in orders
    assert 'id="firing-alerts"' not in client.get("/services/inventory").text


@pytest.mark.parametrize("path", ["/alerts", "/alerts/rules/shop%2FPaymentsErrors",
                                  "/services/payments", "/services/" + quote(XSS_SERVICE, safe="")])
def test_hostile_labels_and_annotations_are_escaped(client, path):
    r = client.get(path)
    assert r.status_code == 200
    assert XSS_SCRIPT not in r.text and "<img" not in r.text
    assert html.escape(XSS_SCRIPT, quote=False) in r.text


def test_without_an_engine_the_pages_keep_the_empty_state(seeded_store):
    with TestClient(create_app(None, seeded_store[0])) as c:
        for path in ("/alerts", "/alerts/rules/new"):
            assert "alert engine is not running" in c.get(path).text
        assert 'id="firing-alerts"' not in c.get("/services/payments").text


def test_with_login_the_page_carries_the_csrf_token_the_api_requires(seeded_store, engine):
    settings = SimpleNamespace(users={"ed": {"password_hash": hash_password("pw", n=2**10), "role": "editor"}},
                               api_tokens=[], secret_key="k")
    a = create_app(settings, seeded_store[0], alerts=engine, routers=[alerts_router(engine)])
    with TestClient(a) as c:
        form = c.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]
        c.post("/login", data={"csrf": csrf, "username": "ed", "password": "pw", "next": "/alerts"})
        token = re.search(r'<meta name="csrf-token" content="([^"]+)">', c.get("/alerts").text)[1]
        body = {"matchers": ["service=nobody"], "duration": "5m"}
        assert c.post("/api/alerts/silences", json=body).status_code == 403
        r = c.post("/api/alerts/silences", json=body, headers={"X-CSRF-Token": token})
        assert r.status_code == 201
        assert c.delete(f"/api/alerts/silences/{r.json()['id']}", headers={"X-CSRF-Token": token}).status_code == 200


def test_the_editor_offers_the_rule_models_vocabulary(client, engine):
    assert isinstance(engine, AlertSource)
    body = _main(client.get("/alerts/rules/new").text)
    for name, field in (("kinds", "kind"), ("signals", "signal"), ("absence_signals", "absence_signal"),
                        ("aggregations", "aggregation"), ("ops", "op")):
        select = body.split(f'name="{field}"', 1)[1].split("</select>", 1)[0]
        offered = tuple(html.unescape(v) for v in re.findall(r'<option value="([^"]*)"', select))
        assert offered == VOCABULARY[name], (field, offered)


class _FaultyEngine(Engine):
    """A real engine whose history read fails the way ``fault`` says (set per test)."""

    fault: Exception | None = None

    def history(self, rule_id: str = "", limit: int = 200) -> list[dict]:
        if self.fault is not None:
            raise self.fault
        return super().history(rule_id, limit)


def test_a_storage_error_is_shown_on_the_page_and_a_bug_is_not_hidden(seeded_store):
    eng = _FaultyEngine(seeded_store[0], build_config([(RULES_FILE, yaml.safe_load(RULES))]))
    with TestClient(create_app(None, seeded_store[0], alerts=eng), raise_server_exceptions=False) as c:
        eng.fault = StorageUnavailable("clickhouse is down")
        for path in ("/alerts", "/alerts/rules/shop/SlowShop"):
            r = c.get(path)
            assert r.status_code == 200 and "Could not read the alert engine" in r.text
            assert "StorageUnavailable: clickhouse is down" in r.text
        eng.fault = TypeError("a bug in the engine")  # not a storage error: it must not pass for one
        for path in ("/alerts", "/alerts/rules/shop/SlowShop"):
            assert c.get(path).status_code == 500


def test_the_dashboard_does_not_import_the_alerts_package():
    root = os.path.join(os.path.dirname(__file__), "..", "..", "dashboard")
    for name in os.listdir(root):
        if name.endswith(".py"):
            with open(os.path.join(root, name), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                assert not any(m.split(".")[:2] in (["tracehouse", "alerts"], ["alerts"]) for m in mods), (name, mods)


def test_expression_and_timeline_are_pure():
    assert expression({"kind": "red", "service": "api", "operation": "GET /", "signal": "p95", "window": "5m",
                       "op": ">", "threshold": 250.0}) == "p95 of api / GET / over 5m > 250"
    assert expression({"kind": "metric", "metric": "m", "aggregation": "max", "filters": {"a": "b"},
                       "window": "1m", "op": ">=", "threshold": 2}) == "max(m{a=b}) over 1m >= 2"
    assert expression({"kind": "absence", "service": "cart", "window": "5m"}) == "no telemetry from cart for 5m"
    t0 = 1_700_000_000 * NS
    hist = [{"ts_ns": t0 + 10 * NS, "rule_id": "r", "fingerprint": "f", "from_state": "inactive",
             "to_state": "pending", "value": 1.0, "labels": {"alertname": "A"}},
            {"ts_ns": t0 + 20 * NS, "rule_id": "r", "fingerprint": "f", "from_state": "pending",
             "to_state": "firing", "value": 2.0, "labels": {"alertname": "A"}},
            {"ts_ns": t0 + 50 * NS, "rule_id": "r", "fingerprint": "f", "from_state": "firing",
             "to_state": "resolved", "value": 0.0, "labels": {"alertname": "A"}}]
    fig = timeline_figure(hist, {"r": "A"}, t0, t0 + 100 * NS, t0 + 100 * NS)
    by_name = {d["name"]: d for d in fig["data"]}
    assert by_name["pending"]["x"][:2] == ["2023-11-14T22:13:30.000000Z", "2023-11-14T22:13:40.000000Z"]
    assert by_name["firing"]["x"][:2] == ["2023-11-14T22:13:40.000000Z", "2023-11-14T22:14:10.000000Z"]
    assert len(by_name["transition"]["x"]) == 3 and "error" not in by_name
    assert timeline_figure([], {}, t0, t0 + NS, t0) is None


def _expect_only_bad_requests(page) -> None:
    """Chromium logs the refused request (400) on the console: that one is expected, nothing else."""
    assert page.problems and all("status of 400" in p for p in page.problems), page.problems
    page.problems.clear()


@pytest.mark.browser
def test_alerts_in_the_browser_silence_preview_save_delete(page, live_server):
    open_page(page, f"{live_server}/alerts?since=1h")
    page.wait_for_selector("[data-fig=alert-timeline][data-rendered] .main-svg")
    assert page.locator("#alert-list tr.alert-row").first.get_attribute("data-state") == "firing"
    # a silence through the form
    page.fill("#s-matchers", "service=payments, severity=critical")
    page.fill("#s-duration", "30m")
    page.fill("#s-comment", "deploy <b>window</b>")
    page.click("#s-submit")
    page.wait_for_selector("#silence-list")
    page.wait_for_load_state("networkidle")
    row = page.locator("#silence-list tbody tr").first
    assert "service=payments" in row.inner_text() and "deploy <b>window</b>" in row.inner_text()
    assert page.locator("#alert-list tr[data-rule='shop/PaymentsErrors'] .badge.muted").inner_text() == "silenced"
    page.wait_for_selector("[data-fig=alert-timeline][data-rendered] .main-svg")
    screenshot(page, "alerts")
    # a bad matcher: the API's reason is shown
    page.fill("#s-matchers", "not a matcher")
    page.click("#s-submit")
    page.wait_for_selector("#silence-error:not([hidden])")
    assert "400" in page.inner_text("#silence-error") and "bad matcher" in page.inner_text("#silence-error")
    _expect_only_bad_requests(page)

    # a new red rule: preview, then save
    page.click("#new-rule")
    page.wait_for_load_state("networkidle")
    assert page.locator("#r-query").is_hidden() and page.locator("#r-service").is_visible()
    page.select_option("#r-kind", "sql")
    assert page.locator("#r-query").is_visible() and page.locator("#r-signal").is_hidden()
    page.select_option("#r-kind", "red")
    page.fill("#r-alert", "CheckoutErrors")
    page.fill("#r-service", "payments")
    page.select_option("#r-signal", "error_rate")
    page.fill("#r-window", "15m")
    page.fill("#r-threshold", "0.01")
    page.fill("#r-limit", "50")
    page.select_option("#r-severity", "warning")
    page.fill("#r-annotations", "summary=checkout failing at {{ value }}")
    page.click("#r-preview")
    page.wait_for_selector("#preview-table .preview-value")
    value = float(page.inner_text("#preview-table .preview-value"))
    assert 0 < value < 1 and "payments" in page.inner_text("#preview-table")
    assert "would fire" in page.inner_text("#preview-table")
    screenshot(page, "alerts-editor")
    # an invalid window: the API's 400 reason is shown, nothing is saved
    page.fill("#r-window", "forever")
    page.click("#r-save")
    page.wait_for_selector("#rule-error:not([hidden])")
    assert "400" in page.inner_text("#rule-error") and "window" in page.inner_text("#rule-error")
    _expect_only_bad_requests(page)
    page.fill("#r-window", "15m")
    page.click("#r-save")
    page.wait_for_url("**/alerts?since=1h#alert-rules")
    page.wait_for_load_state("networkidle")
    new = page.locator("#alert-rules tbody tr", has_text="CheckoutErrors")
    assert new.count() == 1 and "api" in new.inner_text() and "error_rate of payments" in new.inner_text()

    # edit it, then delete it (two clicks, no dialog)
    new.locator("a").first.click()
    page.wait_for_load_state("networkidle")
    assert page.input_value("#r-alert") == "CheckoutErrors" and page.input_value("#r-severity") == "warning"
    assert page.input_value("#r-annotations") == "summary=checkout failing at {{ value }}"
    page.fill("#r-threshold", "0.5")
    page.click("#r-save")
    page.wait_for_url("**/alerts?since=1h#alert-rules")
    page.wait_for_load_state("networkidle")
    new = page.locator("#alert-rules tbody tr", has_text="CheckoutErrors")
    assert "> 0.5" in new.inner_text()
    new.locator("a").first.click()
    page.wait_for_load_state("networkidle")
    assert page.input_value("#r-limit") == "50"  # kept through the edit
    page.click("#r-delete")
    page.click("#r-delete")
    page.wait_for_url("**/alerts?since=1h")
    page.wait_for_load_state("networkidle")
    assert page.locator("#alert-rules tbody tr", has_text="CheckoutErrors").count() == 0

    # expire the silence
    page.locator("#silence-list [data-delete-silence]").first.click()
    page.wait_for_load_state("networkidle")
    page.wait_for_selector("#no-silences")
    assert page.locator("img").count() == 0
    assert page.problems == []


@pytest.mark.browser
def test_read_only_rule_previews_and_hostile_strings_stay_text(page, live_server):
    open_page(page, f"{live_server}/alerts/rules/" + quote("shop/PaymentsErrors", safe=""))
    assert page.locator("#r-save").count() == 0 and page.locator("#r-alert").is_disabled()
    page.click("#r-preview")
    page.wait_for_selector("#preview-table .preview-value")
    assert page.locator("#preview-table tbody tr").count() == 1
    open_page(page, f"{live_server}/services/payments")
    assert XSS_SCRIPT in page.inner_text("#firing-alerts")
    open_page(page, f"{live_server}/alerts")
    assert XSS_SCRIPT in page.inner_text("#alert-list")
    assert page.evaluate("window.__xss === undefined") and page.locator("img").count() == 0
    assert page.problems == []
