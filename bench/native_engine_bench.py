"""The native decoder's engine work alone: ``NativeTraces.insert`` (decode, flatten, redact, limit,
store into ``spans`` and its rollups) over the ingest benchmark's requests, in batches of a given
size, in this process, without HTTP, WAL or sender. Prints spans/s, CPU seconds per 100k spans
(all threads of the process) and the peak of anonymous memory over the start.

    python bench/native_engine_bench.py --spans 300000 --batch 100000,30000 --json
    python bench/native_engine_bench.py --stages --batch 100000 --rounds 8 --json

``--stages`` splits one batch's engine work, alternating the stages over ``--rounds`` rounds on
the same requests (medians of CPU seconds and wall time): ``decode`` reads every field of every
request and touches each span's attributes (``SELECT … FORMAT Null``), ``flatten`` also computes
every row the insert would store (the decoder's statement, ``FORMAT Null``), ``insert`` is the
insert itself (``spans``, the rollup views and the side table; merges stopped, so that a
background merge of an earlier round is not counted). Differences between them are what each
stage costs.
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
from contextlib import contextmanager
from statistics import median

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


@contextmanager
def _decoder(prefix: str):
    """A store in a temporary directory and its native trace decoder, opened and warmed up
    (the first insert analyses every statement): ``(store, decoder)``."""
    from tracehouse.collector.convert import Limits
    from tracehouse.collector.native import NativeTraces
    from tracehouse.collector.redact import Redactor
    from tracehouse.storage import Store

    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        with Store.open(f"chdb://{tmp}/data?database=bench") as store:
            store.migrate()
            nt = NativeTraces(store, Redactor(), Limits(), os.path.join(tmp, "schemas"))
            nt.open()
            yield store, nt
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(spans: int, batch: int, per_request: int) -> dict:
    from bench.ingest_bench import build_requests

    bodies = build_requests(spans, per_request)
    with _decoder("th-native-bench-") as (store, nt):
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


def stages(batch: int, per_request: int, rounds: int) -> dict:
    from bench.ingest_bench import build_requests
    from tracehouse.collector import native_feed as nf

    bodies = build_requests(batch, per_request)
    with _decoder("th-native-stages-") as (store, nt):
        nt.insert(bodies[:1], 1, "warm-up")
        store.query("SYSTEM STOP MERGES")
        settings = nf.insert_settings(nt._schema, "stages", nf.requests_per_block(bodies))

        def select(sql: str, k: int) -> None:
            store.backend.insert_file("", "Protobuf", nf.frame(bodies, k), structure=nt._columns,
                                      settings=settings, select=sql, pipe=True)

        touch = ("SELECT sum(length(arrayFlatten(arrayMap(r -> arrayMap(s -> arrayMap(sp -> length(sp.attributes), "
                 "s.spans), r.scope_spans), resource_spans)))) FROM {input}")
        work = {"decode": lambda k: select(touch, k),
                "flatten": lambda k: select(nt._flatten + " FORMAT Null", k),
                "insert": lambda k: nt.insert(bodies, k, f"stages-{k}")}
        got: dict[str, list[tuple[float, float]]] = {n: [] for n in work}
        k = 1
        for _ in range(rounds):
            for name, fn in work.items():
                k += 1
                c0, t0 = time.process_time(), time.perf_counter()  # CPU of every thread of the process
                fn(k)
                got[name].append((time.perf_counter() - t0, time.process_time() - c0))
        store.query("SYSTEM START MERGES")
    return {"batch_spans": batch, "rounds": rounds,
            **{f"{n}_cpu_s": round(median([c for _, c in v]), 3) for n, v in got.items()},
            **{f"{n}_wall_s": round(median([w for w, _ in v]), 3) for n, v in got.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spans", type=int, default=300_000)
    p.add_argument("--batch", default="100000", help="spans per insert; comma-separated to compare")
    p.add_argument("--per-request", type=int, default=300, dest="per_request")
    p.add_argument("--stages", action="store_true", help="split one batch's engine work into its stages")
    p.add_argument("--rounds", type=int, default=8, help="rounds of the stages (--stages)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.stages:
        res = stages(int(args.batch.split(",")[0]), args.per_request, args.rounds)
        if not args.json:
            print(", ".join(f"{k} {v}" for k, v in res.items()))
        print(json.dumps(res))
        return 0
    runs = [run(args.spans, int(b), args.per_request) for b in args.batch.split(",") if b.strip()]
    if not args.json:
        for r in runs:
            print(", ".join(f"{k} {v}" for k, v in r.items()))
    print(json.dumps({"runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
