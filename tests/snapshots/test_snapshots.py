"""Fault snapshots end to end: gunicorn apps under the agent → a real ``tracehouse serve`` → its API."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from tests.snapshots.helpers import App, http, wait_for

APP_FILE = os.path.join(os.path.dirname(__file__), "app.py")


def _line(marker: str) -> int:
    with open(APP_FILE) as f:
        return next(i for i, text in enumerate(f, 1) if marker in text)


def _by_trigger(server, service, trigger, n=1, timeout=20.0):
    return wait_for(lambda: [r for r in server.snapshots(service) if r["parsed"]["trigger"] == trigger]
                    if len([r for r in server.snapshots(service) if r["parsed"]["trigger"] == trigger]) >= n else None,
                    timeout, what=f"{n} {trigger} snapshot(s) of {service}")


def test_slow_request_on_a_lock_is_captured_and_linked_to_its_trace(server):
    app = App(server, "snap-lock")
    try:
        status, _ = app.get("/hang?hold=2.5")
        assert status == 200
        rec = _by_trigger(server, "snap-lock", "slow_request")[0]
    finally:
        app.stop()
    body = rec["parsed"]
    assert body["kind"] == "threads" and rec["event_name"] == "tracehouse.snapshot"
    names = {t["name"] for t in body["threads"]}
    assert "lock-holder" in names
    holder = next(t for t in body["threads"] if t["name"] == "lock-holder")
    assert holder["stack"][0]["function"] == "hold_lock"
    waiting = next(t for t in body["threads"] if t.get("request"))
    top = waiting["stack"][0]
    assert (top["function"], top["line"]) == ("hang", _line("# HANG-LINE"))
    assert "LOCK.acquire()" in top["code"]
    assert body["request"]["path"] == "/hang" and body["request"]["elapsed_ms"] >= 1000
    assert all("locals" not in f for t in body["threads"] for f in t["stack"])  # off by default
    assert body["groups"] and sum(g["count"] for g in body["groups"]) == len(body["threads"])
    # the record's trace context is the request's server span
    assert rec["trace_id"] and rec["attributes"]["snapshot.trace_id"] == rec["trace_id"]
    trace = wait_for(lambda: (lambda r: r[1] if r[0] == 200 else None)(
        http("GET", f"{server.api}/traces/{rec['trace_id']}")), 15, what="the request's trace")
    spans = trace["spans"]
    server_span = next(s for s in spans if s["service"] == "snap-lock" and "/hang" in json.dumps(s))
    assert server_span["span_id"] == rec["span_id"]


def test_memory_snapshot_growth_points_at_the_leaking_line(server):
    app = App(server, "snap-leak", env={"TRACEHOUSE_SNAPSHOT_MEMORY_WINDOW_S": "2"})
    try:
        status, req = http("POST", f"{server.api}/snapshots", {"service": "snap-leak", "kind": "memory",
                                                                "reason": "leak hunt"})
        assert status == 201, req
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:  # leak while the window is open
            app.get("/leak?n=200")
            time.sleep(0.05)
        out = wait_for(lambda: (lambda r: r if r["snapshots"] else None)(
            http("GET", f"{server.api}/snapshots/{req['id']}")[1]), 20, what="the memory snapshot")
    finally:
        app.stop()
    assert out["status"] == "captured" and out["requested_by"].startswith("api@")
    snap = out["snapshots"][0]
    assert snap["attributes"]["snapshot.request_id"] == req["id"]
    mem = snap["body"]["memory"]
    assert mem["rss"] > 0 and mem["tracemalloc"] == "window" and mem["gc"]["counts"]
    top = mem["growth"][0]
    assert top["file"] == APP_FILE and top["line"] == _line("# LEAK-LINE"), mem["growth"][:3]
    assert top["size_diff"] > 1_000_000


def _instances(app, n_workers):
    seen = {}
    with ThreadPoolExecutor(12) as pool:
        for _ in range(5):
            for status, who in pool.map(lambda _: app.get("/whoami?sleep=0.3"), range(12)):
                assert status == 200
                seen[who["pid"]] = who["instance"]
            if len(seen) >= n_workers:
                return seen
    raise AssertionError(f"saw only {seen}")


def test_on_demand_request_reaches_only_the_addressed_gunicorn_worker(server):
    app = App(server, "snap-workers", workers=3, threads=1)
    try:
        workers = _instances(app, 3)
        target = sorted(workers.values())[1]
        status, req = http("POST", f"{server.api}/snapshots", {"service": "snap-workers", "instance": target,
                                                                "kind": "threads"})
        assert status == 201
        out = wait_for(lambda: (lambda r: r if r["snapshots"] else None)(
            http("GET", f"{server.api}/snapshots/{req['id']}")[1]), 15, what="the worker's snapshot")
        time.sleep(2.0)  # four more poll rounds of every worker: nobody else may answer
        out = http("GET", f"{server.api}/snapshots/{req['id']}")[1]
        assert [t["instance"] for t in out["taken_by"]] == [target]
        assert [s["instance"] for s in out["snapshots"]] == [target]
        assert out["snapshots"][0]["body"]["trigger"] == "command"
        # addressed to no instance: every live worker (and the gunicorn master) answers once
        status, req2 = http("POST", f"{server.api}/snapshots", {"service": "snap-workers", "kind": "threads"})
        out2 = wait_for(lambda: (lambda r: r if set(workers.values()) <= {s["instance"] for s in r["snapshots"]}
                                 else None)(http("GET", f"{server.api}/snapshots/{req2['id']}")[1]), 15,
                        what="every worker's snapshot")
        time.sleep(1.5)
        out2 = http("GET", f"{server.api}/snapshots/{req2['id']}")[1]
        taken = [t["instance"] for t in out2["taken_by"]]
        assert len(taken) == len(set(taken)) and len(out2["snapshots"]) == len(taken)
        listed = http("GET", f"{server.api}/snapshots?service=snap-workers")[1]["requests"]
        assert {r["id"] for r in listed} == {req["id"], req2["id"]}
    finally:
        app.stop()


def test_bad_requests_are_refused(server):
    for body in ({"service": "x", "kind": "heap"}, {"kind": "threads"}, {"service": "", "kind": "threads"},
                 {"service": "x", "kind": "threads", "instance": 5}, {"service": "x" * 300, "kind": "memory"},
                 {"service": "x", "kind": "threads", "extra": 1}, ["x"]):
        status, out = http("POST", f"{server.api}/snapshots", body)
        assert status == 400, (body, out)
    assert http("GET", f"{server.api}/snapshots/nope")[0] == 404
    assert http("GET", f"http://127.0.0.1:{server.otlp}/v1/tracehouse/commands?service=x")[0] == 400


SECRETS = ("hunter2-SECRET-LOCAL-7731", "SECRET-TOKEN-LOCAL-5512", "SECRET-ENV-9931", "SECRET-HDR-4417")


def test_no_secret_leaves_the_process(server):
    env = {"TRACEHOUSE_SNAPSHOT_LOCALS": "1", "DB_PASSWORD": SECRETS[2], "MY_SETTING": SECRETS[2],
           "OTEL_EXPORTER_OTLP_HEADERS": f"x-tenant-key={SECRETS[3]}", "TRACEHOUSE_SNAPSHOT_MEMORY_MB": "1"}
    app = App(server, "snap-secrets", env=env)
    try:
        app.get("/hang?hold=2")
        app.get("/crash")
        _, req = http("POST", f"{server.api}/snapshots", {"service": "snap-secrets", "kind": "threads"})
        recs = wait_for(lambda: (lambda rs: rs if {"slow_request", "exception", "command", "memory_threshold"}
                                 <= {r["parsed"]["trigger"] for r in rs} else None)(server.snapshots("snap-secrets")),
                        25, what="all four triggers")
        detail = http("GET", f"{server.api}/snapshots/{req['id']}")[1]
    finally:
        app.stop()
    everything = json.dumps(recs) + json.dumps(detail)
    for secret in SECRETS:
        assert secret not in everything
    slow = next(r for r in recs if r["parsed"]["trigger"] == "slow_request")
    hang = next(f for t in slow["parsed"]["threads"] if t.get("request") for f in t["stack"] if f["function"] == "hang")
    assert hang["locals"]["password"] == "[REDACTED]" and hang["locals"]["api_token"] == "[REDACTED]"
    assert hang["locals"]["hold"] == "2.0"  # locals were captured: the masking is what kept the secrets out
    exc = next(r for r in recs if r["parsed"]["trigger"] == "exception")["parsed"]["exception"]
    assert exc["type"] == "builtins.RuntimeError" and exc["thread"] == "crasher"
    assert exc["stack"][0]["function"] == "crash"


def test_storm_of_slow_requests_is_rate_limited_and_size_capped(server):
    app = App(server, "snap-storm", threads=40, env={"TRACEHOUSE_SNAPSHOT_MAX_BYTES": "8192"})
    try:
        with ThreadPoolExecutor(30) as pool:
            results = list(pool.map(lambda _: app.get("/slow?s=1.6"), range(60)))
        assert all(s == 200 for s, _ in results)
        recs = _by_trigger(server, "snap-storm", "slow_request")
        time.sleep(1.5)
        recs = [r for r in server.snapshots("snap-storm") if r["parsed"]["trigger"] == "slow_request"]
    finally:
        app.stop()
    assert len(recs) == 1  # 60 slow requests, one snapshot per 30 s
    body = recs[0]["parsed"]
    assert len(recs[0]["body"].encode()) <= 8192
    assert body["truncated"] is True and recs[0]["attributes"]["snapshot.truncated"] is True
    assert body["dropped"]


def test_a_slow_request_with_a_long_path_gets_a_snapshot_of_bounded_reason_and_attributes(server):
    """The snapshot's url.path was cut at 500 characters, but its reason held the whole path (and
    the method), so a client's 3,000-character path went into every slow request's record."""
    app = App(server, "snap-long-path")
    long_path = "/slow/" + "p" * 3000
    try:
        status, _ = app.get(long_path + "?s=1.6")
        assert status == 200
        rec = _by_trigger(server, "snap-long-path", "slow_request")[0]
    finally:
        app.stop()
    body = rec["parsed"]
    assert body["reason"].startswith("GET /slow/ppp") and len(body["reason"]) <= 560, len(body["reason"])
    assert body["request"]["path"] == long_path[:500] and rec["attributes"]["url.path"] == long_path[:500]
