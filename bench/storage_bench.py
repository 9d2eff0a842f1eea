#!/usr/bin/env python3
"""Storage benchmark: insert N realistic spans through the Store, then time trace lookup, search and
overview queries. Last line of output: one JSON object with the figures.

    python bench/storage_bench.py --backend chdb --spans 1000000 --json
    python bench/storage_bench.py --backend clickhouse --url clickhouse://default:@127.0.0.1:9000/bench --spans 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from testkit.spangen import Gen, generate  # noqa: E402
from tracehouse.storage import Store, parse_range  # noqa: E402
from tracehouse.storage import queries_map as qmap  # noqa: E402
from tracehouse.storage import queries_services as qsvc  # noqa: E402
from tracehouse.storage import queries_traces as qtr  # noqa: E402

NS = 1_000_000_000


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))], 2)


def timed(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def query_latencies(store, sample_ids: list[bytes], window: str = "1h") -> dict[str, float]:
    """Trace lookup (200 ids), trace search (70 searches of 7 kinds) and overview queries (60), in ms."""
    rng = random.Random(1)
    ids = [rng.choice(sample_ids).hex() for _ in range(200)]
    lookup = timed(lambda i: qtr.trace(store, ids[i]), len(ids))
    tr = parse_range(window, None)
    searches = [
        dict(),
        dict(service="payments"),
        dict(service="payments", status="error"),
        dict(min_duration_ms=300),
        dict(service="orders", operation="POST /orders"),
        dict(attrs=[("region", "eu-west")]),
        dict(service="inventory", attrs=[("customer.id", "cust-42")]),
    ]
    search = timed(lambda i: qtr.search(store, tr, limit=50, **searches[i % len(searches)]), 70)
    overview_calls = [
        lambda: qsvc.services(store, tr),
        lambda: qmap.service_map(store, tr),
        lambda: qsvc.series(store, "gateway", tr),
        lambda: qsvc.operations(store, "orders", tr),
        lambda: qsvc.services(store, parse_range("6h", None)),
    ]
    overview = timed(lambda i: overview_calls[i % len(overview_calls)](), 60)
    return {
        "trace_lookup_p50_ms": pct(lookup, 50),
        "trace_lookup_p99_ms": pct(lookup, 99),
        "search_p50_ms": pct(search, 50),
        "search_p99_ms": pct(search, 99),
        "overview_p50_ms": pct(overview, 50),
        "overview_p99_ms": pct(overview, 99),
        "mean_trace_lookup_ms": round(statistics.mean(lookup), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["chdb", "clickhouse"], default="chdb")
    ap.add_argument("--url", default=os.environ.get("TRACEHOUSE_BENCH_CLICKHOUSE_URL", ""))
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--hours", type=float, default=6.0, help="the spans are spread over this many hours")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tmp = None
    if a.backend == "chdb":
        tmp = tempfile.mkdtemp(prefix="th-bench-")
        url = f"chdb://{tmp}?database=bench"
    else:
        if not a.url:
            sys.exit("--url clickhouse://... (or TRACEHOUSE_BENCH_CLICKHOUSE_URL) is required for --backend clickhouse")
        url = a.url
    store = Store.open(url)
    store.query(f"DROP DATABASE IF EXISTS {store.db}")
    store.migrate()
    now = time.time_ns()
    spread = int(a.hours * 3600 * NS)
    start = now - spread
    gen = Gen(rng=random.Random(7), error_rate=0.03)
    inserted, insert_s, gen_s = 0, 0.0, 0.0
    sample_ids: list[bytes] = []
    chunk_i = 0
    n_chunks = max(1, -(-a.spans // a.batch))
    while inserted < a.spans:
        t = time.perf_counter()
        # consecutive chunks cover consecutive time slices, as a live system would write them
        c_start = start + chunk_i * spread // n_chunks
        cols, tids = generate(min(a.batch, a.spans - inserted), c_start, spread // n_chunks, gen, store=store)
        gen_s += time.perf_counter() - t
        t = time.perf_counter()
        store.insert("spans", cols, batch_id=chunk_i + 1)
        insert_s += time.perf_counter() - t
        inserted += len(cols["trace_id"])
        sample_ids.extend(random.Random(chunk_i).sample(tids, min(40, len(tids))))
        chunk_i += 1
        print(f"inserted {inserted} spans ({inserted / insert_s:,.0f}/s insert, generation {gen_s:.0f}s)",
              file=sys.stderr, flush=True)
    res = store.query(
        "SELECT table, sum(data_compressed_bytes) FROM system.parts WHERE database = {db:String} AND active "
        "GROUP BY table",
        {"db": store.db},
    )
    sizes = {t: int(b) for t, b in res.rows}
    span_bytes = sizes.get("spans", 0)
    lat = query_latencies(store, sample_ids)
    out = {
        "backend": a.backend,
        "server_version": store.caps.version_string,
        "spans": inserted,
        "insert_spans_per_s": round(inserted / insert_s),
        "bytes_per_span": round(span_bytes / inserted, 1),
        "bytes_per_span_with_rollups": round(sum(sizes.values()) / inserted, 1),
        **lat,
    }
    if a.backend == "clickhouse":
        store.query(f"DROP DATABASE IF EXISTS {store.db}")
    store.close()
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out) if a.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
