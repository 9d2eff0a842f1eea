"""On a ClickHouse server, SQL rules run as a read-only database user that can read only the
project's database (.ci/start_clickhouse.sh creates `tracehouse_rules`, confined to `th_rules`,
as the README tells operators to): what the parser check lets through, the server still refuses."""

from __future__ import annotations

import pytest

from tracehouse.alerts import Engine
from tracehouse.storage import ConfigError, QueryError, Store, parse_storage_url

from .helpers import Clock
from .spanfactory import add_spans

DB = "th_rules"


@pytest.fixture
def rules_store(clickhouse_url):
    base = clickhouse_url.rsplit("/", 1)[0]
    store = Store.open(f"{base}/{DB}")
    store.migrate()
    store.query("CREATE DATABASE IF NOT EXISTS th_other")
    store.query("CREATE TABLE IF NOT EXISTS th_other.secrets (s String) ENGINE = Memory")
    u = parse_storage_url(clickhouse_url)
    store.rules_url = f"clickhouse://tracehouse_rules:rules-secret@{u.host}:{u.port}/{DB}"
    yield store
    try:
        store.query(f"DROP DATABASE IF EXISTS {DB}")
        store.query("DROP DATABASE IF EXISTS th_other")
    finally:
        store.close()


def test_rules_run_as_the_rules_user_and_the_server_confines_it(rules_store):
    store = rules_store
    clock = Clock()
    add_spans(store, clock.s - 30, service="payments", name="POST /pay", every="1s", **{"for": "10s"}, error_ratio=1)
    engine = Engine(store, clock=clock)
    out = engine.preview({"alert": "X", "kind": "sql", "window": "1m", "query":
                          "SELECT count() AS value FROM spans WHERE timestamp >= {start:UInt32} AND status_code = 2"})
    assert [s["value"] for s in out["samples"]] == [10.0]
    reader = store.rule_reader()
    who = reader.query("SELECT any(user) AS u, currentDatabase() AS d FROM system.processes "
                       "WHERE query LIKE '%rules-user-probe%'")
    assert who.rows == [("tracehouse_rules", DB)]
    # below the parser: the server itself refuses another database, writes, DDL, settings, table functions
    for sql in ("SELECT count() FROM th_other.secrets",
                "INSERT INTO spans (service) VALUES ('x')",
                "CREATE TABLE t2 (a UInt8) ENGINE = Memory",
                "SELECT count() FROM spans SETTINGS max_execution_time = 0",
                "SELECT count() FROM numbers(10)"):
        with pytest.raises(QueryError):
            reader.query(sql)


def test_rules_url_must_name_the_same_database(rules_store):
    rules_store.rules_url = rules_store.rules_url.rsplit("/", 1)[0] + "/th_other"
    with pytest.raises(ConfigError):
        rules_store.rule_reader()
