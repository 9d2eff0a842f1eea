"""The demo shop's HTTP services (FastAPI), one per process:

    python -m tracehouse.demo.shop SERVICE PORT     (run under ``tracehouse-agent run``)

Peers, data directory and start time come from ``DEMO_*`` environment variables set by the
launcher. Faults follow :mod:`tracehouse.demo.chaos`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import threading
import time

import requests
from fastapi import FastAPI, HTTPException
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from .chaos import faults_at
from .data import Cache, Database, client_span

log = logging.getLogger("demo.shop")
PEERS: dict[str, str] = json.loads(os.environ.get("DEMO_PEERS", "{}"))
STARTED = float(os.environ.get("DEMO_STARTED", time.time()))
DATA = os.environ.get("DEMO_DATA_DIR", ".")
REGIONS = ["eu-west", "us-east", "ap-south"]
_http = requests.Session()
_leak: list[bytes] = []


def faults():
    return faults_at(time.time() - STARTED)


def call(method: str, service: str, path: str, **kw):
    r = _http.request(method, PEERS[service] + path, timeout=(1.0, 10.0), **kw)
    if r.status_code >= 500:
        raise HTTPException(502, f"{service} answered {r.status_code}")
    return r.json()


def tag(**attrs) -> None:
    span = trace.get_current_span()
    for k, v in attrs.items():
        span.set_attribute(k, v)


def gateway() -> FastAPI:
    app = FastAPI(title="gateway")
    report_lock = threading.Lock()

    @app.get("/api/products")
    def products():
        return [call("GET", "inventory", f"/stock/sku-{random.randint(1, 20)}") for _ in range(3)]

    @app.post("/api/orders")
    def create_order():
        region = random.choice(REGIONS)
        tag(**{"customer.region": region})
        return call("POST", "orders", "/orders", json={"sku": f"sku-{random.randint(1, 20)}", "qty": random.randint(1, 3),
                                                        "region": region})

    @app.get("/api/orders/{order_id}")
    def get_order(order_id: int):
        return call("GET", "orders", f"/orders/{order_id}")

    @app.get("/api/report")
    def report():
        # Normally quick; during the "hang" window a nightly job holds the lock for 6 s.
        if faults().report_hangs and report_lock.acquire(blocking=False):
            threading.Thread(target=lambda: (time.sleep(6), report_lock.release()), name="nightly-export",
                             daemon=True).start()
        with report_lock:
            return {"orders": call("GET", "orders", "/orders/count")}

    return app


def orders() -> FastAPI:
    app = FastAPI(title="orders")
    db = Database(os.path.join(DATA, "orders.db"), "orders")
    db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, sku TEXT, qty INT, region TEXT)")
    db.execute("CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, order_id INT, traceparent TEXT)")

    @app.post("/orders")
    def create(body: dict):
        _leak.append(os.urandom(20_000))  # the slow leak: ~20 kB per order, kept for ever (capped)
        del _leak[:-8000]
        call("POST", "inventory", "/reserve", json=body)
        charge = call("POST", "payments", "/charge", json={"amount": round(random.uniform(5, 500), 2),
                                                            "region": body.get("region", "eu-west")})
        rows = db.execute("INSERT INTO orders (sku, qty, region) VALUES (?, ?, ?) RETURNING id",
                          (body.get("sku"), body.get("qty", 1), body.get("region")))
        order_id = rows[0][0]
        carrier: dict[str, str] = {}
        from opentelemetry.propagate import inject

        with client_span("publish fulfilment", {"messaging.system": "sqlite-queue",
                                                "messaging.destination.name": "fulfilment"}) as span:
            span.set_attribute("messaging.operation", "publish")
            inject(carrier)
            db.execute("INSERT INTO jobs (order_id, traceparent) VALUES (?, ?)", (order_id, carrier.get("traceparent", "")))
        return {"order_id": order_id, "charge": charge}

    @app.get("/orders/count")
    def count():
        return db.execute("SELECT count(*) FROM orders")[0][0]

    @app.get("/orders/{order_id}")
    def get(order_id: int):
        rows = db.execute("SELECT id, sku, qty, region FROM orders WHERE id = ?", (order_id,))
        if not rows:
            raise HTTPException(404, "no such order")
        return dict(zip(("id", "sku", "qty", "region"), rows[0]))

    @app.get("/jobs/next")
    def next_job():
        rows = db.execute("DELETE FROM jobs WHERE id = (SELECT min(id) FROM jobs) RETURNING order_id, traceparent")
        return {"order_id": rows[0][0], "traceparent": rows[0][1]} if rows else {}

    return app


def payments() -> FastAPI:
    app = FastAPI(title="payments")
    db = Database(os.path.join(DATA, "payments.db"), "payments")
    db.execute("CREATE TABLE IF NOT EXISTS charges (id INTEGER PRIMARY KEY, amount REAL, region TEXT, ok INT)")

    @app.post("/charge")
    def charge(body: dict):
        region = body.get("region", "eu-west")
        tag(**{"payment.region": region, "payment.amount": float(body.get("amount", 0))})
        if faults().payment_errors and random.random() < 0.4:
            db.execute("INSERT INTO charges (amount, region, ok) VALUES (?, ?, 0)", (body.get("amount"), region))
            log.error("card processor declined the charge in %s", region)
            raise HTTPException(500, "card processor error")
        try:
            _http.post(os.environ["DEMO_BANK_URL"] + "/authorise", json=body, timeout=(0.5, 2.0)).raise_for_status()
        except requests.RequestException as e:
            log.error("bank unreachable: %s", e)
            raise HTTPException(503, "bank unavailable") from None
        db.execute("INSERT INTO charges (amount, region, ok) VALUES (?, ?, 1)", (body.get("amount"), region))
        return {"authorised": True}

    return app


def inventory() -> FastAPI:
    app = FastAPI(title="inventory")
    db = Database(os.path.join(DATA, "inventory.db"), "inventory")
    cache = Cache(os.environ.get("DEMO_REDIS_URL") or None)
    db.execute("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, qty INT)")
    for i in range(1, 21):
        db.execute("INSERT OR IGNORE INTO stock VALUES (?, ?)", (f"sku-{i}", 1000))

    @app.get("/stock/{sku}")
    def stock(sku: str):
        cached = cache.get(f"stock:{sku}")
        if cached is not None:
            return {"sku": sku, "qty": int(cached), "cached": True}
        if faults().inventory_slow:
            time.sleep(random.uniform(0.3, 0.9))
        rows = db.execute("SELECT qty FROM stock WHERE sku = ?", (sku,))
        qty = rows[0][0] if rows else 0
        cache.set(f"stock:{sku}", str(qty), ttl_s=5)
        return {"sku": sku, "qty": qty, "cached": False}

    @app.post("/reserve")
    def reserve(body: dict):
        if faults().inventory_slow:
            time.sleep(random.uniform(0.2, 0.5))
        db.execute("UPDATE stock SET qty = qty - ? WHERE sku = ?", (int(body.get("qty", 1)), body.get("sku")))
        return {"reserved": True}

    return app


def worker_loop(stop: threading.Event) -> None:
    """Fulfilment worker: takes jobs from orders and processes each as a consumer span linked to
    the trace that published it."""
    from opentelemetry.propagate import extract

    tracer = trace.get_tracer("tracehouse.demo.worker")
    while not stop.is_set():
        try:
            job = _http.get(PEERS["orders"] + "/jobs/next", timeout=(1.0, 5.0)).json()
        except (requests.RequestException, ValueError):
            job = {}
        if not job:
            stop.wait(0.5)
            continue
        producer = trace.get_current_span(extract({"traceparent": job.get("traceparent", "")})).get_span_context()
        links = [trace.Link(producer)] if producer.is_valid else []
        with tracer.start_as_current_span("process fulfilment", kind=SpanKind.CONSUMER, links=links,
                                          attributes={"messaging.system": "sqlite-queue",
                                                      "messaging.destination.name": "fulfilment",
                                                      "messaging.operation": "process",
                                                      "order.id": job.get("order_id", 0)}) as span:
            time.sleep(random.uniform(0.01, 0.08))
            if random.random() < 0.03:
                span.set_status(trace.Status(trace.StatusCode.ERROR, "label printer jammed"))
                log.warning("fulfilment of order %s failed: label printer jammed", job.get("order_id"))


APPS = {"gateway": gateway, "orders": orders, "payments": payments, "inventory": inventory}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    service = argv[0]
    logging.basicConfig(level=logging.WARNING)
    if service == "worker":
        stop = threading.Event()
        try:
            worker_loop(stop)
        except KeyboardInterrupt:
            pass
        return
    import uvicorn

    uvicorn.run(APPS[service](), host="127.0.0.1", port=int(argv[1]), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
