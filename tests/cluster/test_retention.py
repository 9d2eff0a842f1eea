"""Retention on the cluster: partitions past retention are dropped on every shard and every replica
(18.16 has no TTL, so this is the path it takes), recent ones stay; a shard that cannot be reached
is reported, and dropped on the next run once it is back."""

from __future__ import annotations

import os
import time

from testkit.spangen import Gen, generate
from tests.support.waiting import wait_for
from tracehouse.storage import Store, retention

NS = 1_000_000_000
DAY = 86400


def _partitions(cluster, db: str, table: str, shard: int | None = None) -> dict[str, set[str]]:
    """Active partitions of ``db.table`` on every node (of ``shard``)."""
    out = {}
    for n in cluster.nodes(shard):
        with Store.open(f"clickhouse://default:@127.0.0.1:{n['tcp']}/{db}") as s:
            out[n["name"]] = {str(p) for (p,) in s.query(
                "SELECT DISTINCT partition FROM system.parts WHERE database = {d:String} AND table = {t:String} "
                "AND active", {"d": db, "t": table}).rows}
    return out


def test_old_partitions_are_dropped_on_every_shard_and_replica(cluster, cluster_store):
    store = cluster_store
    old_s = (int(time.time()) // DAY - 40) * DAY + 3600  # 40 days ago: past the spans' 7 days
    for start in (old_s * NS, time.time_ns() - 1200 * NS):  # 40 days ago, and today
        cols, _ = generate(4000, start, 600 * NS, Gen())
        store.insert("spans", cols, batch_id=int.from_bytes(os.urandom(7), "big") | 1)
    day = time.strftime("%Y-%m-%d", time.gmtime(old_s))
    for table in ("spans_local", "trace_summary_local", "red_1m_local"):
        wait_for(lambda t=table: all(day in p for p in _partitions(cluster, store.db, t).values()), 30,
                 what=f"{table} of {day} on every node")

    cluster.stop("ch-s2-r1")
    cluster.stop("ch-s2-r2")
    try:  # shard 2 is down: shard 1 is done, and the run says what it could not do
        report = retention.apply(store)
        assert any(e.startswith("shard 2:") for e in report.errors), report.errors
        assert ("spans", day.replace("-", "")) in report.dropped
        wait_for(lambda: all(day not in p for p in _partitions(cluster, store.db, "spans_local", 1).values()), 30,
                 what="shard 1 dropped the old partition on both replicas")
    finally:
        cluster.start("ch-s2-r1")
        cluster.start("ch-s2-r2")
    dropped = store.enforce_retention()
    assert ("spans", day.replace("-", "")) in dropped
    for table in ("spans_local", "trace_summary_local", "red_1m_local", "edges_1m_local", "service_endpoints_local"):
        wait_for(lambda t=table: all(day not in p for p in _partitions(cluster, store.db, t).values()), 30,
                 what=f"{table} of {day} dropped on every node")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert any(today in p for p in _partitions(cluster, store.db, "spans_local").values())

