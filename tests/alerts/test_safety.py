"""SSRF guard on notifier destinations and the read-only guard on user SQL rules."""

from __future__ import annotations

import socket

import pytest

from tracehouse.alerts import (
    DestinationRefused,
    NotifyError,
    RuleError,
    WebhookNotifier,
    check_url,
    parse_rule,
)
from tracehouse.alerts.expr import evaluate
from tracehouse.alerts.sqlguard import UnsafeQuery, prepare

from .helpers import Clock, Receiver

MSG = {"status": "firing", "groupLabels": {}, "alerts": []}


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://[::1]:8080/",
    "http://[::ffff:127.0.0.1]/",
    "http://localhost/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://0.0.0.0/",
    "http://100.64.0.1/",
    "file:///etc/passwd",
    "gopher://example.com/",
])
def test_private_and_odd_destinations_refused(url):
    with pytest.raises(DestinationRefused):
        check_url(url, allow_private=False)


def test_hostname_resolving_to_loopback_refused_and_not_contacted():
    assert socket.gethostbyname("localhost") == "127.0.0.1"
    rx = Receiver()
    try:
        n = WebhookNotifier("ops", f"http://localhost:{rx.port}/hook", allow_private=False)
        with pytest.raises(NotifyError) as e:
            n.notify(MSG)
        assert not e.value.retryable and "non-public" in str(e.value)
        assert rx.bodies == []
        WebhookNotifier("ops", f"http://localhost:{rx.port}/hook", allow_private=True).notify(MSG)
        assert len(rx.bodies) == 1
    finally:
        rx.down()


def test_redirect_to_private_address_not_followed():
    target = Receiver()
    redirector = Receiver(status=307, location=target.url)
    try:
        n = WebhookNotifier("ops", redirector.url, allow_private=True)
        with pytest.raises(NotifyError) as e:
            n.notify(MSG)
        assert "redirect" in str(e.value) and not e.value.retryable
        assert target.bodies == []
    finally:
        target.down()
        redirector.down()


@pytest.mark.parametrize("sql", [
    "SELECT 1 AS value; DROP TABLE spans",
    "SELECT 1 AS value; SELECT 2 AS value",
    "INSERT INTO spans SELECT * FROM spans",
    "ALTER TABLE spans DELETE WHERE 1",
    "DROP TABLE spans",
    "SELECT count() AS value FROM url('http://169.254.169.254/', CSV, 'a String')",
    "SELECT count() AS value FROM spans SETTINGS readonly = 0",
    "SELECT count() AS value FROM system.users",
    "SELECT count() AS value FROM otherdb.spans",
    "SELECT count() AS value FROM `spans`",
    "SELECT value FROM (SELECT 1 AS value) WHERE 1 IN system.numbers",
    "SELECT length(file('/etc/passwd')) AS value",
    "SELECT dictGet('d', 'x', 1) AS value",
    "SELECT count() AS value FROM remote('127.0.0.1', system.one)",
    "SELECT count() AS value FROM spans INTO OUTFILE '/tmp/x'",
    "SELECT count() AS value FROM spans FORMAT JSON",
    "SELECT count() AS value FROM spans WHERE timestamp > {t:UInt32}",
    "SET readonly = 0",
    "SELECT count() AS n FROM spans",
])
def test_unsafe_sql_refused(sql):
    with pytest.raises(UnsafeQuery):
        prepare(sql, "db1")
    with pytest.raises(RuleError):
        parse_rule({"alert": "X", "kind": "sql", "query": sql})


def test_safe_sql_is_qualified_and_keywords_in_strings_are_data():
    out = prepare("SELECT count() AS value, 'DROP TABLE x; url(' AS s FROM spans AS sp "
                  "JOIN logs USING (trace_id) ARRAY JOIN attr_keys AS k WHERE timestamp >= {start:UInt32};", "db1")
    assert "FROM db1.spans AS sp" in out and "JOIN db1.logs" in out and "ARRAY JOIN attr_keys" in out
    assert "'DROP TABLE x; url('" in out and "toDateTime({start:UInt32})" in out and not out.rstrip().endswith(";")


def test_readonly_enforced_by_the_database_as_well(store):
    """Even a statement the guard would pass cannot write: the engine runs it with readonly=1."""
    with pytest.raises(Exception) as e:
        store.query(f"INSERT INTO {store.t('settings')} (key, value, updated_ns) SELECT 'k', 'v', 1",
                    settings={"readonly": 1, "max_execution_time": 10})
    assert "readonly" in str(e.value).lower()
    rule = parse_rule({"alert": "Q", "kind": "sql", "query": "SELECT count() AS value FROM spans"})
    [s] = evaluate(rule, store.query, store.db, Clock()())
    assert s.value == 0.0 and s.labels == {}
