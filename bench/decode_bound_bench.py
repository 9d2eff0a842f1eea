"""What an OTLP protobuf body costs to parse, before and after the list-level budget
(``collector/wire_budget.py``), and what the budget's walk costs on real bodies.

    python bench/decode_bound_bench.py [--size-mib 20] [--shapes spans,metrics] [--rounds 5]

Attack shapes (``testkit/wire_shapes.py``: one repeated field's empty elements filling the
body, at the list levels and inside spans and data points), each in a fresh subprocess:

- ``before``: ``Request.FromString`` then ``validate.check``, what the receiver did;
- ``after``: ``decode.decode_request`` (the budget, then the parse) then ``check`` when accepted;

with wall seconds and the peak RSS the step added (VmHWM reset through /proc/self/clear_refs).

Real bodies, in this process, best of ``--rounds``: the 117 kB 300-span requests of
``ingest_bench.build_requests``, a 16 MiB body of them (an OpenTelemetry Collector's big batch:
many ResourceSpans), and an 8 MiB metrics body (sums of 10 points with 3 attributes each): the
walk's time as a ratio to the parse's. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from testkit.wire_shapes import empty_elements
from tracehouse.collector.decode import SIGNALS, BadRequest, decode_request
from tracehouse.collector.validate import check

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return 0.0

signal, body = empty_elements({shape!r}, {size})
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM: the peak from here on
base = status("VmRSS:")
t = time.perf_counter()
refused = ""
if {mode!r} == "before":
    check(signal, SIGNALS[signal].request.FromString(body))
else:
    try:
        msg, _, _ = decode_request(SIGNALS[signal], "application/x-protobuf", "", body, {size} + 64)
        check(signal, msg)
    except BadRequest as e:
        refused = f"{{e.status}} {{e.message[:60]}}"
print(json.dumps({{"s": time.perf_counter() - t, "mb": status("VmHWM:") - base, "refused": refused}}))
"""


def attack(shape: str, size: int, mode: str) -> dict:
    code = _CHILD.format(root=ROOT, shape=shape, size=size, mode=mode)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _best(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _metrics_body(size: int) -> bytes:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    def kv(k: str, v: str) -> KeyValue:
        out = KeyValue(key=k)
        out.value.string_value = v
        return out

    req = ExportMetricsServiceRequest()
    now = time.time_ns()
    i = 0
    while req.ByteSize() < size:
        rm = req.resource_metrics.add()
        rm.resource.attributes.extend([kv("service.name", f"svc-{i}"), kv("host.name", "host-1"),
                                       kv("telemetry.sdk.language", "python")])
        sm = rm.scope_metrics.add()
        sm.scope.name = "opentelemetry.instrumentation.bench"
        for j in range(200):
            m = sm.metrics.add()
            m.name = f"http.server.request.count.{j % 20}"
            m.unit = "1"
            m.sum.aggregation_temporality = 2
            m.sum.is_monotonic = True
            for k in range(10):
                p = m.sum.data_points.add()
                p.start_time_unix_nano, p.time_unix_nano, p.as_int = now - 60_000_000_000, now, k * 7 + j
                p.attributes.extend([kv("http.route", f"/r/{k}"), kv("http.method", "GET"),
                                     kv("http.status_code", "200")])
        i += 1
    return req.SerializeToString()


def real_bodies(rounds: int) -> list[dict]:
    from ingest_bench import build_requests

    from tracehouse.collector.decode import SIGNALS
    from tracehouse.collector.wire_budget import over_budget

    reqs = build_requests(300 * 140, 300)
    big = b"".join(reqs)
    while len(big) < 16 << 20:
        big += reqs[len(big) % len(reqs)]
    rows = []
    for name, signal, body in [("300 spans (ingest_bench)", "traces", reqs[0]),
                               ("16 MiB of spans", "traces", big),
                               ("8 MiB of metrics", "metrics", _metrics_body(8 << 20))]:
        assert over_budget(signal, body) is None, name
        walk = _best(lambda: over_budget(signal, body), rounds)  # noqa: B023
        walk_all = _best(lambda: over_budget(signal, body, small=0), rounds)  # noqa: B023
        parse = _best(lambda: SIGNALS[signal].request.FromString(body), rounds)  # noqa: B023
        rows.append({"body": name, "bytes": len(body), "parse_ms": parse * 1e3, "walk_ms": walk * 1e3,
                     "walk_if_checked_ms": walk_all * 1e3, "ratio": walk / parse,
                     "ratio_if_checked": walk_all / parse})
    return rows


def main() -> None:
    from testkit.wire_shapes import SHAPES

    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=float, default=20)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-before", action="store_true", help="skip the old path (slow: up to ~30 s a shape)")
    args = ap.parse_args()
    size = int(args.size_mib * (1 << 20)) - 64
    result: dict = {"size": size, "attacks": {}, "real": []}
    print(f"attack bodies of {size:,} bytes: seconds and peak RSS added (MB), fresh process each")
    print(f"{'shape':22s} {'before s':>9s} {'before MB':>10s} {'after s':>8s} {'after MB':>9s}  after")
    for shape in args.shapes.split(","):
        before = None if args.no_before else attack(shape, size, "before")
        after = attack(shape, size, "after")
        result["attacks"][shape] = {"before": before, "after": after}
        b = f"{before['s']:9.2f} {before['mb']:10.0f}" if before else f"{'-':>9s} {'-':>10s}"
        print(f"{shape:22s} {b} {after['s']:8.3f} {after['mb']:9.0f}  {after['refused'] or 'parsed'}")
    print("\nreal bodies: the walk against the parse (best of rounds; 'if checked': with no 1 MiB floor)")
    for row in real_bodies(args.rounds):
        result["real"].append(row)
        print(f"{row['body']:26s} {row['bytes']:>11,} B  parse {row['parse_ms']:7.1f} ms  walk {row['walk_ms']:6.1f} ms "
              f"({row['ratio']:.2f}x)  if checked {row['walk_if_checked_ms']:6.1f} ms ({row['ratio_if_checked']:.2f}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
