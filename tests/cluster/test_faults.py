"""Faults under load on the loopback cluster: a replica SIGKILLed, a whole shard stopped, a collector
SIGKILLed, ZooKeeper restarted. Each time: every acknowledged span stored, none twice (except where
a collector died between storing a body and answering it, whose client then retried), traces whole
on one shard with their summaries, rollups exact, replicas in step."""

from __future__ import annotations

import time

from testkit.otlp_load import Senders, workload
from tests.cluster.checks import (
    NS,
    assert_exactly_once,
    assert_traces_whole_and_colocated,
    replicas_in_step,
    span_counts,
    wait_stored,
)


def _window(hours_ago: float) -> tuple[int, int]:
    t0 = time.time_ns() - int(hours_ago * 3600 * NS)
    return t0, t0 + 10 * 60 * NS


def _check(cluster, store, work, senders, t0, t1, allow_uncertain_twice=False) -> dict:
    wait_stored(cluster, store, senders, t0, t1)
    # a replica that was down catches up by replication: until it has, a read through the
    # Distributed tables that lands on it sees fewer rows, so the checks run once both agree
    replicas_in_step(cluster, store, t0, t1)
    stats = assert_exactly_once(span_counts(store, t0, t1), senders, allow_uncertain_twice)
    assert stats["spans"] == work.span_count
    assert_traces_whole_and_colocated(store, work, t0, t1, stats["duplicated"])
    assert senders.retry_after_missing == 0, "a collector answered 429/503 without Retry-After"
    return stats


def test_replica_killed_then_whole_shard_stopped_mid_load(cluster, cluster_store):
    t0, t1 = _window(3)
    work = workload(80_000, t0, t1 - t0 - 60 * NS, seed=21)
    senders = Senders(cluster.info["otlp_url"], work.bodies, threads=4).start()
    senders.wait_acked_spans(12_000, timeout=120)
    cluster.kill("ch-s1-r2")  # SIGKILL one replica of shard 1 mid-load
    senders.wait_acked_spans(30_000, timeout=120)
    cluster.start("ch-s1-r2")
    senders.wait_acked_spans(40_000, timeout=120)
    before = dict(senders.statuses)
    for name in ("ch-s2-r1", "ch-s2-r2"):  # then the whole of shard 2
        cluster.stop(name)
    time.sleep(6)
    during = {k: v - before.get(k, 0) for k, v in senders.statuses.items()}
    for name in ("ch-s2-r1", "ch-s2-r2"):
        cluster.start(name)
    senders.join(timeout=300)
    stats = _check(cluster, cluster_store, work, senders, t0, t1)
    print(f"\nreplica kill + shard outage: {stats}; answers during the outage {during}")


def test_collector_killed_mid_load_loses_nothing(cluster, cluster_store):
    t0, t1 = _window(4)
    work = workload(60_000, t0, t1 - t0 - 60 * NS, seed=22)
    senders = Senders(cluster.info["otlp_url"], work.bodies, threads=4).start()
    senders.wait_acked_spans(15_000, timeout=120)
    cluster.kill("collector-1")  # its clients retry through haproxy, to collector-2
    senders.wait_acked_spans(35_000, timeout=120)
    cluster.start("collector-1")  # replays what it had buffered
    senders.join(timeout=300)
    stats = _check(cluster, cluster_store, work, senders, t0, t1, allow_uncertain_twice=True)
    print(f"\ncollector SIGKILL: {stats}; statuses {senders.statuses}")


def test_zookeeper_restart_mid_load_pauses_writes_then_resumes(cluster, cluster_store):
    t0, t1 = _window(5)
    work = workload(50_000, t0, t1 - t0 - 60 * NS, seed=23)
    senders = Senders(cluster.info["otlp_url"], work.bodies, threads=4).start()
    senders.wait_acked_spans(12_000, timeout=120)
    cluster.stop("zookeeper")
    time.sleep(5)
    cluster.start("zookeeper")
    senders.join(timeout=300)
    stats = _check(cluster, cluster_store, work, senders, t0, t1)
    print(f"\nZooKeeper restart: {stats}; statuses {senders.statuses}")
