"""The native decoder's engine work alone: ``NativeTraces.insert`` (decode, flatten, redact, limit,
store into ``spans`` and its rollups) over the ingest benchmark's requests, in batches of a given
size, in this process, without HTTP, WAL or sender. Prints spans/s, CPU seconds per 100k spans
(all threads of the process) and the peak of anonymous memory over the start.

    python bench/native_engine_bench.py --spans 300000 --batch 100000,30000 --json
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _anon_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(fn) -> tuple[float, float, float]:
    """(seconds, CPU seconds, anonymous memory peak over the start in MB) of ``fn()``."""
    base = peak = _anon_mb()
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _anon_mb())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        fn()
    finally:
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        stop.set()
        sampler.join()
    return dt, cpu, peak - base


def run(spans: int, batch: int, per_request: int) -> dict:
    from bench.ingest_bench import build_requests
    from tracehouse.collector.convert import Limits
    from tracehouse.collector.native import NativeTraces
    from tracehouse.collector.redact import Redactor
    from tracehouse.storage import Store

    bodies = build_requests(spans, per_request)
    tmp = tempfile.mkdtemp(prefix="th-native-bench-")
    try:
        with Store.open(f"chdb://{tmp}/data?database=bench") as store:
            store.migrate()
            nt = NativeTraces(store, Redactor(), Limits(), os.path.join(tmp, "schemas"))
            nt.open()
            per = max(1, batch // per_request)
            batches = [bodies[i:i + per] for i in range(0, len(bodies), per)]
            nt.insert(batches[0][:1], 1, "warm-up")
            store.query(f"TRUNCATE TABLE {store.db}.spans")
            stored = 0

            def insert_all() -> None:
                nonlocal stored
                for i, b in enumerate(batches):
                    stored += nt.insert(b, i + 2, f"bench-{i}").stored

            dt, cpu, anon = measure(insert_all)
            rows = int(store.query(f"SELECT count() FROM {store.db}.spans").scalar())
        return {"batch_spans": batch, "spans": stored, "rows": rows, "spans_per_s": round(stored / dt),
                "cpu_s_per_100k": round(cpu / stored * 1e5, 2), "anon_peak_over_start_mb": round(anon)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spans", type=int, default=300_000)
    p.add_argument("--batch", default="100000", help="spans per insert; comma-separated to compare")
    p.add_argument("--per-request", type=int, default=300, dest="per_request")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    runs = [run(args.spans, int(b), args.per_request) for b in args.batch.split(",") if b.strip()]
    if not args.json:
        for r in runs:
            print(", ".join(f"{k} {v}" for k, v in r.items()))
    print(json.dumps({"runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
