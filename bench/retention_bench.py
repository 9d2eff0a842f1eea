#!/usr/bin/env python3
"""Retention benchmark: N realistic spans spread over D days, then time what the retention job and
the Storage page do — reading what is in effect and the disk use (system.tables/system.parts), a
retention change that drops the older days (and MODIFY TTL where the server has TTL), and the
periodic run that finds nothing to do. Last line of output: one JSON object.

    python bench/retention_bench.py --backend chdb --spans 1000000 --days 10 --keep 3 --json
    python bench/retention_bench.py --backend clickhouse --url clickhouse://default:@127.0.0.1:9000/bench
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from testkit.spangen import Gen, generate  # noqa: E402
from tracehouse.storage import Store, queries_usage, retention  # noqa: E402

NS = 1_000_000_000
DAY = 86400


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["chdb", "clickhouse"], default="chdb")
    ap.add_argument("--url", default=os.environ.get("TRACEHOUSE_BENCH_CLICKHOUSE_URL", ""))
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=10, help="the spans are spread evenly over this many days")
    ap.add_argument("--keep", type=int, default=3, help="the retention (days) set after loading")
    ap.add_argument("--batch", type=int, default=100_000)
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
    try:
        store.query(f"DROP DATABASE IF EXISTS {store.db}")
        store.migrate(retention={"spans": 30})
        today = int(time.time()) // DAY * DAY
        gen = Gen(rng=random.Random(7), error_rate=0.03)
        per_day = a.spans // a.days
        t0 = time.perf_counter()
        for d in range(a.days):
            made = 0
            while made < per_day:
                n = min(a.batch, per_day - made)
                cols, _ = generate(n, (today - d * DAY + 600) * NS, (DAY - 1200) * NS, gen, store=store)
                store.insert("spans", cols)
                made += len(cols["trace_id"])
        load_s = time.perf_counter() - t0
        rows0 = int(store.query(f"SELECT count() FROM {store.t('spans')}").scalar())
        usage0 = queries_usage.disk_usage(store)
        _, read_s = timed(lambda: (retention.in_effect(store), queries_usage.disk_usage(store)))
        rep, change_s = timed(lambda: retention.set_days(store, {"spans": a.keep}))
        _, noop_s = timed(lambda: retention.apply(store))
        rows1 = int(store.query(f"SELECT count() FROM {store.t('spans')}").scalar())
        eff = retention.in_effect(store)["spans"]
        result = {
            "backend": a.backend, "server_version": store.caps.version_string, "ttl": store.caps.ttl,
            "spans": rows0, "days": a.days, "keep_days": a.keep, "load_s": round(load_s, 1),
            "bytes_on_disk_before": usage0["totals"]["bytes_on_disk"],
            "read_in_effect_and_disk_use_s": read_s,
            "retention_change_s": change_s, "partitions_dropped": len(rep.dropped),
            "ttl_modified": len(rep.ttl_modified), "errors": rep.errors,
            "periodic_run_nothing_to_do_s": noop_s,
            "spans_left": rows1, "oldest_day_left": eff["oldest_day"],
            "bytes_on_disk_after": queries_usage.disk_usage(store)["totals"]["bytes_on_disk"],
        }
        if not a.json:
            for k, v in result.items():
                print(f"{k:>32}: {v}")
        print(json.dumps(result))
    finally:
        if a.backend == "clickhouse":
            store.query(f"DROP DATABASE IF EXISTS {store.db}")
        store.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
