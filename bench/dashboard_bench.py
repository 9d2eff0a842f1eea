"""Dashboard page latency over a seeded embedded-chDB store.

    .venv/bin/python bench/dashboard_bench.py --spans 1000000 --json

Seeds N generated spans (multi-service traces of 5-30 spans over the last 50 minutes, inserted in
100k-span batches), one 5,000-span trace, the known test trace, logs, snapshots and metrics into
a temporary chDB store; then requests each page ``--requests`` times through the ASGI app
(Starlette TestClient: routing, queries, Jinja rendering and middleware, no socket) after one
warm-up request, and reports the p95 per page. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastapi.testclient import TestClient  # noqa: E402

from tests.dashboard import seed  # noqa: E402
from tests.support.spangen import Gen, generate  # noqa: E402
from tracehouse.dashboard.app import create_app  # noqa: E402
from tracehouse.storage import Store  # noqa: E402

NS = 1_000_000_000
BATCH = 100_000


def p95(samples: list[float]) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))], 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--big-trace", type=int, default=5000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="th-dash-bench-")
    store = Store.open(f"chdb://{tmp}?database=bench")
    try:
        store.migrate()
        now = time.time_ns()
        t0 = time.perf_counter()
        g = Gen(error_rate=0.05)
        made = 0
        while made < a.spans:
            n = min(BATCH, a.spans - made)
            cols, _ = generate(n, now - 3000 * NS, 2990 * NS, g, store=store)
            store.insert("spans", cols)
            made += len(cols["span_id"])
        big = seed.big_trace(store, now - 900 * NS, a.big_trace)
        tid, ids = seed.known_trace(store, now - 120 * NS)
        snaps = seed.logs_and_snapshots(store, now, tid, ids["paysrv"])
        seed.metrics(store, now)
        seed_s = time.perf_counter() - t0
        pages = {
            "services": "/services?since=1h",
            "service": "/services/orders?since=1h",
            "service_map": "/service-map?since=1h",
            "traces": "/traces?since=1h",
            "traces_filtered": "/traces?since=1h&service=payments&status=error&min_ms=10",
            "trace": f"/traces/{tid}",
            "trace_5000": f"/traces/{big}",
            "snapshots": "/snapshots",
            "snapshot": "/snapshots/" + quote(snaps[0], safe=""),
            "infrastructure": "/infrastructure?since=1h",
            "alerts": "/alerts",
        }
        results: dict[str, float] = {}
        sizes: dict[str, int] = {}
        app = create_app(None, store)
        # as `tracehouse serve` does once started (tracehouse/server.py): long-lived objects leave
        # the collector's generations, so collections under big query results stay short
        gc.collect()
        gc.freeze()
        with TestClient(app) as client:
            for name, url in pages.items():
                r = client.get(url)
                assert r.status_code == 200, (name, r.status_code, r.text[:300])
                sizes[name] = len(r.content)
                samples = []
                for _ in range(a.requests):
                    t = time.perf_counter()
                    r = client.get(url)
                    samples.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200
                results[name] = p95(samples)
                if os.environ.get("BENCH_DEBUG"):
                    print(name, [round(x) for x in samples])
                if not a.json:
                    print(f"{name:16s} p95 {results[name]:8.1f} ms  {sizes[name] / 1024:8.1f} KiB")
        rows = store.query(f"SELECT count() FROM {store.t('spans')}").scalar()
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"spans": int(rows), "big_trace_spans": a.big_trace, "requests": a.requests,
                      "seed_s": round(seed_s, 1), "p95_ms": results, "bytes": sizes,
                      "targets": {"page_p95_ms": 300, "trace_5000_p95_ms": 500},
                      "ok": all(v <= 300 for k, v in results.items() if k != "trace_5000")
                      and results["trace_5000"] <= 500}))


if __name__ == "__main__":
    main()
