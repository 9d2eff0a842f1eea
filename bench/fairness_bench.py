"""One viewer's flood of heavy requests against another viewer's light one, over real HTTP.

    .venv/bin/python bench/fairness_bench.py --spans 50000 --flood 20 --json

Seeds one trace of ``--spans`` spans and the usual test data into a temporary embedded-chDB store,
serves the dashboard (uvicorn on a loopback port) with two viewer API tokens, sends ``--flood``
full-trace reads of the big trace at once as viewer A, and, ``--delay`` seconds later, one
``GET /api/services`` as viewer B. Prints the status counts of A's answers, their slowest time,
and B's status and latency; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx  # noqa: E402

from testkit.seed import big_trace, seed_all  # noqa: E402
from testkit.servers import serving  # noqa: E402
from tracehouse.dashboard.app import create_app  # noqa: E402
from tracehouse.storage import Store  # noqa: E402

NS = 1_000_000_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=50_000)
    ap.add_argument("--flood", type=int, default=20)
    ap.add_argument("--delay", type=float, default=0.5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="fair-bench-")
    try:
        store = Store.open(f"chdb://{folder}/db")
        store.migrate()
        seed_all(store)
        tid = big_trace(store, time.time_ns() - 300 * NS, args.spans)
        settings = SimpleNamespace(api_tokens=["alice:viewer:secret-a", "bob:viewer:secret-b"])
        with serving(create_app(settings, store)) as port:
            out = run(f"http://127.0.0.1:{port}", tid, args.flood, args.delay)
        store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for k, v in out.items():
        print(f"{k}: {v}")
    print(json.dumps(out))


def run(base: str, tid: str, flood: int, delay: float) -> dict:
    a = {"Authorization": "Bearer secret-a"}
    b = {"Authorization": "Bearer secret-b"}
    t0 = time.monotonic()
    one = httpx.get(f"{base}/api/traces/{tid}", headers=a, timeout=120)
    single_s = time.monotonic() - t0
    answers: list[tuple[int, float]] = []
    lock = threading.Lock()

    def heavy() -> None:
        t = time.monotonic()
        try:
            code = httpx.get(f"{base}/api/traces/{tid}", headers=a, timeout=120).status_code
        except httpx.HTTPError as e:
            code = type(e).__name__
        with lock:
            answers.append((code, time.monotonic() - t))

    threads = [threading.Thread(target=heavy) for _ in range(flood)]
    for t in threads:
        t.start()
    time.sleep(delay)
    t = time.monotonic()
    light = httpx.get(f"{base}/api/services", headers=b, timeout=120)
    light_s = time.monotonic() - t
    for t in threads:
        t.join()
    codes = Counter(str(c) for c, _ in answers)
    return {"single_heavy_s": round(single_s, 2), "single_heavy_status": one.status_code,
            "flood_codes": dict(codes),
            "flood_slowest_ok_s": round(max((s for c, s in answers if c == 200), default=0.0), 2),
            "flood_slowest_s": round(max(s for _, s in answers), 2),
            "light_status": light.status_code, "light_s": round(light_s, 2),
            "light_retry_after": light.headers.get("retry-after")}


if __name__ == "__main__":
    main()
