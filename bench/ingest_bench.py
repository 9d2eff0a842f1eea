"""Ingest benchmark: OTLP/HTTP protobuf into a real ``tracehouse`` server with embedded chDB.

    python bench/ingest_bench.py --spans 300000 --concurrency 8 --decoder old,native --json

``--decoder`` picks how the server turns stored requests into rows: ``old`` (Python, the
converter in ``collector/convert.py``), ``native`` (the embedded engine decodes them), ``auto``;
a comma-separated list runs the server once per decoder on the same requests. Each run is followed
by a bulk insert of the same spans straight through ``Store.insert`` (converted beforehand, not
timed), the store's own ceiling on this machine at that moment, and the run reports
stored/bulk-insert.

Starts ``tracehouse serve`` (or ``tracehouse collector`` when the dashboard is not there) on free
ports and temporary directories, sends pre-encoded requests (multi-service traces of 5-30 spans,
~10 attributes per span, a few hundred spans per request) from a separate process over C
connections, waits until the collector reports every span written, stops the server, opens the
chDB store here and counts the spans exactly. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.support.servers import free_port, wait_port  # noqa: E402

SERVICES = ["frontend", "checkout", "cart", "payments", "inventory", "shipping", "users", "search"]
ROUTES = ["/api/cart", "/api/checkout", "/api/items/{id}", "/api/users/{id}", "/api/search", "/health"]


def _kv(key, value):
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    kv = KeyValue(key=key)
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = value
    return kv


def build_requests(total: int, per_request: int, seed: int = 7) -> list[bytes]:
    """Pre-encoded ExportTraceServiceRequests holding ``total`` spans in all."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    rnd = random.Random(seed)
    out: list[bytes] = []
    made = 0
    base = time.time_ns() - 60_000_000_000
    while made < total:
        req = ExportTraceServiceRequest()
        by_service: dict[str, object] = {}
        n_req = 0
        while n_req < per_request and made + n_req < total:
            n = min(rnd.randint(5, 30), per_request - n_req, total - made - n_req)
            trace_id = rnd.randbytes(16)
            parent = b""
            t0 = base + rnd.randint(0, 50_000_000_000)
            for i in range(n):
                svc = SERVICES[(i + len(out)) % len(SERVICES)] if i else "frontend"
                ss = by_service.get(svc)
                if ss is None:
                    rs = req.resource_spans.add()
                    rs.resource.attributes.extend([_kv("service.name", svc), _kv("service.version", "1.4.2"),
                                                   _kv("host.name", f"host-{rnd.randint(1, 4)}"),
                                                   _kv("service.instance.id", f"{svc}-{rnd.randint(1, 3)}")])
                    ss = rs.scope_spans.add()
                    ss.scope.name = "opentelemetry.instrumentation.bench"
                    ss.scope.version = "0.1"
                    by_service[svc] = ss
                s = ss.spans.add()
                s.trace_id = trace_id
                s.span_id = rnd.randbytes(8)
                if parent:
                    s.parent_span_id = parent
                parent = s.span_id if rnd.random() < 0.6 else parent
                route = rnd.choice(ROUTES)
                s.name = f"GET {route}" if i == 0 else rnd.choice(["SELECT orders", "redis GET", f"GET {route}",
                                                                    "process", "publish"])
                s.kind = 2 if i == 0 else rnd.choice([1, 3])
                s.start_time_unix_nano = t0 + i * 1_000_000
                s.end_time_unix_nano = s.start_time_unix_nano + rnd.randint(100_000, 90_000_000)
                s.attributes.extend([
                    _kv("http.request.method", "GET"), _kv("http.route", route),
                    _kv("url.full", f"https://shop.example.com{route}?q={rnd.randint(1, 999)}"),
                    _kv("http.response.status_code", rnd.choice([200, 200, 200, 404, 500])),
                    _kv("server.address", "shop.example.com"), _kv("server.port", 443),
                    _kv("network.protocol.version", "1.1"), _kv("user_agent.original", "bench/1.0"),
                    _kv("db.system", "postgresql"), _kv("thread.id", rnd.randint(1, 64)),
                ])
                if rnd.random() < 0.1:
                    ev = s.events.add()
                    ev.name = "exception"
                    ev.time_unix_nano = s.start_time_unix_nano + 5
                    ev.attributes.extend([_kv("exception.type", "ValueError"), _kv("exception.message", "bad")])
                    s.status.code = 2
            n_req += n
        made += n_req
        out.append(req.SerializeToString())
    return out


# --- the sender (a separate process) -------------------------------------------------------------


async def _send_all(url: str, bodies: list[bytes], concurrency: int) -> dict:
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    stats = {"requests": 0, "retries": 0, "errors": 0}
    headers = {"content-type": "application/x-protobuf"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                while True:
                    try:
                        r = await client.post(url, content=body, headers=headers)
                    except httpx.HTTPError:
                        stats["errors"] += 1
                        await asyncio.sleep(0.5)
                        continue
                    if r.status_code == 200:
                        stats["requests"] += 1
                        break
                    if r.status_code in (429, 503):
                        stats["retries"] += 1
                        await asyncio.sleep(min(float(r.headers.get("retry-after", "1")), 2.0))
                        continue
                    raise RuntimeError(f"unexpected status {r.status_code}: {r.content[:200]!r}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats


def sender_main(args: argparse.Namespace) -> int:
    bodies = build_requests(args.spans, args.per_request)
    print("ready", flush=True)
    sys.stdin.readline()  # the bench says go
    t0 = time.time()
    stats = asyncio.run(_send_all(args.url, bodies, args.concurrency))
    stats.update(t0=t0, t1=time.time(), bytes=sum(map(len, bodies)))
    print(json.dumps(stats), flush=True)
    return 0


# --- the bench -----------------------------------------------------------------------------------


def _stored(url: str) -> int:
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('tracehouse_collector_written_items_total{signal="traces"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def _rss_anon_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # the server has exited: nothing to add to the peak
        pass
    return 0.0


_DECODERS = {"old": "python", "python": "python", "native": "native", "auto": "auto"}


def bench_main(args: argparse.Namespace) -> int:
    results = []
    for dec in args.decoder.split(","):
        if dec not in _DECODERS:
            raise SystemExit(f"unknown decoder {dec!r}: old, native or auto")
        r = run_once(args, dec)
        results.append(r)
        if not args.json:
            for k, v in r.items():
                print(f"{k:>26}: {v}")
            print()
    out = results[0] if len(results) == 1 else {"runs": results}
    if len(results) > 1:
        by = {r["decoder"]: r for r in results}
        if "old" in by and "native" in by:
            out["native_vs_old_stored"] = round(by["native"]["stored_spans_per_s"] / by["old"]["stored_spans_per_s"], 2)
    print(json.dumps(out))
    return 0 if all(r["lost"] == 0 and r["duplicates"] == 0 for r in results) else 1


def bulk_insert_rate(storage: str, bodies_args: argparse.Namespace) -> float:
    """The store's bulk-insert rate for the same spans: converted to columns first (not timed),
    then inserted in batches of 100k through ``Store.insert`` into a database of their own."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tracehouse.collector.convert import Limits, Stats, convert_traces, new_batch
    from tracehouse.collector.redact import Redactor
    from tracehouse.storage import Store

    bodies = build_requests(bodies_args.spans, bodies_args.per_request)
    chunks, b = [], new_batch("spans")
    red, lim, st = Redactor(), Limits(), Stats()
    for body in bodies:
        convert_traces(ExportTraceServiceRequest.FromString(body), b, red, lim, st)
        if len(b) >= 100_000:
            chunks.append(b.columns())
            b = new_batch("spans")
    if len(b):
        chunks.append(b.columns())
    del bodies
    base = storage.split("?", 1)[0] if storage.startswith("chdb://") else storage.rsplit("/", 1)[0]
    url = f"{base}?database=bulk" if storage.startswith("chdb://") else f"{base}/bulk_bench"
    with Store.open(url) as store:
        store.migrate()
        n = sum(len(c["trace_id"]) for c in chunks)
        t0 = time.perf_counter()
        for i, cols in enumerate(chunks):
            store.insert("spans", cols, batch_id=i + 1)
        dt = time.perf_counter() - t0
        store.query(f"DROP DATABASE IF EXISTS {store.db}")
    return n / dt


def run_once(args: argparse.Namespace, decoder: str) -> dict:
    import psutil

    tmp = tempfile.mkdtemp(prefix="th-bench-")
    data = os.path.join(tmp, "data")
    storage = args.storage or f"chdb://{data}?database=bench"
    otlp, http = free_port(), free_port()
    role = args.role
    if role == "auto":
        try:
            import tracehouse.dashboard  # noqa: F401

            role = "serve"
        except ImportError:
            role = "collector"
    env = dict(os.environ, TRACEHOUSE_BUFFER_DIR=os.path.join(tmp, "buffer"), TRACEHOUSE_LOG_LEVEL="warning",
               TRACEHOUSE_DECODER=_DECODERS[decoder])
    cmd = [sys.executable, "-m", "tracehouse.cli", role, "--storage", storage, "--otlp-port", str(otlp),
           "--http-port", str(http)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{otlp}"
    try:
        if not wait_port(otlp, 90):
            raise RuntimeError("server did not start")
        sender = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--sender", "--url", url + "/v1/traces",
                                   "--spans", str(args.spans), "--concurrency", str(args.concurrency),
                                   "--per-request", str(args.per_request)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert sender.stdout is not None and sender.stdin is not None
        if sender.stdout.readline().strip() != "ready":
            raise RuntimeError("sender failed")
        proc = psutil.Process(server.pid)
        cpu0 = proc.cpu_times()
        w0 = time.time()
        sender.stdin.write("go\n")
        sender.stdin.flush()
        rss = anon = 0.0
        stored_at = None
        while True:
            rss = max(rss, proc.memory_info().rss / 2**20)
            anon = max(anon, _rss_anon_mb(server.pid))
            if sender.poll() is not None and stored_at is None:
                if _stored(url) >= args.spans:
                    stored_at = time.time()
                    break
            if time.time() - w0 > args.timeout:
                raise RuntimeError(f"timed out: {_stored(url)} of {args.spans} stored")
            time.sleep(0.05)
        cpu1 = proc.cpu_times()
        sent = json.loads(sender.stdout.read().strip().splitlines()[-1])
        server.send_signal(signal.SIGTERM)
        server.wait(120)
        from tracehouse.storage import Store

        with Store.open(storage) as store:
            count = int(store.query(f"SELECT count() FROM {store.db}.spans").scalar())
            distinct = int(store.query(f"SELECT uniqExact(span_id) FROM {store.db}.spans").scalar())
            if args.storage:
                store.query(f"DROP DATABASE IF EXISTS {store.db}")
        send_s = sent["t1"] - sent["t0"]
        store_s = stored_at - sent["t0"]
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / max(stored_at - w0, 1e-9)
        bulk = bulk_insert_rate(storage, args)
        stored_rate = args.spans / store_s
        return {
            "decoder": decoder, "spans": args.spans, "concurrency": args.concurrency, "role": role,
            "requests": sent["requests"], "retries": sent["retries"], "mb_sent": round(sent["bytes"] / 2**20, 1),
            "accepted_spans_per_s": round(args.spans / send_s),
            "stored_spans_per_s": round(stored_rate),
            "bulk_insert_spans_per_s": round(bulk),
            "stored_vs_bulk_insert": round(stored_rate / bulk, 2),
            "stored_rows": count, "duplicates": count - distinct,
            "lost": args.spans - distinct,
            "collector_cpu_cores": round(cpu, 2),
            "collector_rss_mb": round(rss, 1),
            # RSS less the clean file-backed pages (chDB's ~200 MB library text): the memory the
            # process allocated itself
            "collector_anon_rss_mb": round(anon, 1),
        }
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spans", type=int, default=200_000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--per-request", type=int, default=300, dest="per_request")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--json", action="store_true", help="print only the JSON result line")
    p.add_argument("--storage", help="a clickhouse:// URL (its database is dropped afterwards) instead of "
                   "embedded chDB in a temporary directory")
    p.add_argument("--role", choices=["auto", "serve", "collector"], default="auto",
                   help="serve (whole server) or collector alone; auto = serve when the dashboard exists")
    p.add_argument("--decoder", default="auto",
                   help="old (Python), native (the engine), auto; comma-separated to compare in one run")
    p.add_argument("--sender", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return sender_main(args) if args.sender else bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
