"""The native decoder's insert with other engine settings, against the insert as it is, in one
process and alternating, so that the machine's drift (±15% between runs here) falls on every
variant alike. Each round stores the same requests once per variant (the order rotates each
round, each after ``--settle`` seconds of rest, so that what the last insert freed is returned
first: the engine's allocator is configured as the server configures it); prints per variant the
median and best wall time, the median CPU seconds (all threads of the process) and the median
anonymous-memory peak over the insert's start, and the ratio of the median wall time to the
insert as it is.

    python bench/insert_ab_bench.py --spans 100000 --rounds 8 \\
        --variant 'chain_on:optimize_and_compare_chain=1' --variant 'no_merge:query_plan_merge_expressions=0'
    python bench/insert_ab_bench.py --spans 300 --rounds 10 --variant ...   # the fixed cost of one request

A variant is ``NAME:setting=value[;setting=value…]``; a setting the insert already sets is
replaced, another one is added. ``--block-bytes`` in a variant (``NAME:block_bytes=1750000``)
sets how many request bytes the engine decodes at a time (``native_feed.BLOCK_BYTES``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.native_engine_bench import measure  # noqa: E402

AS_IS = "as-is"


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, sep, body = text.partition(":")
    if not sep or not name or name == AS_IS:
        raise SystemExit(f"--variant takes NAME:setting=value[;setting=value…] (NAME not {AS_IS!r}): {text!r}")
    pairs = {}
    for item in filter(None, (x.strip() for x in body.split(";"))):
        k, eq, v = item.partition("=")
        if not eq or not re.fullmatch(r"[a-z_][a-z0-9_]*", k.strip()):
            raise SystemExit(f"not a setting=value: {item!r}")
        pairs[k.strip()] = v.strip()
    return name, pairs


def override(settings: str, pairs: dict[str, str]) -> str:
    """``settings`` (``a = 1, b = 'x'`` as ``native_feed.insert_settings`` writes them) with each
    of ``pairs`` replaced, or added when absent. Only unquoted values are replaced."""
    for k, v in pairs.items():
        pattern = re.compile(rf"(^|, ){re.escape(k)} = [^,']*(?=, |$)")
        if pattern.search(settings):
            settings = pattern.sub(lambda m, k=k, v=v: f"{m.group(1)}{k} = {v}", settings, count=1)
        else:
            settings = f"{settings}, {k} = {v}"
    return settings


def run(spans: int, rounds: int, variants: list[tuple[str, dict[str, str]]], per_request: int,
        settle: float) -> list[dict]:
    from bench.ingest_bench import build_requests
    from tracehouse.collector import native_feed
    from tracehouse.collector.convert import Limits
    from tracehouse.collector.native import NativeTraces
    from tracehouse.collector.redact import Redactor
    from tracehouse.storage import Store

    bodies = build_requests(spans, min(per_request, spans))
    tmp = tempfile.mkdtemp(prefix="th-insert-ab-")
    url = f"chdb://{tmp}/data?database=bench"
    Store.prefer_low_memory(url)  # the engine's allocator as the server configures it
    original, block_bytes = native_feed.insert_settings, native_feed.BLOCK_BYTES
    all_variants = [(AS_IS, {}), *variants]
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in all_variants}
    try:
        with Store.open(url) as store:
            store.migrate()
            nt = NativeTraces(store, Redactor(), Limits(), os.path.join(tmp, "schemas"))
            nt.open()
            batch = 0
            for r in range(rounds + 1):  # round 0 warms every variant up and is not counted
                for name, pairs in all_variants[r % len(all_variants):] + all_variants[:r % len(all_variants)]:
                    engine = {k: v for k, v in pairs.items() if k != "block_bytes"}
                    native_feed.BLOCK_BYTES = int(pairs.get("block_bytes", block_bytes))
                    native_feed.insert_settings = lambda *a, _e=engine: override(original(*a), _e)
                    batch += 1
                    time.sleep(settle)  # what the last insert freed goes back to the system first
                    try:
                        took = measure(lambda b=batch: nt.insert(bodies, b, f"ab-{b}"))
                    finally:
                        native_feed.insert_settings, native_feed.BLOCK_BYTES = original, block_bytes
                    store.query(f"TRUNCATE TABLE {store.db}.spans")
                    if r:
                        results[name].append(took)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(x[0] for x in results[AS_IS])
    out = []
    for name, pairs in all_variants:
        walls = [x[0] for x in results[name]]
        out.append({"variant": name, "settings": pairs, "spans": spans, "inserts": len(walls),
                    "median_s": round(statistics.median(walls), 4), "best_s": round(min(walls), 4),
                    "median_cpu_s": round(statistics.median(x[1] for x in results[name]), 4),
                    "median_anon_peak_mb": round(statistics.median(x[2] for x in results[name])),
                    "median_vs_as_is": round(statistics.median(walls) / base, 3)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spans", type=int, default=100_000, help="spans per insert")
    p.add_argument("--rounds", type=int, default=6, help="counted inserts per variant")
    p.add_argument("--variant", action="append", default=[], help="NAME:setting=value[;setting=value…]")
    p.add_argument("--per-request", type=int, default=300, dest="per_request")
    p.add_argument("--settle", type=float, default=2.5,
                   help="seconds to wait before each insert, so that its memory peak is its own (the server's "
                        "allocator returns freed memory within about a second)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.spans < 1 or args.rounds < 1:
        raise SystemExit("--spans and --rounds must be at least 1")
    rows = run(args.spans, args.rounds, [parse_variant(v) for v in args.variant], args.per_request, args.settle)
    if args.json:
        print(json.dumps({"runs": rows}))
    else:
        for r in rows:
            print(f"{r['variant']:>16}: median {r['median_s']:.3f} s (best {r['best_s']:.3f}, "
                  f"{r['median_vs_as_is']:.3f}× as-is), CPU {r['median_cpu_s']:.2f} s, "
                  f"anonymous peak +{r['median_anon_peak_mb']} MB, {r['inserts']} inserts of {r['spans']} spans")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
