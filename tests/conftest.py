"""Shared fixtures: embedded chDB stores, the ClickHouse server .ci/run starts, Redis, PostgreSQL.

chDB allows one engine per process, so every chDB test gets its own *database* inside one
session-wide directory. The ClickHouse server comes from TRACEHOUSE_TEST_CLICKHOUSE_URL (set by
.ci/run); without it, one is started here from Debian's clickhouse-server. Missing servers fail
the tests that need them: they are never skipped.
"""

from __future__ import annotations

import os
import tempfile
import uuid

import pytest

from testkit import servers

CLICKHOUSE_ENV = "TRACEHOUSE_TEST_CLICKHOUSE_URL"

# Servers started by tests listen on free ports only: a `tracehouse serve`/`collector` a test starts
# must not take the default OTLP/gRPC port 4317 (another test run may hold it) unless it asks for a port.
os.environ.setdefault("TRACEHOUSE_OTLP_GRPC_PORT", "0")


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("chdb"))


@pytest.fixture(scope="session")
def clickhouse_url(tmp_path_factory) -> str:
    url = os.environ.get(CLICKHOUSE_ENV)
    if url:
        yield url
        return
    proc = servers.start_clickhouse(str(tmp_path_factory.mktemp("clickhouse")))
    yield proc.url
    proc.stop()


def _open(url_base: str, sep: str):
    from tracehouse.storage import Store

    db = "t_" + uuid.uuid4().hex[:12]
    store = Store.open(f"{url_base}{sep}{db}")
    store.migrate()
    return store, db


def _drop(store, db: str) -> None:
    try:
        store.query(f"DROP DATABASE IF EXISTS {db}")
    finally:
        store.close()


@pytest.fixture
def chdb_store(chdb_dir):
    store, db = _open(f"chdb://{chdb_dir}", "?database=")
    yield store
    _drop(store, db)


@pytest.fixture
def server_store(clickhouse_url):
    base = clickhouse_url.rsplit("/", 1)[0]
    store, db = _open(base, "/")
    yield store
    _drop(store, db)


@pytest.fixture(params=["chdb", "clickhouse"])
def store(request):
    """The storage contract runs against both backends."""
    return request.getfixturevalue("chdb_store" if request.param == "chdb" else "server_store")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    proc = servers.start_redis(str(tmp_path_factory.mktemp("redis")))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def postgres_server():
    d = tempfile.mkdtemp(prefix="th-pg-")
    proc = servers.start_postgres(d)
    yield proc
    proc.stop()
