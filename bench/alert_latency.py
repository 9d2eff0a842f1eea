#!/usr/bin/env python3
"""Time from a condition becoming true to the notification arriving, with the engine's default
evaluation interval (10 s) and group wait (10 s), real threads, embedded chDB and a real local
webhook receiver. Each trial makes a new service start failing at a random moment.

    python bench/alert_latency.py --trials 5 --json
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

from testkit.receiver import Receiver  # noqa: E402
from tracehouse.alerts import Engine, build_config  # noqa: E402
from tracehouse.storage import Store  # noqa: E402
from tracehouse.storage.attrs import encode_map  # noqa: E402

NS = 1_000_000_000


def failing_spans(store: Store, service: str, n: int = 50) -> dict:
    cols = store.columns_for("spans")
    now = time.time_ns()
    k, v, t = encode_map({"http.route": "/pay"})
    for i in range(n):
        row = dict(timestamp=now // NS, trace_id=os.urandom(16), span_id=os.urandom(8), parent_span_id=b"\0" * 8,
                   trace_state="", service=service, name="POST /pay", kind=2, status_code=2 if i % 2 else 0,
                   status_message="", start_ns=now - i * 1000, duration_ns=5_000_000, attr_keys=k, attr_values=v,
                   attr_types=t, resource_keys=[], resource_values=[], scope_name="", scope_version="",
                   events_time_ns=[], events_name=[], events_attrs=[], links_trace_id=[], links_span_id=[],
                   links_attrs=[])
        for key, val in row.items():
            cols[key].append(val)
    return cols


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="th-alert-bench-")
    store = Store.open(f"chdb://{tmp}?database=alertbench")
    store.migrate()
    receiver = Receiver()
    doc = {
        "groups": [{"name": "bench", "rules": [{  # interval defaults to 10s
            "alert": "ErrorRate", "kind": "red", "signal": "error_rate", "window": "1m", "op": ">",
            "threshold": 0.05, "for": "0s", "labels": {"severity": "critical"}}]}],
        "receivers": [{"name": "hook", "webhook": {"url": receiver.url}}],
        "route": {"receiver": "hook", "group_by": ["alertname", "service"]},  # group_wait defaults to 10s
        "notifications": {"allow_private_destinations": True},
    }
    engine = Engine(store, build_config([("bench.yaml", doc)]))
    engine.start()
    latencies = []
    rng = random.Random(3)
    try:
        for trial in range(a.trials):
            time.sleep(rng.uniform(0, 10))  # a random phase against the evaluation schedule
            service = f"svc{trial}"
            seen = len(receiver.bodies)
            t0 = time.monotonic()
            store.insert("spans", failing_spans(store, service))
            deadline = t0 + 60
            while time.monotonic() < deadline:
                hit = [t for b, t in zip(receiver.bodies[seen:], receiver.times[seen:])
                       if service in json.dumps(b)]
                if hit:
                    latencies.append(hit[0] - t0)
                    break
                time.sleep(0.05)
            else:
                latencies.append(float("inf"))
            print(f"trial {trial}: {latencies[-1]:.1f} s", file=sys.stderr, flush=True)
    finally:
        engine.stop()
        receiver.down()
        store.close()
    finite = [x for x in latencies if x != float("inf")]
    out = {"trials": a.trials, "notified": len(finite), "latency_s": [round(x, 2) for x in latencies],
           "median_s": round(statistics.median(finite), 2) if finite else None,
           "max_s": round(max(latencies), 2) if latencies else None, "target_s": 30}
    print(json.dumps(out) if a.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
