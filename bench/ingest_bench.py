"""Ingest benchmark: OTLP protobuf over HTTP or gRPC into a real ``tracehouse`` server with embedded chDB.

    python bench/ingest_bench.py --spans 300000 --concurrency 8 --decoder old,native --json
    python bench/ingest_bench.py --protocol http,grpc --json     # both, one after the other, same bodies
    python bench/ingest_bench.py --spans 300000 --decoder old,native --rounds 3 --json  # medians of 3 rounds

``--decoder`` picks how the server turns stored requests into rows: ``old`` (Python, the
converter in ``collector/convert.py``), ``native`` (the embedded engine decodes them), ``auto``;
a comma-separated list runs the server once per decoder on the same requests. Each run is followed
by a bulk insert of the same spans straight through ``Store.insert`` (converted beforehand, not
timed), the store's own ceiling on this machine at that moment, and the run reports
stored/bulk-insert.


Starts ``tracehouse serve`` (or ``tracehouse collector`` when the dashboard is not there) on free
ports and temporary directories, sends pre-encoded requests (multi-service traces of 5-30 spans,
~10 attributes per span, a few hundred spans per request) from a separate process over C
connections (HTTP/1.1) or C concurrent calls on one channel (gRPC, as the OTLP exporters do), waits
until the collector reports every span written, stops the server, opens the chDB store here and
counts the spans exactly. With several protocols each gets a fresh server and the same bodies, and
the result adds their ratios. The last line printed is one JSON object.
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
from typing import TYPE_CHECKING

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from testkit.otlp_load import kv as _kv  # noqa: E402
from testkit.procmem import status_mb  # noqa: E402
from testkit.servers import free_port, wait_port  # noqa: E402

if TYPE_CHECKING:
    import psutil

SERVICES = ["frontend", "checkout", "cart", "payments", "inventory", "shipping", "users", "search"]
ROUTES = ["/api/cart", "/api/checkout", "/api/items/{id}", "/api/users/{id}", "/api/search", "/health"]


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


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    """The status, headers (lower-case names) and body of one HTTP/1.1 answer."""
    status = int((await reader.readline()).split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


class _RawConnection:
    """One keep-alive HTTP/1.1 connection that posts prepared bodies; opened on first use and
    again after an error or a ``Connection: close``."""

    _ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, IndexError)

    def __init__(self, host: str, port: int, path: str):
        self.host, self.port = host, port
        self.head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-protobuf\r\n"
                     "Content-Length: {}\r\n\r\n")
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes) -> tuple[int, dict, bytes] | None:
        """The answer, or None when the connection failed (closed, to be opened again)."""
        try:
            if self.conn is None:
                self.conn = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 30)
            reader, writer = self.conn
            writer.write(self.head.format(len(body)).encode())
            writer.write(body)
            answer = await asyncio.wait_for(_read_answer(reader), 60)
        except self._ERRORS:
            self.close()
            return None
        if answer[1].get("connection", "").lower() == "close":
            self.close()
        return answer

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
        self.conn = None


async def _send_all_raw(url: str, bodies: list[bytes], concurrency: int) -> dict:
    """The same requests as ``_send_all`` over plain asyncio streams: each connection writes a
    prepared HTTP/1.1 head and the body, reads the status line, headers and body of the answer.
    A load generator spending little CPU of its own (httpx spends ~1.7 CPU-s per 300k spans,
    on the same cores as the server), as C load generators do; retries like ``_send_all``."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host, port, path = u.hostname or "127.0.0.1", u.port or 80, u.path or "/"
    queue: asyncio.Queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    stats = {"requests": 0, "retries": 0, "errors": 0}

    async def send(conn: _RawConnection, body: bytes) -> None:
        while True:
            answer = await conn.post(body)
            if answer is None:
                stats["errors"] += 1
                await asyncio.sleep(0.5)
                continue
            status, headers, content = answer
            if status == 200:
                stats["requests"] += 1
                return
            if status not in (429, 503):
                raise RuntimeError(f"unexpected status {status}: {content[:200]!r}")
            stats["retries"] += 1
            await asyncio.sleep(min(float(headers.get("retry-after", "1")), 2.0))

    async def worker() -> None:
        conn = _RawConnection(host, port, path)
        try:
            while not queue.empty():
                await send(conn, queue.get_nowait())
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats


async def _send_all_grpc(target: str, bodies: list[bytes], concurrency: int) -> dict:
    import grpc
    from google.rpc import error_details_pb2

    queue: asyncio.Queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    stats = {"requests": 0, "retries": 0, "errors": 0}
    retryable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")

        async def worker() -> None:
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                while True:
                    try:
                        await call(body, timeout=60)
                    except grpc.aio.AioRpcError as e:
                        if e.code() not in retryable:
                            raise RuntimeError(f"unexpected status {e.code()}: {e.details()}") from None
                        stats["retries"] += 1
                        delay = 1.0
                        info = dict(e.trailing_metadata() or ()).get("google.rpc.retryinfo-bin")
                        if info:
                            d = error_details_pb2.RetryInfo.FromString(info).retry_delay
                            delay = d.seconds + d.nanos / 1e9
                        await asyncio.sleep(min(delay, 2.0))
                        continue
                    stats["requests"] += 1
                    break

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats


def sender_main(args: argparse.Namespace) -> int:
    bodies = build_requests(args.spans, args.per_request)
    print("ready", flush=True)
    sys.stdin.readline()  # the bench says go
    t0, c0 = time.time(), time.process_time()
    if args.protocol == "grpc":
        stats = asyncio.run(_send_all_grpc(args.url, bodies, args.concurrency))
    elif args.client == "raw":
        stats = asyncio.run(_send_all_raw(args.url, bodies, args.concurrency))
    else:
        stats = asyncio.run(_send_all(args.url, bodies, args.concurrency))
    stats["cpu_s"] = round(time.process_time() - c0, 2)
    stats.update(t0=t0, t1=time.time(), bytes=sum(map(len, bodies)))
    print(json.dumps(stats), flush=True)
    return 0


# --- the query load (a separate process): the most expensive reads the API allows -----------------

#: each a GET on the dashboard port, over the widest ranges the API accepts (31 days over raw spans,
#: 400 over the rollups): attribute search scans every span's attribute arrays, a duration filter
#: merges every trace summary, the overview and map merge every rollup state, a page runs ~10 queries.
EXPENSIVE_QUERIES = [
    "/api/traces?since=31d&attr=http.route%3D/api/nothing&limit=1000",
    "/api/traces?since=31d&min_duration_ms=0&limit=1000",
    "/api/traces?since=31d&service=payments&operation=process&status=error&limit=1000",
    "/api/services?since=400d",
    "/api/service-map?since=400d",
    "/api/services/frontend/operations?since=400d",
    "/api/services/checkout/series?since=400d&step=1d",
    "/api/logs?since=31d&q=nothing&limit=1000",
    "/api/metrics/names?since=31d",
    "/services/frontend?since=31d",
]


def queries_main(args: argparse.Namespace) -> int:
    """Run EXPENSIVE_QUERIES round-robin from ``args.concurrency`` threads until stdin closes."""
    import threading

    import httpx

    stop = threading.Event()
    stats = {"queries": 0, "errors": 0, "statuses": {}, "seconds": 0.0}
    lock = threading.Lock()

    def worker(i: int) -> None:
        with httpx.Client(base_url=args.url, timeout=120) as c:
            n = i
            while not stop.is_set():
                path = EXPENSIVE_QUERIES[n % len(EXPENSIVE_QUERIES)]
                n += 1
                t0 = time.perf_counter()
                try:
                    code = str(c.get(path).status_code)
                except httpx.HTTPError as e:
                    code = type(e).__name__
                with lock:
                    stats["queries"] += 1
                    stats["seconds"] += time.perf_counter() - t0
                    stats["statuses"][code] = stats["statuses"].get(code, 0) + 1
                    stats["errors"] += code not in ("200", "422", "504")

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    sys.stdin.readline()  # the bench says stop
    stop.set()
    for t in threads:
        t.join(150)
    print(json.dumps(stats), flush=True)
    return 0


def _preload(storage: str, n: int) -> None:
    """``n`` generated spans over the last hour, stored before the server starts, so that the
    queries have a realistic amount to read (not counted in the bench's own figures)."""
    from testkit.spangen import Gen, generate
    from tracehouse.storage import Store

    with Store.open(storage) as store:
        store.migrate()
        done = 0
        while done < n:
            cols, _ = generate(min(200_000, n - done), time.time_ns() - 3600 * 10**9, 3500 * 10**9, Gen(),
                               store=store)
            store.insert("spans", cols)
            done += len(cols["span_id"])


def _start_query_load(url: str, concurrency: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--queries", "--url", url,
                          "--concurrency", str(concurrency)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        raise RuntimeError("query load failed to start")
    return p


def _stop_query_load(p: subprocess.Popen) -> dict:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write("stop\n")
    p.stdin.flush()
    out = p.stdout.read().strip().splitlines()
    p.wait(180)
    stats = json.loads(out[-1])
    stats["mean_query_ms"] = round(1000 * stats.pop("seconds") / max(1, stats["queries"]), 1)
    return stats


# --- the bench -----------------------------------------------------------------------------------


def _stored(url: str) -> int:
    """Spans written, less the server's own (``--self-observe``) that it sent to itself."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    written = own = 0
    for line in text.splitlines():
        if line.startswith('tracehouse_collector_written_items_total{signal="traces"}'):
            written = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith('tracehouse_self_observe_exported_total{signal="traces"}'):
            own = int(float(line.rsplit(" ", 1)[1]))
    return written - own


def _rss_anon_mb(pid: int) -> float:
    try:
        return status_mb(pid, "RssAnon:")
    except OSError:  # the server has exited: nothing to add to the peak
        return 0.0


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of the server's live threads, by kind: ``python`` (threads the
    interpreter started: receivers, WAL, writer) and ``engine`` (threads the embedded engine
    started, named by it). A thread that has exited is not counted (per-insert feed threads)."""
    out = {"python": 0.0, "engine": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # the server has exited: nothing more to count
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        kind = "python" if comm.startswith("python") or comm.startswith("tracehouse") else "engine"
        out[kind] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


_DECODERS = {"old": "python", "python": "python", "native": "native", "auto": "auto"}


def bench_main(args: argparse.Namespace) -> int:
    protocols = ["http", "grpc"] if args.protocol == "both" else [p.strip() for p in args.protocol.split(",") if p.strip()]
    if not protocols or any(p not in ("http", "grpc") for p in protocols):
        raise SystemExit("--protocol takes http, grpc or both (http,grpc)")
    decoders = [d.strip() for d in args.decoder.split(",") if d.strip()]
    if not decoders or any(d not in _DECODERS for d in decoders):
        raise SystemExit("--decoder takes old, native or auto (comma-separated to compare)")
    runs = []
    rounds = max(1, args.rounds) if len(decoders) > 1 else 1
    for _ in range(rounds):  # decoders alternate round by round: each round sees one machine state
        for p in protocols:
            for d in decoders:
                if runs:  # let the previous run's writes reach the disk before the next server starts
                    os.sync()
                    time.sleep(5)
                runs.append(run_once(args, p, d))
    result = _rounds_summary(runs, protocols, decoders) if rounds > 1 else _summary(runs, protocols, decoders)
    if not args.json and len(runs) > 1:
        for k, v in result.items():
            if "_vs_" in k:
                print(f"{k}: {v}")
    print(json.dumps(result))
    return 0 if all(r["lost"] == 0 and r["duplicates"] == 0 for r in runs) else 1


def _summary(runs: list[dict], protocols: list[str], decoders: list[str]) -> dict:
    """One run's result, or several runs' with their ratios (protocols against the first, native against old)."""
    if len(runs) == 1:
        return runs[0]
    if len(decoders) == 1:
        result = {r["protocol"]: r for r in runs}
        base = runs[0]
        for r in runs[1:]:
            result[f"{r['protocol']}_vs_{base['protocol']}"] = _ratios(r, base)
        return result
    result = {"runs": runs}
    for p in protocols:
        by = {r["decoder"]: r for r in runs if r["protocol"] == p}
        if "old" in by and "native" in by:
            key = "native_vs_old" if len(protocols) == 1 else f"native_vs_old_{p}"
            result[key] = _ratios(by["native"], by["old"])
            result[key + "_stored"] = result[key]["stored_spans_per_s"]
    return result


def _rounds_summary(runs: list[dict], protocols: list[str], decoders: list[str]) -> dict:
    """Medians over the rounds of a decoder comparison: per decoder its stored rate and stored/bulk,
    and native/old taken round by round (each round's pair ran back to back)."""
    import statistics

    med: dict = {}
    for p in protocols:
        for d in decoders:
            mine = [r for r in runs if r["protocol"] == p and r["decoder"] == d]
            med[f"{d}_{p}" if len(protocols) > 1 else d] = {
                k: statistics.median(r[k] for r in mine)
                for k in ("stored_spans_per_s", "accepted_spans_per_s", "bulk_insert_spans_per_s",
                          "stored_vs_bulk_insert", "collector_cpu_s", "collector_python_cpu_s", "collector_engine_cpu_s",
                          "collector_rss_mb", "collector_anon_rss_mb")}
        if "old" in decoders and "native" in decoders:
            olds = [r for r in runs if r["protocol"] == p and r["decoder"] == "old"]
            nats = [r for r in runs if r["protocol"] == p and r["decoder"] == "native"]
            per_round = [round(n["stored_spans_per_s"] / o["stored_spans_per_s"], 3) for o, n in zip(olds, nats)]
            key = "native_vs_old_stored" + ("" if len(protocols) == 1 else f"_{p}")
            med[key] = {"per_round": per_round, "median": statistics.median(per_round)}
    return {"rounds": len(runs) // (len(protocols) * len(decoders)), "medians": med, "runs": runs}


def _ratios(r: dict, base: dict) -> dict:
    return {k: round(r[k] / base[k], 3) for k in ("accepted_spans_per_s", "stored_spans_per_s",
                                                  "collector_rss_mb", "collector_cpu_s") if base[k]}


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


def _watch_until_stored(proc: psutil.Process, sender: subprocess.Popen, url: str, args: argparse.Namespace,
                        w0: float) -> tuple[float, float, float]:
    """Samples the server's peak RSS (all, anonymous; MB) until the sender ended and every span is
    stored; returns them with the time it was."""
    rss = anon = 0.0
    while True:
        rss = max(rss, proc.memory_info().rss / 2**20)
        anon = max(anon, _rss_anon_mb(proc.pid))
        if sender.poll() is not None and _stored(url) >= args.spans:
            return rss, anon, time.time()
        if time.time() - w0 > args.timeout:
            raise RuntimeError(f"timed out: {_stored(url)} of {args.spans} stored")
        time.sleep(0.05)


def _count_stored(storage: str, args: argparse.Namespace) -> tuple[int, int]:
    """The bench's rows in ``spans`` and their distinct span ids (then drops a given store's database)."""
    from tracehouse.storage import Store

    with Store.open(storage) as store:
        # the server's own spans (--self-observe) and preloaded ones are not the bench's
        mine = " WHERE service != 'tracehouse'" + (
            " AND scope_name = 'opentelemetry.instrumentation.bench'" if getattr(args, "preload", 0) else "")
        count = int(store.query(f"SELECT count() FROM {store.db}.spans{mine}").scalar())
        distinct = int(store.query(f"SELECT uniqExact(span_id) FROM {store.db}.spans{mine}").scalar())
        if args.storage:
            store.query(f"DROP DATABASE IF EXISTS {store.db}")
    return count, distinct


def run_once(args: argparse.Namespace, protocol: str, decoder: str = "auto") -> dict:
    import psutil

    tmp = tempfile.mkdtemp(prefix="th-bench-")
    data = os.path.join(tmp, "data")
    storage = args.storage or f"chdb://{data}?database=bench"
    otlp, http, grpc_port = free_port(), free_port(), free_port()
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
           "--http-port", str(http), "--otlp-grpc-port", str(grpc_port)] + (
               ["--self-observe"] if args.self_observe == "on" else [])
    if getattr(args, "preload", 0):
        _preload(storage, args.preload)
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{otlp}"
    try:
        if not wait_port(otlp, 90) or not wait_port(grpc_port, 30):
            raise RuntimeError("server did not start")
        target = url + "/v1/traces" if protocol == "http" else f"127.0.0.1:{grpc_port}"
        sender = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--sender", "--url", target,
                                   "--protocol", protocol, "--client", args.client,
                                   "--spans", str(args.spans), "--concurrency", str(args.concurrency),
                                   "--per-request", str(args.per_request)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert sender.stdout is not None and sender.stdin is not None
        if sender.stdout.readline().strip() != "ready":
            raise RuntimeError("sender failed")
        proc = psutil.Process(server.pid)
        loader = None
        if getattr(args, "query_load", 0) > 0:
            if not wait_port(http, 90):
                raise RuntimeError("dashboard did not start")
            loader = _start_query_load(f"http://127.0.0.1:{http}", args.query_load)
        cpu0, threads0 = proc.cpu_times(), _thread_cpu(server.pid)
        w0 = time.time()
        sender.stdin.write("go\n")
        sender.stdin.flush()
        rss, anon, stored_at = _watch_until_stored(proc, sender, url, args, w0)
        cpu1, threads1 = proc.cpu_times(), _thread_cpu(server.pid)
        query_stats = _stop_query_load(loader) if loader is not None else None
        sent = json.loads(sender.stdout.read().strip().splitlines()[-1])
        server.send_signal(signal.SIGTERM)
        server.wait(120)
        count, distinct = _count_stored(storage, args)
        send_s = sent["t1"] - sent["t0"]
        store_s = stored_at - sent["t0"]
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / max(stored_at - w0, 1e-9)
        bulk = bulk_insert_rate(storage, args)
        stored_rate = args.spans / store_s
        result = {
            "protocol": protocol, "decoder": decoder, "spans": args.spans, "concurrency": args.concurrency,
            "role": role, "self_observe": args.self_observe,
            "requests": sent["requests"], "retries": sent["retries"], "mb_sent": round(sent["bytes"] / 2**20, 1),
            "client": args.client if protocol == "http" else "grpc.aio",
            "sender_cpu_s": sent.get("cpu_s"),
            "accepted_spans_per_s": round(args.spans / send_s),
            "stored_spans_per_s": round(stored_rate),
            "bulk_insert_spans_per_s": round(bulk),
            "stored_vs_bulk_insert": round(stored_rate / bulk, 2),
            "stored_rows": count, "duplicates": count - distinct,
            "lost": args.spans - distinct,
            "collector_cpu_cores": round(cpu, 2),
            # CPU seconds the server spent from the first request until everything was stored: less
            # sensitive than the rates to what else runs on the machine
            "collector_cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 1),
            # of which the interpreter's threads and the embedded engine's (live threads only)
            "collector_python_cpu_s": round(threads1["python"] - threads0["python"], 1),
            "collector_engine_cpu_s": round(threads1["engine"] - threads0["engine"], 1),
            "collector_rss_mb": round(rss, 1),
            # RSS less the clean file-backed pages (chDB's ~200 MB library text): the memory the
            # process allocated itself
            "collector_anon_rss_mb": round(anon, 1),
            "window": [round(w0, 2), round(stored_at, 2)],  # wall-clock go → all stored (for profilers)
        }
        if query_stats is not None:
            result["query_load"] = dict(query_stats, concurrency=args.query_load)
        if not args.json:
            for k, v in result.items():
                print(f"{k:>26}: {v}")
        return result
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
    p.add_argument("--client", choices=["raw", "httpx"], default="raw",
                   help="HTTP sender: plain asyncio streams (little CPU of its own) or httpx")
    p.add_argument("--protocol", default="http",
                   help="http, grpc, or both (= http,grpc): one after the other, same bodies, fresh servers")
    p.add_argument("--self-observe", choices=["off", "on", "both"], default="off", dest="self_observe",
                   help="serve with --self-observe; 'both' alternates off/on runs (--rounds each) and prints "
                        "the medians and their ratio")
    p.add_argument("--rounds", type=int, default=1,
                   help="runs of each setting with --self-observe both, or of each decoder with --decoder a,b "
                        "(alternating; medians printed)")
    p.add_argument("--query-load", type=int, default=0, dest="query_load", metavar="N",
                   help="also run the ingest while N clients loop over the most expensive queries the API "
                   "allows (needs --role serve); the bench then runs twice, quiet and loaded, and reports both")
    p.add_argument("--preload", type=int, default=0, metavar="SPANS",
                   help="store this many generated spans before the server starts (not counted in the figures)")
    p.add_argument("--queries", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sender", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sender:
        return sender_main(args)
    if args.queries:
        return queries_main(args)
    if args.query_load > 0:
        return compare_main(args)
    if args.self_observe != "both":
        return bench_main(args)
    return compare_self_observe(args)


def compare_self_observe(args: argparse.Namespace) -> int:
    """Off and on alternately in one run of the script (the same machine state for both)."""
    import contextlib
    import io
    import statistics

    runs: dict[str, list[dict]] = {"off": [], "on": []}
    status = 0
    for _ in range(args.rounds):
        for mode in ("off", "on"):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                status |= bench_main(argparse.Namespace(**dict(vars(args), self_observe=mode, json=True)))
            res = json.loads(out.getvalue().strip().splitlines()[-1])
            runs[mode].append(res)
            print(f"self_observe={mode}: accepted {res['accepted_spans_per_s']}/s, stored "
                  f"{res['stored_spans_per_s']}/s, lost {res['lost']}, cpu {res['collector_cpu_cores']}", flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("accepted_spans_per_s", "stored_spans_per_s",
                                                                 "collector_cpu_cores", "collector_rss_mb")}
           for m, rs in runs.items()}
    result = {"spans": args.spans, "rounds": args.rounds, "off": med["off"], "on": med["on"],
              "stored_ratio_on_off": round(med["on"]["stored_spans_per_s"] / med["off"]["stored_spans_per_s"], 3),
              "accepted_ratio_on_off": round(med["on"]["accepted_spans_per_s"] / med["off"]["accepted_spans_per_s"], 3),
              "runs": runs}
    print(json.dumps(result))
    return status


def compare_main(args: argparse.Namespace) -> int:
    """The same ingest twice in one invocation, quiet then under the query load; one JSON line with
    both and their ratio."""
    import contextlib
    import io

    runs = {}
    status = 0
    for name, load in (("quiet", 0), ("loaded", args.query_load)):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            status |= bench_main(argparse.Namespace(**dict(vars(args), query_load=load, json=True)))
        runs[name] = json.loads(buf.getvalue().strip().splitlines()[-1])
    ratio = runs["loaded"]["stored_spans_per_s"] / max(1, runs["quiet"]["stored_spans_per_s"])
    out = {"quiet": runs["quiet"], "loaded": runs["loaded"], "loaded_over_quiet": round(ratio, 3),
           "lost": runs["quiet"]["lost"] + runs["loaded"]["lost"]}
    if not args.json:
        for name in ("quiet", "loaded"):
            r = runs[name]
            print(f"{name:>7}: stored {r['stored_spans_per_s']} spans/s, lost {r['lost']}, "
                  f"duplicates {r['duplicates']}" + (f", queries {r['query_load']}" if "query_load" in r else ""))
        print(f"  ratio: {out['loaded_over_quiet']}")
    print(json.dumps(out))
    return status


if __name__ == "__main__":
    sys.exit(main())
