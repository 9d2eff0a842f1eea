"""The first minute: `tracehouse serve --demo` brings up the server and the demo shop; through the
JSON API we see traces from every demo service, the expected service-map edges, a fired alert and
an automatically captured snapshot; Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from testkit.servers import free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
TRACEHOUSE = str(Path(sys.executable).with_name("tracehouse"))
SERVICES = {"gateway", "orders", "payments", "inventory", "worker"}


def _get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def _wait(what: str, fn, timeout: float, proc: subprocess.Popen, log: Path):
    """Wait for ``fn`` while the server is alive (a dead server fails at once, with its log)."""

    def attempt():
        assert proc.poll() is None, f"server exited while waiting for {what}: {log.read_text()[-3000:]}"
        return fn()

    return wait_for(attempt, timeout, every=2, what=what, tolerate=(OSError,))


@pytest.fixture
def demo(tmp_path):
    assert shutil.which("redis-server"), "the demo test expects redis-server (installed by .ci/run)"
    otlp, http = free_port(), free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([TRACEHOUSE, "serve", "--demo", "--otlp-port", str(otlp), "--http-port", str(http)],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait("the dashboard", lambda: "tracehouse dashboard:" in log.read_text(), 90, proc, log)
        yield proc, http, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_demo_shows_everything_and_stops_cleanly(demo):
    proc, http, log = demo
    children = psutil.Process(proc.pid).children(recursive=True)
    names = " ".join(" ".join(c.cmdline()) for c in children)
    assert len(children) >= 7 and "tracehouse.demo.shop" in names and "redis-server" in names

    services = _wait("traces from every demo service",
                     lambda: SERVICES <= {s["service"] for s in _get(http, "/api/services?since=15m")["services"]},
                     120, proc, log)
    assert services
    # a checkout is one trace across gateway → orders → payments (and inventory)
    _wait("a trace across services", lambda: [t for t in _get(http, "/api/traces?service=payments&limit=50")["traces"]
                                             if {"gateway", "orders", "payments"} <= set(t["services"])], 60, proc, log)

    expected = {("gateway", "orders"), ("gateway", "inventory"), ("orders", "payments"), ("orders", "inventory"),
                ("worker", "orders"), ("inventory", "cache:redis"), ("orders", "database:sqlite/orders"),
                ("orders", "queue:sqlite-queue/fulfilment")}

    def edges():
        m = _get(http, "/api/service-map?since=15m")
        got = {(e["source"], e["target"]) for e in m["edges"]}
        return got if expected <= got and any(s == "payments" and t.startswith("external:") for s, t in got) else None

    _wait("the service map's edges", edges, 90, proc, log)

    def fired():
        history = _get(http, "/api/alerts/history")
        items = history.get("history", history) if isinstance(history, dict) else history
        return [h for h in items if h.get("to_state") == "firing"]

    firing = _wait("an alert to fire", fired, 150, proc, log)
    assert any(h.get("alertname") in ("PaymentsErrorRate", "FailedPaymentsByRegion", "InventorySlow", "BankDown")
               for h in firing)

    def snapshots():
        logs = _get(http, "/api/logs?event_name=tracehouse.snapshot&since=15m")["logs"]
        return [s for s in logs if s.get("trace_id")]

    snaps = _wait("an automatic snapshot linked to a trace", snapshots, 150, proc, log)

    def linked_trace():
        # the snapshot is taken while the slow request is still in flight; its span lands when it
        # ends, and the trace's other spans (the callers', the services' before it) may land first
        try:
            trace = _get(http, f"/api/traces/{snaps[0]['trace_id']}")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
        return trace if snaps[0]["span_id"] in {s["span_id"] for s in trace["spans"]} else None

    trace = _wait("the snapshot's trace with its span", linked_trace, 60, proc, log)
    assert trace["span_count"] >= 1

    _screenshots(http, snaps[0]["trace_id"])
    # a rule's snapshot action (InventorySlow, OrdersMemoryGrowing) never fails silently in an annotation
    errors = [h for h in fired() if "snapshot_error" in (h.get("body") or {}).get("annotations", {})]
    assert errors == [], errors

    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=45)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert [c.pid for c in alive] == [], "processes left running"
    assert proc.returncode == 0, log.read_text()[-3000:]
    # the shop's processes are forked while the OTLP/gRPC receiver runs: no gRPC fork log line per fork
    assert "skipping fork() handlers" not in log.read_text()


PAGES = {"services": "/services", "service": "/services/payments", "service-map": "/service-map",
         "traces": "/traces?service=payments", "snapshots": "/snapshots", "alerts": "/alerts",
         "infrastructure": "/infrastructure", "storage": "/storage"}


def _screenshots(http: int, trace_id: str) -> None:
    """Every main page of the running demo loads in Chromium without errors; the screenshots are
    the README's (test-artifacts/screenshots/demo-*.png)."""
    import tempfile

    from playwright.sync_api import sync_playwright

    from tests.dashboard.browsing import CHROMIUM_ARGS, screenshot

    problems: list[str] = []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS,
                                                   headless=True, viewport={"width": 1400, "height": 900})
        page = ctx.new_page()
        page.on("console", lambda m: problems.append(f"{page.url} console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"{page.url} pageerror: {e}"))
        for name, path in {**PAGES, "trace": f"/traces/{trace_id}"}.items():
            page.goto(f"http://127.0.0.1:{http}{path}{'&' if '?' in path else '?'}since=15m")
            page.wait_for_load_state("networkidle")
            assert page.locator("h1").count() >= 1, name
            screenshot(page, f"demo-{name}")
        ctx.close()
    assert problems == []


def _without_token() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("TRACEHOUSE_TOKEN", "TRACEHOUSE_INGEST_TOKENS", "OTEL_EXPORTER_OTLP_HEADERS")}


def test_demo_with_ingest_tokens_set_sends_with_one_of_them(tmp_path):
    """With TRACEHOUSE_INGEST_TOKENS set, `serve --demo` still shows the shop: its agents send with
    one of the server's tokens (they sent none, were refused with 401, and the demo stayed empty)."""
    otlp, http = free_port(), free_port()
    log = tmp_path / "serve.log"
    env = {**_without_token(), "TRACEHOUSE_INGEST_TOKENS": "demo-ingest-secret,other"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([TRACEHOUSE, "serve", "--demo", "--otlp-port", str(otlp), "--http-port", str(http)],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        _wait("the demo's services", lambda: {"gateway", "orders", "payments"} <= {
            s["service"] for s in _get(http, "/api/services")["services"]}, 120, proc, log)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(45)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_demo_alone_against_a_running_server(tmp_path):
    """`tracehouse demo --endpoint URL` sends the shop's telemetry to an existing server; one that
    needs an ingest token the demo was not given is named at once, with the variable to set."""
    otlp, http = free_port(), free_port()
    log = tmp_path / "serve.log"
    env = {**_without_token(), "TRACEHOUSE_INGEST_TOKENS": "shop-secret"}
    with open(log, "wb") as out:
        server = subprocess.Popen([TRACEHOUSE, "serve", "--otlp-port", str(otlp), "--http-port", str(http)],
                                  cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=env)
    shop = None
    try:
        _wait("the server", lambda: "tracehouse dashboard:" in log.read_text(), 90, server, log)
        for token in ("", "wrong"):
            refused = subprocess.run([TRACEHOUSE, "demo", "--endpoint", f"http://127.0.0.1:{otlp}"], cwd=tmp_path,
                                     capture_output=True, text=True, timeout=60,
                                     env={**_without_token(), **({"TRACEHOUSE_TOKEN": token} if token else {})})
            assert refused.returncode == 2, refused.stderr
            assert "401" in refused.stderr and "TRACEHOUSE_TOKEN" in refused.stderr
        shop = subprocess.Popen([TRACEHOUSE, "demo", "--endpoint", f"http://127.0.0.1:{otlp}", "--rps", "20"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                # the token as OTEL_EXPORTER_OTLP_HEADERS carries it: the check before the
                                # shop starts reads the headers as the shop's agents do
                                env={**_without_token(), "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20shop-secret"})
        _wait("demo traffic", lambda: {"gateway", "orders"} <= {
            s["service"] for s in _get(http, "/api/services")["services"]}, 120, server, log)
        kids = psutil.Process(shop.pid).children(recursive=True)
        assert len(kids) >= 6
        shop.send_signal(signal.SIGINT)
        assert shop.wait(timeout=45) == 0
        _, alive = psutil.wait_procs(kids, timeout=10)
        assert [k.pid for k in alive] == [], "processes left running"
    finally:
        for p in (shop, server):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
