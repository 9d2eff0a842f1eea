"""Connection-pool figures from real redis-py and psycopg2 pools against real servers, read through
a real OpenTelemetry MeterProvider."""

from __future__ import annotations

import psycopg2
import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from psycopg2 import pool as pg_pool

from tracehouse.agent import pools


def _points(reader: InMemoryMetricReader) -> dict[str, list]:
    out: dict[str, list] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def test_redis_and_postgres_pools_are_measured(redis_server, postgres_server):
    pools.install()
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    pools.register(meter)

    rpool = redis.ConnectionPool.from_url(redis_server.url, max_connections=5, socket_timeout=2)
    client = redis.Redis(connection_pool=rpool)
    assert client.ping()
    held = rpool.get_connection("PING")  # checked out: the next command opens a second connection
    assert client.ping()  # ... which goes back to the pool: one used, one idle
    pg = pg_pool.ThreadedConnectionPool(1, 4, host="127.0.0.1", port=postgres_server.port, user="postgres",
                                        dbname="postgres", password="hunter2-not-used", connect_timeout=5)
    conns = [pg.getconn(), pg.getconn()]
    pg.putconn(conns.pop())
    try:
        figs = {p["name"]: p for p in pools.snapshot()}
        r = figs[f"redis://127.0.0.1:{redis_server.port}/0"]
        assert (r["used"], r["idle"], r["max"]) == (1, 1, 5)
        p = figs[f"postgresql://127.0.0.1:{postgres_server.port}/postgres"]
        assert (p["used"], p["idle"], p["max"]) == (1, 1, 4)
        assert all("hunter2" not in name for name in figs)

        points = _points(reader)
        used = {(dp.attributes["db.client.connection.pool.name"], dp.attributes["db.client.connection.state"]): dp.value
                for dp in points["db.client.connection.count"]}
        assert used[(f"redis://127.0.0.1:{redis_server.port}/0", "used")] == 1
        assert used[(f"postgresql://127.0.0.1:{postgres_server.port}/postgres", "idle")] == 1
        assert {dp.attributes["db.system"] for dp in points["db.client.connection.max"]} >= {"redis", "postgresql"}
    finally:
        rpool.release(held)
        for c in conns:
            pg.putconn(c)
        pg.closeall()
        rpool.disconnect()
    after = {p["name"]: p for p in pools.snapshot()}
    assert after[f"redis://127.0.0.1:{redis_server.port}/0"]["used"] == 0


def test_a_pool_the_wrapper_cannot_read_is_skipped_not_fatal():
    pools.install()

    class Odd:
        pass

    odd = Odd()
    pools.track(odd, "redis", "redis://odd")
    assert all(p["name"] != "redis://odd" for p in pools.snapshot())
    assert psycopg2.__version__  # the library itself is untouched
