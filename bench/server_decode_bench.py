"""Could the embedded engine decode for a ClickHouse server? The same trace requests, two ways, into
the ``spans`` table (with its rollup views) of one server:

- ``python``: what a collector whose storage is a server does today: ``convert.convert_traces``
  into columns, then ``Store.insert`` (clickhouse-driver, native protocol) per batch;
- ``chdb``: chDB decodes the requests (``Protobuf`` input format) and flattens them with the native
  decoder's statement (``native_traces.flatten_select``, as ``collector/native.py`` runs it), its
  output cast to the server table's types and written as ``Native``; the bytes are POSTed to the
  server's HTTP interface (``INSERT INTO … FORMAT Native``).

    python bench/server_decode_bench.py --storage clickhouse://default:@127.0.0.1:9000/db \\
        --http-port 8123 --server-pid PID --spans 100000 --rounds 3

Reports, per 100k spans and per path: the collector's CPU-s (this process: conversion and encoding
in Python, or chDB's decode + the POST), the server's CPU-s (from /proc/PID with ``--server-pid``),
wall seconds; whether both paths stored the same rows (a checksum over every column but
``batch_id``); and what loading chDB adds to this process's RSS. Rounds alternate the paths. The
last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_bench import build_requests  # noqa: E402


def _rss_mb() -> tuple[float, float]:
    rss = anon = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) / 1024
    return rss, anon


def _proc_cpu(pid: int | None) -> float:
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _batches(bodies: list[bytes], spans_per_batch: int, per_request: int) -> list[list[bytes]]:
    n = max(1, spans_per_batch // per_request)
    return [bodies[i:i + n] for i in range(0, len(bodies), n)]


class PythonPath:
    def __init__(self, store):
        from tracehouse.collector.convert import Limits
        from tracehouse.collector.redact import Redactor

        self.store, self.red, self.lim = store, Redactor(), Limits()

    def run(self, batches: list[list[bytes]], first_id: int) -> dict:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        from tracehouse.collector.convert import Stats, convert_traces, new_batch

        convert = insert = 0.0
        for i, batch in enumerate(batches):
            t = time.process_time()
            b, st = new_batch("spans"), Stats()
            for body in batch:
                convert_traces(ExportTraceServiceRequest.FromString(body), b, self.red, self.lim, st)
            cols = b.columns()
            t2 = time.process_time()
            self.store.insert("spans", cols, batch_id=first_id + i)
            insert += time.process_time() - t2
            convert += t2 - t
        return {"convert_cpu_s": convert, "insert_cpu_s": insert}


class ChdbPath:
    """chDB as a decoder only: requests in, a ``Native`` block of the server's ``spans`` columns out."""

    def __init__(self, store, http_url: str, workdir: str):
        from chdb import session as chdb_session

        from tracehouse.collector import native_traces
        from tracehouse.collector.convert import Limits
        from tracehouse.collector.native_schema import message_name
        from tracehouse.collector.native_sql import Sql
        from tracehouse.collector.redact import Redactor
        from tracehouse.storage.schema import SPANS, render_type

        self.store, self.http_url = store, http_url
        self.session = chdb_session.Session(os.path.join(workdir, "chdb"))
        path = os.path.join(workdir, "otlp_traces.proto")
        with open(path, "w", encoding="utf-8") as f:
            f.write(native_traces.proto())
        self.schema = f"{path}:{message_name(native_traces.ROOT)}"
        self.structure = ", ".join(f"{n} {t}" for n, t in native_traces.input_columns())
        flat = native_traces.flatten_select(Sql(Redactor(), Limits()), "{input}")
        # the server's column types (no LowCardinality on 18.16): what its Native input must carry
        casts = ", ".join(f"CAST({c.name}, '{render_type(c.type, store.caps)}') AS {c.name}" for c in SPANS.columns)
        self.names = ", ".join(c.name for c in SPANS.columns)
        self.select = f"SELECT {casts} FROM ({flat}) WHERE fallback = 0"
        import httpx

        self.http = httpx.Client(timeout=120)

    def stream(self, payloads: list[bytes], batch_id: int) -> bytes:
        from google.protobuf.internal.encoder import _VarintBytes

        from tracehouse.collector.native_schema import BATCH_FIELD, RECORD_FIELD

        out = []
        tail_b = _VarintBytes(BATCH_FIELD[1] << 3) + _VarintBytes(batch_id)
        rtag = _VarintBytes(RECORD_FIELD[1] << 3)
        for i, p in enumerate(payloads):
            tail = rtag + _VarintBytes(i) + tail_b
            out += [_VarintBytes(len(p) + len(tail)), p, tail]
        return b"".join(out)

    def encode(self, payloads: list[bytes], batch_id: int) -> bytes:
        from tracehouse.collector.native import requests_per_block
        from tracehouse.collector.native_sql import lit

        data = self.stream(payloads, batch_id)
        fd = os.memfd_create("tracehouse-bench", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            src = f"file('/proc/self/fd/{fd}', 'Protobuf', {lit(self.structure)})"
            sql = (f"{self.select.replace('{input}', src)} SETTINGS format_schema = '{self.schema}', "
                   "input_format_protobuf_oneof_presence = 1, schema_inference_use_cache_for_file = 0, "
                   f"max_block_size = {requests_per_block(payloads)}, max_threads = 1")
            return self.session.query(sql, "Native").bytes()
        finally:
            os.close(fd)

    def post(self, block: bytes) -> None:
        q = f"INSERT INTO {self.store.db}.spans ({self.names}) FORMAT Native"
        r = self.http.post(self.http_url, params={"query": q}, content=block)
        if r.status_code != 200:
            raise RuntimeError(f"the server refused the Native block: {r.status_code} {r.text[:500]}")

    def run(self, batches: list[list[bytes]], first_id: int) -> dict:
        decode = post = 0.0
        nbytes = 0
        for i, batch in enumerate(batches):
            t = time.process_time()
            block = self.encode(batch, first_id + i)
            t2 = time.process_time()
            self.post(block)
            post += time.process_time() - t2
            decode += t2 - t
            nbytes += len(block)
        return {"decode_cpu_s": decode, "post_cpu_s": post, "native_block_mb": nbytes / 2**20}


def _checksum(store, db: str) -> tuple[int, int]:
    from tracehouse.storage.schema import SPANS

    cols = ", ".join(c.name for c in SPANS.columns if c.name != "batch_id")
    row = store.query(f"SELECT count(), sum(cityHash64({cols})) FROM {db}.spans").rows[0]
    return int(row[0]), int(row[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storage", required=True, help="clickhouse://user:password@host:port/database (dropped after)")
    p.add_argument("--http-port", type=int, required=True, dest="http_port", help="the same server's HTTP port")
    p.add_argument("--server-pid", type=int, default=0, dest="server_pid", help="its PID, for its CPU time")
    p.add_argument("--spans", type=int, default=100_000)
    p.add_argument("--per-request", type=int, default=300, dest="per_request")
    p.add_argument("--batch", type=int, default=50_000, help="spans per insert (the writer's max_batch_items)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)

    from tracehouse.storage import Store

    bodies = build_requests(args.spans, args.per_request)
    batches = _batches(bodies, args.batch, args.per_request)
    base = args.storage.rsplit("/", 1)[0]
    host = base.rsplit("@", 1)[-1].rsplit(":", 1)[0]
    http_url = f"http://{host}:{args.http_port}/"
    work = tempfile.mkdtemp(prefix="th-server-decode-")
    stores = {}
    for name in ("python", "chdb"):
        stores[name] = Store.open(f"{base}/sdb_{name}")
        stores[name].migrate()
    gc.collect()
    rss0 = _rss_mb()
    chdb_path = ChdbPath(stores["chdb"], http_url, work)
    chdb_path.encode(batches[0][:1], 1)  # the engine started: what loading it costs this process
    rss1 = _rss_mb()
    paths = {"python": PythonPath(stores["python"]), "chdb": chdb_path}
    runs: dict[str, list[dict]] = {"python": [], "chdb": []}
    gc.disable()  # as the writer does while a batch is alive
    try:
        for r in range(args.rounds):
            for name in ("python", "chdb") if r % 2 == 0 else ("chdb", "python"):
                stores[name].query(f"TRUNCATE TABLE {stores[name].db}.spans")
                s0, w0 = _proc_cpu(args.server_pid), time.perf_counter()
                c0 = time.process_time()
                res = paths[name].run(batches, 1000 * (r + 1))
                res["collector_cpu_s"] = time.process_time() - c0
                res["wall_s"] = time.perf_counter() - w0
                res["server_cpu_s"] = _proc_cpu(args.server_pid) - s0
                res["peak_rss_mb"] = _rss_mb()[0]
                runs[name].append(res)
                print(name, {k: round(v, 3) for k, v in res.items()}, flush=True)
                gc.collect()
        same = _checksum(stores["python"], stores["python"].db) == _checksum(stores["chdb"], stores["chdb"].db)
        rows = _checksum(stores["chdb"], stores["chdb"].db)[0]
    finally:
        gc.enable()
        for s in stores.values():
            s.query(f"DROP DATABASE IF EXISTS {s.db}")
            s.close()
    per = 100_000 / args.spans
    out: dict = {"spans": args.spans, "batch": args.batch, "rounds": args.rounds, "rows_stored": rows,
                 "same_rows": same,
                 "chdb_extra_rss_mb": round(rss1[0] - rss0[0], 1), "chdb_extra_anon_rss_mb": round(rss1[1] - rss0[1], 1)}
    for name, rs in runs.items():
        # per 100k spans, but the peak RSS
        out[name] = {k: round(statistics.median(r[k] for r in rs) * (1 if k == "peak_rss_mb" else per), 3)
                     for k in rs[0]}
    out["per_100k_spans"] = True
    out["chdb_vs_python"] = {k: round(out["chdb"][k] / out["python"][k], 3)
                             for k in ("collector_cpu_s", "server_cpu_s", "wall_s") if out["python"][k]}
    print(json.dumps(out))
    return 0 if same and rows == args.spans else 1


if __name__ == "__main__":
    sys.exit(main())
