"""Seed data for the dashboard tests and benchmark: generated traffic, one hand-built trace with a
known tree, hostile strings, logs, snapshots and metrics."""

from __future__ import annotations

import json
import os
import time

from testkit import metricgen
from testkit.spangen import Gen, generate
from tracehouse.storage.attrs import encode_map

NS = 1_000_000_000
MS = 1_000_000
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '"><img src=x onerror=alert(1)>'
XSS_SERVICE = f"evil{XSS_SCRIPT}"
XSS_METRIC = f"evil.metric{XSS_IMG}"

# The known trace: (span key, parent key, service, name, start offset ms, duration ms, error)
TREE = [
    ("root", None, "shop", "GET /checkout", 0, 100, False),
    ("auth", "root", "shop", "auth call", 2, 10, False),
    ("authsrv", "auth", "auth", "POST /verify", 3, 8, False),
    ("db", "root", "shop", "SELECT cart", 14, 20, False),
    ("pay", "root", "shop", "payments call", 36, 60, True),
    ("paysrv", "pay", "payments", "POST /charge", 37, 58, True),
    ("paydb", "paysrv", "payments", "INSERT charge", 40, 10, False),
    ("bank", "paysrv", "payments", "bank call", 52, 42, True),
]
CRITICAL = ["root", "pay", "paysrv", "bank"]


def span_row(cols, trace_id: bytes, span_id: bytes, parent: bytes, service: str, name: str, start: int,
             dur: int, attrs: dict, kind: int = 2, error: bool = False, resource: dict | None = None) -> None:
    k, v, t = encode_map(attrs)
    res = resource or {"service.name": service, "host.name": "node-1"}
    row = dict(timestamp=start // NS, trace_id=trace_id, span_id=span_id, parent_span_id=parent, trace_state="",
               service=service, name=name, kind=kind, status_code=2 if error else 0,
               status_message="card declined" if error else "", start_ns=start, duration_ns=dur, attr_keys=k,
               attr_values=v, attr_types=t, resource_keys=list(res), resource_values=[str(x) for x in res.values()],
               scope_name="tracehouse.agent", scope_version="0.1.0",
               events_time_ns=[start + dur // 2] if error else [], events_name=["exception"] if error else [],
               events_attrs=[json.dumps({"exception.type": "CardError"})] if error else [],
               links_trace_id=[], links_span_id=[], links_attrs=[])
    for key, val in row.items():
        cols[key].append(val)


def known_trace(store, t0: int) -> tuple[str, dict[str, str]]:
    """Insert the TREE trace; returns (trace id hex, span key → span id hex)."""
    cols = store.columns_for("spans")
    tid = os.urandom(16)
    ids = {key: os.urandom(8) for key, *_ in TREE}
    for key, parent, service, name, off, dur, err in TREE:
        kind = 3 if name.endswith("call") or name.startswith(("SELECT", "INSERT")) else 2
        attrs = {"http.route": name, "order.id": "o-42"}
        if name.startswith(("SELECT", "INSERT")):
            attrs.update({"db.system": "postgresql", "server.address": "127.0.0.1", "server.port": 5432})
        span_row(cols, tid, ids[key], ids[parent] if parent else b"\x00" * 8, service, name, t0 + off * MS, dur * MS,
                 attrs, kind, err)
    store.insert("spans", cols)
    return tid.hex(), {k: v.hex() for k, v in ids.items()}


def xss_trace(store, t0: int) -> str:
    cols = store.columns_for("spans")
    tid = os.urandom(16)
    root = os.urandom(8)
    span_row(cols, tid, root, b"\x00" * 8, XSS_SERVICE, f"GET {XSS_SCRIPT}", t0, 30 * MS,
             {XSS_SCRIPT: XSS_IMG, "note": XSS_SCRIPT, XSS_IMG: "k"}, resource={"service.name": XSS_SERVICE,
                                                                              "host.name": XSS_IMG})
    span_row(cols, tid, os.urandom(8), root, XSS_SERVICE, XSS_IMG, t0 + 2 * MS, 10 * MS, {"x": XSS_IMG}, 3, True)
    store.insert("spans", cols)
    return tid.hex()


def big_trace(store, t0: int, n: int = 5000) -> str:
    """One trace of ``n`` spans: a root with a fan-out of chains, depth up to 6."""
    cols = store.columns_for("spans")
    tid = os.urandom(16)
    ids = [os.urandom(8) for _ in range(n)]
    for i in range(n):
        parent = b"\x00" * 8 if i == 0 else ids[0] if i % 6 == 1 else ids[i - 1]
        span_row(cols, tid, ids[i], parent, f"svc-{i % 7}", f"op {i % 50}", t0 + i * 100_000,
                 max(1, (n - i)) * 100_000 // 10 + 50_000, {"i": i, "db.statement": "SELECT 1"}, 2 if i % 6 == 1 else 3,
                 i % 97 == 0)
    store.insert("spans", cols)
    return tid.hex()


def logs_and_snapshots(store, now: int, trace_id: str, span_id: str) -> list[str]:
    """Two log lines on the known trace, a thread snapshot, a memory snapshot and a hostile one."""
    cols = store.columns_for("logs")
    threads = {"kind": "threads", "reason": "slow request", "threads": [
        {"name": f"worker-{i}", "id": 100 + i, "daemon": True,
         "stack": [{"file": "app/db.py", "line": 88, "function": "fetch_rows", "code": "cur.execute(q)"},
                   {"file": "app/views.py", "line": 12, "function": "checkout", "code": "rows = fetch_rows()"}]}
        for i in range(3)] + [{"name": "MainThread", "id": 1, "daemon": False,
                               "stack": [{"file": "server.py", "line": 5, "function": "serve_forever", "code": ""}]}]}
    memory = {"kind": "memory", "memory": {"rss": 256 * 1024 * 1024,
                                           "top": [{"file": "app/cache.py", "line": 40, "size": 50_000_000, "count": 1200}],
                                           "growth": [{"file": "app/cache.py", "line": 40, "size": 9_000_000,
                                                       "count": 300}]}}
    hostile = {"kind": XSS_SCRIPT, "threads": [{"name": XSS_IMG, "id": 1, "stack": [
        {"file": XSS_SCRIPT, "line": 1, "function": XSS_IMG, "code": XSS_SCRIPT}]}]}
    recs = [
        (now - 5 * NS, 9, "INFO", "shop", "", "checkout started", trace_id, span_id),
        (now - 4 * NS, 17, "ERROR", "payments", "", "card declined " + XSS_SCRIPT, trace_id, span_id),
        (now - 3 * NS, 13, "WARN", "shop", "tracehouse.snapshot", json.dumps(threads), trace_id, span_id),
        (now - 2 * NS, 13, "WARN", "payments", "tracehouse.snapshot", json.dumps(memory), "", ""),
        (now - 1 * NS, 13, "WARN", XSS_SERVICE, "tracehouse.snapshot", json.dumps(hostile), "", ""),
    ]
    ids = []
    for ts, sev, sevtext, service, event, body, tid, sid in recs:
        log_row(cols, ts, service, event, body, {"snapshot.reason": "slow request"} if event else {"logger": "app"},
                (sev, sevtext), tid, sid, flags=1, scope="app")
        if event:
            ids.append(f"{ts}-{service}")
    store.insert("logs", cols)
    return ids


def log_row(cols, ts: int, service: str, event: str, body: str, attrs: dict, severity: tuple[int, str] = (9, "INFO"),
            trace_id: str = "", span_id: str = "", flags: int = 0, scope: str = "") -> None:
    """One row of ``logs`` appended to ``cols`` (``store.columns_for("logs")``)."""
    k, v, t = encode_map(attrs)
    row = dict(timestamp=ts // NS, ts_ns=ts, observed_ns=ts, trace_id=bytes.fromhex(trace_id) if trace_id else b"\x00" * 16,
               span_id=bytes.fromhex(span_id) if span_id else b"\x00" * 8, flags=flags, severity_number=severity[0],
               severity_text=severity[1], service=service, instance="i-1", event_name=event, body=body, attr_keys=k,
               attr_values=v, attr_types=t, resource_keys=["service.name"], resource_values=[service],
               scope_name=scope, scope_version="")
    for key, val in row.items():
        cols[key].append(val)


def snapshot_records(store, now: int, service: str, bodies: list[str]) -> list[str]:
    """Snapshot log records of ``service`` with these bodies (as any ingest client could send
    them), one a millisecond apart before ``now``; their page ids."""
    cols = store.columns_for("logs")
    ids = []
    for i, body in enumerate(bodies):
        ts = now - (i + 1) * 1_000_000
        log_row(cols, ts, service, "tracehouse.snapshot", body, {"snapshot.kind": "threads"}, (13, "WARN"))
        ids.append(f"{ts}-{service}")
    store.insert("logs", cols)
    return ids


def metrics(store, now: int) -> None:
    cols = store.columns_for("metric_points")
    defaults = dict(start_ns=now - 600 * NS, description="", unit="1", temporality=2, is_monotonic=0, flags=0,
                    scope_name="", scope_version="", count=0, sum=0.0, min=0.0, max=0.0, bucket_counts=[],
                    explicit_bounds=[], exp_scale=0, exp_zero_count=0, exp_positive_offset=0, exp_positive_counts=[],
                    exp_negative_offset=0, exp_negative_counts=[], quantiles=[], quantile_values=[],
                    exemplar_trace_ids=[], exemplar_span_ids=[], exemplar_values=[], exemplar_times_ns=[], type=1)
    points = []
    for i in range(20):
        ts = now - i * 30 * NS
        res_host = {"service.name": "orders", "host.name": "node-1"}
        res_ctr = {"service.name": "orders", "host.name": "node-1", "container.id": "c0ffee1234567890",
                   "container.name": "orders-1"}
        points += [
            ("orders", "system.cpu.utilization", 0.2 + i * 0.01, res_host, {}),
            ("orders", "system.memory.usage", 2e9 + i * 1e6, res_host, {}),
            ("orders", "container.cpu.utilization", 0.3, res_ctr, {}),
            ("orders", "container.memory.usage", 5e8, res_ctr, {}),
            ("orders", "process.cpu.utilization", 0.1, res_host, {}),
            ("orders", "tracehouse.probe.up", 1.0, res_host, {"probe.target": "postgresql://db:5432"}),
            ("orders", "tracehouse.probe.up", 0.0 if i < 3 else 1.0, res_host, {"probe.target": "redis://cache:6379"}),
            ("orders", "tracehouse.probe.duration", 0.004, res_host, {"probe.target": "postgresql://db:5432"}),
        ]
        for service, name, value, res, attrs in points[-8:]:
            k, v, t = encode_map(attrs)
            unit = "By" if name.endswith("memory.usage") else "s" if name.endswith("duration") else "1"
            row = dict(defaults, timestamp=ts // NS, ts_ns=ts, service=service, instance="i-1", name=name, unit=unit,
                       attr_keys=k, attr_values=v, attr_types=t, value=value, resource_keys=list(res),
                       resource_values=list(res.values()))
            for key, val in row.items():
                cols[key].append(val)
    store.insert("metric_points", cols)


def thread_snapshots(store, now: int, service: str = "orders", n: int = 6) -> None:
    """``n`` thread snapshots of ``service`` over the last minutes: 4 threads each, 3 of them in
    checkout → fetch_rows, one idle in serve_forever (stacks innermost first, as the agent sends)."""
    cols = store.columns_for("logs")
    for i in range(n):
        ts = now - (i + 10) * 20 * NS
        threads = [{"name": f"worker-{j}", "id": j, "stack": [
            {"file": "app/db.py", "line": 88 + j, "function": "fetch_rows"},
            {"file": "app/views.py", "line": 12, "function": "checkout"},
            {"file": "server.py", "line": 40, "function": "handle"}]} for j in range(3)]
        threads.append({"name": "MainThread", "id": 99, "stack": [
            {"file": "server.py", "line": 5, "function": "serve_forever"}, {"file": "main.py", "line": 1,
                                                                             "function": "<module>"}]})
        log_row(cols, ts, service, "tracehouse.snapshot", json.dumps({"kind": "threads", "threads": threads}),
                {"snapshot.kind": "threads", "snapshot.reason": "sampled"})
    store.insert("logs", cols)


def hostile_telemetry(store, now: int) -> None:
    """A log record and a metric whose every field is a payload."""
    cols = store.columns_for("logs")
    k, v, t = encode_map({XSS_SCRIPT: XSS_IMG, "note": XSS_IMG})
    row = dict(timestamp=now // NS, ts_ns=now, observed_ns=now, trace_id=b"\x00" * 16, span_id=b"\x00" * 8, flags=0,
               severity_number=17, severity_text=XSS_SCRIPT, service=XSS_SERVICE, instance=XSS_IMG, event_name="",
               body=f"body {XSS_SCRIPT} {XSS_IMG}", attr_keys=k, attr_values=v, attr_types=t,
               resource_keys=[XSS_IMG], resource_values=[XSS_SCRIPT], scope_name="", scope_version="")
    for key, val in row.items():
        cols[key].append(val)
    store.insert("logs", cols)
    mcols = store.columns_for("metric_points")
    for i in range(5):
        metricgen.point(mcols, now - i * 30 * NS, XSS_SERVICE, XSS_METRIC, {XSS_SCRIPT: XSS_IMG},
                        {XSS_IMG: XSS_SCRIPT}, value=float(i), unit=XSS_IMG, description=XSS_SCRIPT)
    store.insert("metric_points", mcols)


def seed_all(store, n_spans: int = 3000) -> dict:
    now = time.time_ns()
    cols, trace_ids = generate(n_spans, now - 600 * NS, 590 * NS, Gen(error_rate=0.1), store=store)
    store.insert("spans", cols)
    tid, ids = known_trace(store, now - 120 * NS)
    xtid = xss_trace(store, now - 100 * NS)
    snaps = logs_and_snapshots(store, now, tid, ids["paysrv"])
    metrics(store, now)
    mcols = store.columns_for("metric_points")
    metricgen.request_durations(mcols, now, 10, ["orders", "payments"], trace_ids[:200])
    store.insert("metric_points", mcols)
    thread_snapshots(store, now)
    hostile_telemetry(store, now - 50 * NS)
    return {"now": now, "trace_id": tid, "span_ids": ids, "xss_trace_id": xtid, "snapshot_ids": snaps,
            "trace_ids": [t.hex() for t in trace_ids]}
