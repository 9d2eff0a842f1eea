"""Per-request overhead of the tracehouse agent against bare FastAPI and stock OpenTelemetry.

Runs one trivial FastAPI endpoint (the same app module) under uvicorn three ways at once — bare,
stock OTel (opentelemetry-instrumentation-fastapi + SDK + BatchSpanProcessor + OTLP/HTTP
exporter), and ``tracehouse-agent run`` — and drives them from one client process over loopback
(sequential keep-alive ``http.client``, concurrency 1) in interleaved blocks: ``--rounds``
rounds of ``--requests / --rounds`` requests per mode, the order rotating each round, so a
change of machine load lands on the three modes alike. Latency percentiles are over all the
requests of a mode. CPU per request is each server process's CPU time (all its threads: request
path, export, background; ``/proc/PID/task/*/schedstat``, ns) from the end of the warm-up to
``--settle`` seconds after the last request (past the 5 s batch timers, so what the last requests
queued is exported and counted; interpreter teardown is not), divided by its measured requests;
the same measure for the three. Spans and metrics go to a local OTLP sink that answers 200 (or
to ``--endpoint``, e.g. a running ``tracehouse serve``).

Also measures the CPU cost of one resource-metrics collection (scaled to the default 15 s
interval), and compares the span encoders (stock protobuf objects vs the agent's lean wire
encoder; in one piece, in slices with a short sleep between them, and under a 0.5 ms switch
interval; and, for spans encoded as they end, the export thread's remaining work): CPU per span
and how long a thread waiting for the GIL waits while 512-span batches are encoded.

    .venv/bin/python bench/agent_overhead.py [--requests 6000] [--rounds 240] [--endpoint URL] [--json]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from testkit.servers import free_port, wait_port  # noqa: E402

BIN = os.path.dirname(sys.executable)

APP = textwrap.dedent("""
    from fastapi import FastAPI
    app = FastAPI()

    @app.get("/hello/{name}")
    async def hello(name: str):
        return {"hello": name}
""")

OTEL_APP = textwrap.dedent("""
    import os
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    ep = os.environ["BENCH_ENDPOINT"]
    res = Resource.create({"service.name": "bench-otel"})
    tp = TracerProvider(resource=res)
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=ep + "/v1/traces")))
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(MeterProvider(resource=res, metric_readers=[
        PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=ep + "/v1/metrics"))]))
    from app import app
    FastAPIInstrumentor.instrument_app(app)
""")

CLIENT = textwrap.dedent("""
    import http.client, json, sys, time
    ports, warm, block, rounds = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    modes = list(ports)
    conns = {m: http.client.HTTPConnection("127.0.0.1", p, timeout=10) for m, p in ports.items()}
    def one(c, i):
        c.request("GET", f"/hello/u{i % 50}")
        r = c.getresponse(); r.read()
        assert r.status == 200, r.status
    for m in modes:
        for i in range(warm):
            one(conns[m], i)
    lat = {m: [] for m in modes}
    wall = {m: 0.0 for m in modes}
    clock = time.perf_counter_ns
    for r in range(rounds):
        k = r % len(modes)
        for m in modes[k:] + modes[:k]:
            c, out = conns[m], lat[m]
            t0 = clock()
            for i in range(block):
                s = clock(); one(c, i); out.append(clock() - s)
            wall[m] += (clock() - t0) / 1e9
    print(json.dumps({"lat_ns": lat, "wall": wall}))
""")


class _Sink(BaseHTTPRequestHandler):
    posts = 0

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _Sink.posts += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def _command(mode: str, port: int, endpoint: str) -> list[str]:
    """``bare``, ``otel``, ``agent`` or ``agent:<export yield mode>`` (see agent/otlp_exporters.py)."""
    uvicorn = [os.path.join(BIN, "uvicorn"), "--port", str(port), "--no-access-log", "--log-level", "warning"]
    if mode == "bare":
        return uvicorn + ["app:app"]
    if mode == "otel":
        return uvicorn + ["otel_app:app"]
    return [os.path.join(BIN, "tracehouse-agent"), "run", "--endpoint", endpoint, "--"] + uvicorn + ["app:app"]


def run_modes(modes: tuple[str, ...], workdir: str, endpoint: str, warm: int, n: int, rounds: int,
              settle: float) -> dict:
    """Start one server per mode, warm each up, drive them in interleaved blocks; figures per mode."""
    block = max(1, n // rounds)
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        for mode in modes:
            port = free_port()
            env = dict(os.environ, PYTHONPATH=workdir, BENCH_ENDPOINT=endpoint, OTEL_SERVICE_NAME=f"bench-{mode}")
            if mode.startswith("agent:"):  # agent:<yield mode>[@<encode batch>]
                yield_mode, _, batch = mode.split(":", 1)[1].partition("@")
                env["TRACEHOUSE_EXPORT_YIELD"] = yield_mode
                if batch:
                    env["TRACEHOUSE_ENCODE_BATCH"] = batch
            servers[mode] = (subprocess.Popen(_command(mode, port, endpoint), env=env, cwd=workdir), port)
        for mode, (_, port) in servers.items():
            if not wait_port(port):
                raise RuntimeError(f"{mode} server on {port} did not start")
        ports = json.dumps({m: port for m, (_, port) in servers.items()})
        subprocess.run([sys.executable, "-c", CLIENT, ports, str(warm), "0", "0"], capture_output=True, text=True,
                       check=True, timeout=600)
        cpu0 = {m: _cpu_ns(proc.pid) for m, (proc, _) in servers.items()}
        out = subprocess.run([sys.executable, "-c", CLIENT, ports, "0", str(block), str(rounds)],
                             capture_output=True, text=True, check=True, timeout=1800)
        # Past the batch processors' 5 s timers: what the last requests queued is exported and counted.
        time.sleep(settle)
        cpu1 = {m: _cpu_ns(proc.pid) for m, (proc, _) in servers.items()}
        data = json.loads(out.stdout)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    results = {}
    for mode in modes:
        lat = [x / 1000 for x in data["lat_ns"][mode]]
        results[mode] = {"p50_us": pct(lat, 50), "p90_us": pct(lat, 90), "p99_us": pct(lat, 99),
                         "p999_us": pct(lat, 99.9), "rps": len(lat) / data["wall"][mode],
                         "cpu_us": (cpu1[mode] - cpu0[mode]) / len(lat) / 1000}
    return results


def _cpu_ns(pid: int) -> int:
    """CPU nanoseconds of every thread of a process so far (``/proc/PID/task/*/schedstat``)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


def metrics_cost(interval: float = 15.0, rounds: int = 40) -> dict:
    """CPU seconds of one collection of every resource instrument (cache bypassed), as % of a core."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from tracehouse.agent import metrics_cgroup, metrics_host, metrics_observe, metrics_process

    metrics_observe.CachedReading.DEFAULT_TTL = 0.0
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("bench")
    metrics_cgroup.register(meter)
    metrics_process.register(meter, metrics_process.GcTimer())
    metrics_host.register(meter)
    reader.get_metrics_data()
    c0 = time.process_time()
    for _ in range(rounds):
        reader.get_metrics_data()
    per = (time.process_time() - c0) / rounds
    return {"collection_cpu_ms": per * 1000, "cpu_percent": per / interval * 100}


def _request_spans(n: int) -> list:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from tracehouse.agent import resource

    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource(resource.attributes("bench", {})))
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("tracehouse.agent.http", "0.1.0")
    for i in range(n):
        with tracer.start_as_current_span("GET /hello/{name}", kind=SpanKind.SERVER) as span:
            span.set_attributes({"http.request.method": "GET", "url.path": f"/hello/u{i % 50}", "url.scheme": "http",
                                 "server.address": "127.0.0.1", "server.port": 8000, "client.address": "127.0.0.1",
                                 "user_agent.original": "Python-urllib/3.11", "http.route": "/hello/{name}",
                                 "http.response.status_code": 200})
    return list(mem.get_finished_spans())


def encoder_options(batch: int = 512, batches: int = 20) -> dict:
    """CPU µs per span and the longest GIL wait of another thread, per encoding option."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from tracehouse.agent import otlp_exporters, otlp_spans

    spans = _request_spans(batch)

    def stock(pause):
        if pause is None:
            return encode_spans(spans).SerializeToString()
        out = []
        for i in range(0, len(spans), otlp_spans.SLICE):
            if i:
                pause()
            out.append(encode_spans(spans[i:i + otlp_spans.SLICE]).SerializeToString())
        return b"".join(out)  # concatenated requests parse as one (repeated resource_spans)

    def switch(fn):
        def run(*args):
            with otlp_exporters.gil_share():
                return fn(*args)
        return run

    lean = otlp_spans.encode
    records = [otlp_spans.encoded(s) for s in spans]

    def at_end(_spans, _pause):  # the export thread's part when spans were encoded as they ended
        return otlp_spans.encode_records(records)

    options = {"stock": (stock, None), "stock_sliced_sleep": (stock, otlp_exporters.pause),
               "stock_switch_0.5ms": (switch(stock), None), "lean": (lean, None),
               "lean_sliced_sleep": (lean, otlp_exporters.pause), "lean_switch_0.5ms": (switch(lean), None),
               "lean_at_end_export_thread": (at_end, None)}
    out = {}
    for name, (fn, pause) in options.items():
        call = (lambda fn=fn, pause=pause: fn(spans, pause)) if name.startswith("lean") else \
            (lambda fn=fn, pause=pause: fn(pause))
        call()
        stalls: list[float] = []
        stop = threading.Event()

        def probe(stop=stop, stalls=stalls):
            while not stop.is_set():
                t0 = time.perf_counter()
                time.sleep(0.0002)
                stalls.append(time.perf_counter() - t0 - 0.0002)

        t = threading.Thread(target=probe)
        t.start()
        time.sleep(0.05)
        n0 = len(stalls)
        c0 = time.thread_time()
        for _ in range(batches):
            call()
        cpu = time.thread_time() - c0
        during = stalls[n0:]
        stop.set()
        t.join()
        out[name] = {"cpu_us_per_span": round(cpu / (batch * batches) * 1e6, 2),
                     "max_gil_wait_ms": round(max(during, default=0.0) * 1000, 2),
                     "p99_gil_wait_ms": round(pct(during, 99) * 1000, 2) if during else 0.0}
    return out


def _added(r: dict, bare: dict, otel_added: dict) -> dict:
    a = {"p50": r["p50_us"] - bare["p50_us"], "p99": r["p99_us"] - bare["p99_us"], "cpu": r["cpu_us"] - bare["cpu_us"]}
    return {"added_us_p50": round(a["p50"], 1), "added_us_p99": round(a["p99"], 1), "p99_us": round(r["p99_us"], 1),
            "p999_us": round(r["p999_us"], 1),
            "added_cpu_us_per_req": round(a["cpu"], 1),
            "ratio_to_otel_added_cpu": round(a["cpu"] / otel_added["cpu"], 3) if otel_added["cpu"] > 0 else None,
            "ratio_to_otel_added_p50": round(a["p50"] / otel_added["p50"], 3) if otel_added["p50"] > 0 else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=6000, help="measured requests per mode")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=240,
                    help="interleaved rounds (blocks per mode; 25 requests each by default, so that a burst of "
                         "load from elsewhere lands on every mode alike)")
    ap.add_argument("--settle", type=float, default=6.0, help="seconds counted after the last request")
    ap.add_argument("--agent-variants", default="",
                    help="more agent modes in the same run, e.g. 'switch,none,end@1' (TRACEHOUSE_EXPORT_YIELD, "
                         "@TRACEHOUSE_ENCODE_BATCH)")
    ap.add_argument("--endpoint", help="OTLP/HTTP base URL (default: a local sink answering 200)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args()
    sink = None
    endpoint = args.endpoint
    if not endpoint:
        sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
        threading.Thread(target=sink.serve_forever, daemon=True).start()
        endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "app.py"), "w") as f:
            f.write(APP)
        with open(os.path.join(d, "otel_app.py"), "w") as f:
            f.write(OTEL_APP)
        variants = tuple(f"agent:{v.strip()}" for v in args.agent_variants.split(",") if v.strip())
        results = run_modes(("bare", "otel", "agent") + variants, d, endpoint, args.warmup, args.requests,
                            max(1, args.rounds), args.settle)
    cost = metrics_cost()
    encoders = encoder_options()
    if not args.json:
        for m, r in results.items():
            print(f"{m:12s} p50 {r['p50_us']:7.1f} us  p90 {r['p90_us']:7.1f}  p99 {r['p99_us']:7.1f}  "
                  f"p99.9 {r['p999_us']:7.1f}  "
                  f"{r['rps']:7.0f} req/s  {r['cpu_us']:6.1f} us CPU/req")
        print(f"metrics collection: {cost['collection_cpu_ms']:.2f} ms CPU each; sink POSTs: {_Sink.posts}")
        for name, e in encoders.items():
            print(f"encoder {name:18s} {e['cpu_us_per_span']:6.2f} us CPU/span  longest GIL wait "
                  f"{e['max_gil_wait_ms']:6.2f} ms (p99 {e['p99_gil_wait_ms']:.2f})")
    bare, otel, agent = results["bare"], results["otel"], results["agent"]
    base = bare["p50_us"]
    added = {m: {"p50": results[m]["p50_us"] - base, "p99": results[m]["p99_us"] - bare["p99_us"],
                 "cpu": results[m]["cpu_us"] - bare["cpu_us"]} for m in ("otel", "agent")}
    print(json.dumps({
        "baseline_p50_us": round(base, 1),
        "otel_default_added_us_p50": round(added["otel"]["p50"], 1),
        "agent_added_us_p50": round(added["agent"]["p50"], 1),
        "baseline_p99_us": round(bare["p99_us"], 1),
        "otel_p99_us": round(otel["p99_us"], 1),
        "agent_p99_us": round(agent["p99_us"], 1),
        "otel_added_us_p99": round(added["otel"]["p99"], 1),
        "agent_added_us_p99": round(added["agent"]["p99"], 1),
        "baseline_p999_us": round(bare["p999_us"], 1),
        "otel_p999_us": round(otel["p999_us"], 1),
        "agent_p999_us": round(agent["p999_us"], 1),
        "baseline_rps": round(bare["rps"]),
        "otel_rps": round(otel["rps"]),
        "agent_rps": round(agent["rps"]),
        "baseline_cpu_us_per_req": round(bare["cpu_us"], 1),
        "otel_cpu_us_per_req": round(otel["cpu_us"], 1),
        "agent_cpu_us_per_req": round(agent["cpu_us"], 1),
        "otel_added_cpu_us_per_req": round(added["otel"]["cpu"], 1),
        "agent_added_cpu_us_per_req": round(added["agent"]["cpu"], 1),
        # targets (issue 18): p99 added <= 1000 us; CPU ratio <= 1/8; p50 ratio <= 1/10
        "ratio_agent_to_otel_added_cpu": round(added["agent"]["cpu"] / added["otel"]["cpu"], 3)
        if added["otel"]["cpu"] > 0 else None,
        "ratio_agent_to_otel_added_p50": round(added["agent"]["p50"] / added["otel"]["p50"], 3)
        if added["otel"]["p50"] > 0 else None,
        "encoders": encoders,
        "metrics_collection_cpu_ms": round(cost["collection_cpu_ms"], 3),
        "metrics_collection_cpu_percent": round(cost["cpu_percent"], 4),
        "requests": max(1, args.requests // max(1, args.rounds)) * max(1, args.rounds),
        "rounds": max(1, args.rounds),
        # agent variants of the same run (TRACEHOUSE_EXPORT_YIELD), against the same bare and otel
        "variants": {m: _added(results[m], bare, added["otel"]) for m in results if m.startswith("agent:")},
    }))
    if sink is not None:
        sink.shutdown()


if __name__ == "__main__":
    main()
