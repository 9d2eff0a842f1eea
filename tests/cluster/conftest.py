"""One loopback cluster per test session (deploy/cluster/loopback.py): ZooKeeper, 2 shards x 2
replicas of clickhouse-server 18.16, two collectors behind haproxy. Tests share it and keep to
their own time windows; each restores what it stops."""

from __future__ import annotations

import pytest

from testkit.cluster import start_cluster
from tracehouse.storage import Store

# Small enough that a shard outage fills it (503 + Retry-After), big enough for normal running.
BUFFER_MAX_BYTES = 8 << 20
LEASE_TTL_S = 4.0


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    c = start_cluster(str(tmp_path_factory.mktemp("cluster")), buffer_max_bytes=BUFFER_MAX_BYTES,
                      lease_ttl=LEASE_TTL_S, dashboard=False)
    yield c
    c.stop_all()


@pytest.fixture(scope="session")
def cluster_store(cluster):
    with Store.open(cluster.info["storage_url"]) as s:
        yield s
