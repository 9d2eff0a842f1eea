#!/usr/bin/env python3
"""Cluster benchmark, in one run on one machine:

1. one ``tracehouse collector`` on one ClickHouse server: stored spans/s for N spans of OTLP
   bodies sent by retrying senders, then the storage benchmark's query latencies;
2. the loopback cluster (ZooKeeper, 2 shards x 2 replicas, two collectors behind haproxy,
   deploy/cluster/loopback.py): the same bodies, the same senders, the same figures;
3. the cluster write path the store uses (each shard's local tables, deterministic blocks)
   against inserting the same batches through a Distributed table, synchronously
   (``insert_distributed_sync=1``) and asynchronously (the default: acknowledged before the
   shards have the rows; the time until they are all visible is measured).

Every server runs on the same cores as the benchmark (2 on the development machine): the cluster
runs four ClickHouse servers, ZooKeeper, haproxy and two collectors where the single setup runs one
server and one collector. Last line of output: one JSON object.

    python bench/cluster_bench.py --spans 300000 --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from testkit.cluster import start_cluster, tracehouse_command  # noqa: E402
from testkit.otlp_load import Senders, workload  # noqa: E402
from testkit.servers import free_port, start_clickhouse  # noqa: E402
from testkit.spangen import Gen, generate  # noqa: E402
from tracehouse.storage import Store  # noqa: E402
from tracehouse.storage.schema import SPANS  # noqa: E402

NS = 1_000_000_000
_spec = importlib.util.spec_from_file_location("storage_bench", os.path.join(ROOT, "bench", "storage_bench.py"))
storage_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(storage_bench)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def wait_count(store, n: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        got = int(store.query(f"SELECT count() FROM {store.t('spans')}").scalar() or 0)
        if got >= n:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {got} of {n} spans stored after {timeout}s")
        time.sleep(0.25)


def ingest(url: str, store, work, senders: int, timeout: float) -> dict:
    s = Senders(url, work.bodies, threads=senders).start()
    s.join(timeout)
    done = wait_count(store, work.span_count, timeout)
    rows = int(store.query(f"SELECT count() FROM {store.t('spans')}").scalar())
    distinct = int(store.query(f"SELECT uniqExact(span_id) FROM {store.t('spans')}").scalar())
    return {"stored_spans_per_s": round(work.span_count / (done - s.started)),
            "accepted_spans_per_s": round(work.span_count / (s.finished - s.started)),
            "rows": rows, "lost": work.span_count - distinct, "duplicates": rows - distinct,
            "answers": dict(sorted(s.statuses.items()))}


def sample_ids(work, n: int = 400) -> list[bytes]:
    rng = random.Random(3)
    return rng.sample(sorted(work.spans_per_trace), min(n, len(work.spans_per_trace)))


def single_phase(a, work, tmp: str) -> dict:
    log("== one collector, one ClickHouse server")
    ch = start_clickhouse(os.path.join(tmp, "single-ch"))
    port = free_port()
    env = dict(os.environ, TRACEHOUSE_BUFFER_DIR=os.path.join(tmp, "single-buffer"), TRACEHOUSE_LOG_LEVEL="warning")
    storage = ch.url.rsplit("/", 1)[0] + "/bench"
    col = subprocess.Popen([*tracehouse_command(), "collector", "--storage", storage, "--otlp-port", str(port),
                            "--otlp-grpc-port", str(free_port())],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        from testkit.servers import wait_port

        if not wait_port(port, 90):
            raise RuntimeError("collector did not start")
        with Store.open(storage) as store:
            out = ingest(f"http://127.0.0.1:{port}", store, work, a.senders, a.timeout)
            log(f"   {out}")
            out.update(storage_bench.query_latencies(store, sample_ids(work), window="2h"))
            out["server_version"] = store.caps.version_string
        return out
    finally:
        col.terminate()
        col.wait(60)
        ch.stop()


def cluster_phase(a, work, tmp: str) -> tuple[dict, object]:
    log("== two collectors behind haproxy, 2 shards x 2 replicas")
    c = start_cluster(os.path.join(tmp, "cluster"), dashboard=False)
    store = Store.open(c.info["storage_url"])
    out = ingest(c.info["otlp_url"], store, work, a.senders, a.timeout)
    log(f"   {out}")
    out.update(storage_bench.query_latencies(store, sample_ids(work), window="2h"))
    out["cluster_started_in_s"] = c.info["started_in_s"]
    return out, (c, store)


def write_paths(a, c, store) -> dict:
    """The same batches (spans of 20k rows) three ways, each into its own time window."""
    log("== cluster write paths")
    db, cl = store.db, c.info["cluster"]
    store.query(f"CREATE TABLE IF NOT EXISTS {db}.spans_in_dist ON CLUSTER {cl} AS {db}.spans_in "
                f"ENGINE = Distributed({cl}, {db}, spans_in, cityHash64(trace_id))")
    out = {}
    for k, how in enumerate(("direct", "distributed_sync", "distributed_async")):
        start = time.time_ns() - (10 + k) * 86400 * NS  # a window of its own (days back)
        batches = []
        for i in range(a.write_spans // 20_000):
            cols, _ = generate(20_000, start + i * 60 * NS, 60 * NS, Gen(rng=random.Random(100 + i)))
            batches.append(cols)
        n = sum(len(b["span_id"]) for b in batches)
        t0 = time.monotonic()
        for i, cols in enumerate(batches):
            if how == "direct":
                store.insert("spans", cols, batch_id=1000 * (k + 1) + i)
            else:
                ordered = [cols[name] if name != "batch_id" else [i + 1] * len(cols["span_id"]) for name in SPANS.column_names]
                sync = {"insert_distributed_sync": 1} if how == "distributed_sync" else None
                store.backend.insert(SPANS, f"{db}.spans_in_dist", ordered, settings=sync)
        acked = time.monotonic()
        day = f"toDate(timestamp) = toDate(toDateTime({start // NS}))"
        while int(store.query(f"SELECT count() FROM {db}.spans WHERE {day}").scalar()) < n:
            if time.monotonic() - acked > 300:
                raise RuntimeError(f"{how}: rows not visible after 300s")
            time.sleep(0.05)
        visible = time.monotonic()
        out[how] = {"rows": n, "acknowledged_rows_per_s": round(n / (acked - t0)),
                    "visible_rows_per_s": round(n / (visible - t0)), "visible_after_ack_s": round(visible - acked, 2)}
        log(f"   {how}: {out[how]}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=300_000)
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--per-body", type=int, default=400, dest="per_body")
    ap.add_argument("--write-spans", type=int, default=200_000, dest="write_spans")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="th-cluster-bench-")
    now = time.time_ns()
    work = workload(a.spans, now - 50 * 60 * NS, 40 * 60 * NS, spans_per_body=a.per_body, seed=5)
    log(f"{work.span_count} spans in {len(work.bodies)} bodies ({sum(len(b.data) for b in work.bodies) / 2**20:.0f} MB)")
    cluster = None
    try:
        single = single_phase(a, work, tmp)
        clustered, cluster = cluster_phase(a, work, tmp)
        paths = write_paths(a, *cluster)
        result = {
            "spans": work.span_count, "senders": a.senders, "cpus": os.cpu_count(),
            "single": single, "cluster": clustered, "write_paths": paths,
            "cluster_vs_single_stored": round(clustered["stored_spans_per_s"] / single["stored_spans_per_s"], 2),
        }
    finally:
        if cluster is not None:
            cluster[1].close()
            cluster[0].stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    if not a.json:
        print(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0 if single["lost"] == clustered["lost"] == 0 and single["duplicates"] == clustered["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
