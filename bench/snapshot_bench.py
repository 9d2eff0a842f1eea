"""Fault snapshot costs: thread capture, memory capture, the pause the application sees, and what
the slow-request watchdog's in-flight registration adds to a request.

    .venv/bin/python bench/snapshot_bench.py --json

Last line: one JSON object. thread_snapshot_ms: 50 threads ~30 frames deep (median of 20);
memory_snapshot_ms: take_snapshot + statistics + compare_to with 200,000 live traced
allocations (tracemalloc already tracing, window 0); pause_ms: worst gap of a 1 ms ticking
thread while each capture runs; watchdog_added_us_p50: p50 latency of a trivial WSGI request
through the lean middleware with the in-flight registry and a running watchdog, minus the same
without either (registry pop/insert patched out), plus the raw register+unregister cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import tracemalloc


def _deep(n, ev):
    if n == 0:
        ev.wait()
        return
    _deep(n - 1, ev)


class Ticker:
    def __init__(self):
        self.max_gap = 0.0
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last)
            last = now

    def __enter__(self):
        self.t.start()
        time.sleep(0.05)
        self.max_gap = 0.0
        return self

    def __exit__(self, *a):
        self._stop.set()
        self.t.join()


def thread_snapshot() -> tuple[float, float]:
    from tracehouse.agent.snapshot_threads import capture_threads

    ev = threading.Event()
    ts = [threading.Thread(target=_deep, args=(28, ev), daemon=True) for _ in range(50)]
    for t in ts:
        t.start()
    time.sleep(0.2)
    times = []
    with Ticker() as tick:
        for _ in range(20):
            t0 = time.perf_counter()
            snap = capture_threads()
            times.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)
        gap = tick.max_gap * 1000
    assert len(snap["threads"]) >= 50
    ev.set()
    return statistics.median(times), gap


def memory_snapshot() -> tuple[float, float]:
    from tracehouse.agent.snapshot_memory import capture_memory

    tracemalloc.start(1)
    keep = [bytearray(16) for _ in range(200_000)]  # noqa: F841 - the traced allocations
    with Ticker() as tick:
        t0 = time.perf_counter()
        out = capture_memory(0.0)
        ms = (time.perf_counter() - t0) * 1000
        gap = tick.max_gap * 1000
    tracemalloc.stop()
    assert out["memory"]["top"]
    return ms, gap


def _trivial(environ, start_response):
    start_response("200 OK", [("content-length", "2")])
    return [b"ok"]


def _request_p50(app, n=20000) -> float:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http", "SERVER_PORT": "80",
               "HTTP_HOST": "localhost"}
    times = []
    for _ in range(n):
        env = dict(environ)
        t0 = time.perf_counter_ns()
        body = app(env, lambda s, h, e=None: None)
        list(body)
        body.close()
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    return times[len(times) // 2] / 1000


def watchdog_cost() -> tuple[float, float]:
    from opentelemetry.sdk.trace import TracerProvider

    from tracehouse.agent import http_server, watchdog, wsgi
    from tracehouse.agent.watchdog import INFLIGHT, Inflight, Watchdog

    http_server.configure(http_server.Instruments(TracerProvider()))
    app = wsgi.TracehouseWSGIMiddleware(_trivial)
    _request_p50(app, 3000)  # warm up

    class _NoRegistry(dict):
        def __setitem__(self, k, v):
            pass

        def pop(self, k, d=None):
            return d

    results = {"with": [], "without": []}
    dog = Watchdog(5000, lambda e, ms: None)
    for _ in range(5):
        wsgi.INFLIGHT = _NoRegistry()
        results["without"].append(_request_p50(app))
        wsgi.INFLIGHT = watchdog.INFLIGHT
        dog.start()
        results["with"].append(_request_p50(app))
        dog.stop()
    added = statistics.median(results["with"]) - statistics.median(results["without"])
    n = 200_000
    entry = Inflight(0, None, 1, None, "GET", "/")
    t0 = time.perf_counter_ns()
    for i in range(n):
        INFLIGHT[i] = entry
        INFLIGHT.pop(i, None)
    raw = (time.perf_counter_ns() - t0) / n / 1000
    http_server.configure(None)
    return added, raw


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    thread_ms, thread_pause = thread_snapshot()
    mem_ms, mem_pause = memory_snapshot()
    added, raw = watchdog_cost()
    out = {"thread_snapshot_ms": round(thread_ms, 2), "thread_pause_ms": round(thread_pause, 2),
           "memory_snapshot_ms": round(mem_ms, 1), "memory_pause_ms": round(mem_pause, 1),
           "pause_ms": round(max(thread_pause, mem_pause), 1),
           "watchdog_added_us_p50": round(added, 2), "inflight_register_us": round(raw, 3),
           "python": sys.version.split()[0]}
    if not args.json:
        for k, v in out.items():
            print(f"{k:28} {v}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
