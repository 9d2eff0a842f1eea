"""Log conversion and insert, the native decoder against the Python one, in the same run: the same
pre-encoded ``ExportLogsServiceRequest`` bodies (string bodies with URLs to redact, a handful of
scalar attributes, trace context on most records, an SDK-like resource) stored in batches into a
fresh ``logs`` table of the embedded engine, by ``NativeLogs.insert`` (decode, flatten, redact,
limit, store) and by parsing + ``convert_logs`` + ``Store.insert`` (what the writer does otherwise).
Prints records/s, CPU seconds per 100k records (all threads of the process) and the peak of
anonymous memory over each run's start; the decoders alternate, ``--rounds`` times each.

    python bench/native_logs_bench.py --records 300000 --batch 100000 --rounds 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.native_engine_bench import measure  # noqa: E402

SERVICES = ("frontend", "cart", "checkout", "payments", "inventory")


def build_requests(total: int, per_request: int, seed: int = 11) -> list[bytes]:
    """Pre-encoded log requests holding ``total`` records in all."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from testkit.otlp_load import kv

    rnd = random.Random(seed)
    out: list[bytes] = []
    made = 0
    base = time.time_ns() - 60_000_000_000
    while made < total:
        req = ExportLogsServiceRequest()
        svc = SERVICES[len(out) % len(SERVICES)]
        rl = req.resource_logs.add()
        rl.resource.attributes.extend([
            kv("service.name", svc), kv("service.version", "1.4.2"), kv("host.name", f"host-{rnd.randint(1, 4)}"),
            kv("service.instance.id", f"{svc}-{rnd.randint(1, 3)}"), kv("telemetry.sdk.language", "python"),
            kv("process.pid", rnd.randint(100, 9000)), kv("process.command_args", ["python", "-m", svc])])
        sl = rl.scope_logs.add()
        sl.scope.name = f"{svc}.handlers"
        n = min(per_request, total - made)
        for i in range(n):
            r = sl.log_records.add()
            r.time_unix_nano = r.observed_time_unix_nano = base + rnd.randint(0, 50_000_000_000)
            r.severity_number, r.severity_text = (9, "INFO") if i % 10 else (17, "ERROR")
            route = f"/api/{svc}/{rnd.randint(1, 40)}"
            r.body.string_value = (f"GET {route}?session=abc{i} took {rnd.randint(1, 900)} ms" if i % 7 == 0
                                   else f"handled {route} for user {rnd.randint(1, 10_000)} in {rnd.randint(1, 900)} ms")
            if i % 4:
                r.trace_id, r.span_id = rnd.randbytes(16), rnd.randbytes(8)
                r.flags = 1
            r.attributes.extend([kv("code.function", "handle"), kv("code.lineno", 40 + i % 30),
                                 kv("http.route", route), kv("http.response.status_code", 200 if i % 10 else 500),
                                 kv("user.id", str(rnd.randint(1, 10_000))), kv("retry", bool(i % 2))])
        out.append(req.SerializeToString())
        made += n
    return out


def run(decoder: str, bodies: list[bytes], batch: int, per_request: int, tmp: str, round_no: int) -> dict:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from tracehouse.collector.convert import Limits, Stats, convert_logs, new_batch
    from tracehouse.collector.native_logs import NativeLogs
    from tracehouse.collector.redact import Redactor
    from tracehouse.storage import Store

    per = max(1, batch // per_request)
    batches = [bodies[i:i + per] for i in range(0, len(bodies), per)]
    red, lim = Redactor(), Limits()
    with Store.open(f"chdb://{tmp}/data?database=bench_{decoder}_{round_no}") as store:
        store.migrate()
        nl = NativeLogs(store, red, lim, os.path.join(tmp, "schemas"))
        nl.open()
        nl.insert(batches[0][:1], 1, f"warm-up-{round_no}")  # the engine's first analysis, for both
        store.query(f"TRUNCATE TABLE {store.db}.logs")

        def native() -> None:
            for i, b in enumerate(batches):
                nl.insert(b, i + 2, f"bench-{round_no}-{i}")

        def python() -> None:
            for i, b in enumerate(batches):
                st = Stats()
                rows = new_batch("logs")
                for body in b:
                    convert_logs(ExportLogsServiceRequest.FromString(body), rows, red, lim, st)
                store.insert("logs", rows.columns(), batch_id=i + 2)

        dt, cpu, anon = measure(native if decoder == "native" else python)
        rows = int(store.query(f"SELECT count() FROM {store.db}.logs").scalar())
        store.query(f"DROP DATABASE IF EXISTS {store.db}")
        store.query(f"DROP DATABASE IF EXISTS {store.db}_ingest")
    return {"decoder": decoder, "round": round_no, "batch_records": batch, "rows": rows,
            "records_per_s": round(rows / dt), "cpu_s_per_100k": round(cpu / rows * 1e5, 2),
            "anon_peak_over_start_mb": round(anon)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=300_000)
    p.add_argument("--batch", type=int, default=100_000, help="records per insert")
    p.add_argument("--per-request", type=int, default=100, dest="per_request")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    bodies = build_requests(args.records, args.per_request)
    tmp = tempfile.mkdtemp(prefix="th-native-logs-bench-")
    runs = []
    try:
        for n in range(args.rounds):
            order = ("native", "python") if n % 2 == 0 else ("python", "native")
            for decoder in order:
                r = run(decoder, bodies, args.batch, args.per_request, tmp, n)
                assert r["rows"] == args.records, r
                runs.append(r)
                if not args.json:
                    print(", ".join(f"{k} {v}" for k, v in r.items()), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rate = {d: [r["records_per_s"] for r in runs if r["decoder"] == d] for d in ("native", "python")}
    ratio = [round(a / b, 2) for a, b in zip(rate["native"], rate["python"])]
    print(json.dumps({"runs": runs, "native_over_python": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
