"""Realistic generated spans for tests and benchmarks: multi-service trace trees with errors,
HTTP/DB/cache attributes and resources, written straight into storage columns."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field

from tracehouse.collector.convert import shared_tuple
from tracehouse.storage.attrs import encode_map

ZERO8 = b"\x00" * 8
SERVICES = {
    "gateway": ("127.0.0.1:8000", ["GET /api/orders", "POST /api/orders", "GET /api/products"]),
    "orders": ("127.0.0.1:8001", ["GET /orders", "POST /orders", "GET /orders/{id}"]),
    "payments": ("127.0.0.1:8002", ["POST /charge", "POST /refund"]),
    "inventory": ("127.0.0.1:8003", ["GET /stock/{sku}", "POST /reserve"]),
    "users": ("127.0.0.1:8004", ["GET /users/{id}"]),
}
CALLS = {"gateway": ["orders", "users", "inventory"], "orders": ["payments", "inventory"], "payments": [],
         "inventory": [], "users": []}
DEPS = {"orders": ("postgresql", "orders"), "inventory": ("redis", ""), "payments": ("postgresql", "payments"),
        "users": ("postgresql", "users")}
REGIONS = ["eu-west", "us-east", "ap-south"]


@dataclass
class Gen:
    rng: random.Random = field(default_factory=lambda: random.Random(42))
    error_rate: float = 0.03

    def resource(self, service: str) -> tuple[list[str], list[str]]:
        keys = ["service.name", "service.version", "deployment.environment", "host.name", "process.pid",
                "telemetry.sdk.language"]
        vals = [service, "1.4.2", "prod", f"node-{hash(service) % 3}", str(1000 + hash(service) % 5000), "python"]
        return keys, vals


def _span(cols, res_cache, g: Gen, trace_id: bytes, parent: bytes, service: str, name: str, kind: int,
          start: int, dur: int, attrs: dict, error: bool) -> bytes:
    span_id = os.urandom(8)
    k, v, t = encode_map(attrs)
    # as the collector builds them: one shared tuple per distinct key list and type-code list
    k, t = shared_tuple(tuple(k)), shared_tuple(tuple(t))
    rk, rv = res_cache.setdefault(service, g.resource(service))
    cols["timestamp"].append(start // 1_000_000_000)
    cols["trace_id"].append(trace_id)
    cols["span_id"].append(span_id)
    cols["parent_span_id"].append(parent)
    cols["trace_state"].append("")
    cols["service"].append(service)
    cols["name"].append(name)
    cols["kind"].append(kind)
    cols["status_code"].append(2 if error else 0)
    cols["status_message"].append("upstream failed" if error else "")
    cols["start_ns"].append(start)
    cols["duration_ns"].append(dur)
    cols["attr_keys"].append(k)
    cols["attr_values"].append(v)
    cols["attr_types"].append(t)
    cols["resource_keys"].append(rk)
    cols["resource_values"].append(rv)
    cols["scope_name"].append("tracehouse.agent")
    cols["scope_version"].append("0.1.0")
    if error:
        cols["events_time_ns"].append([start + dur // 2])
        cols["events_name"].append(["exception"])
        cols["events_attrs"].append([json.dumps({"exception.type": "TimeoutError", "exception.message": "timed out"})])
    else:
        cols["events_time_ns"].append(())  # the collector shares one empty tuple too
        cols["events_name"].append(())
        cols["events_attrs"].append(())
    cols["links_trace_id"].append(())
    cols["links_span_id"].append(())
    cols["links_attrs"].append(())
    return span_id


def generate(n_spans: int, start_ns: int, spread_ns: int, g: Gen | None = None, columns: dict | None = None,
             store=None) -> tuple[dict, list[bytes]]:
    """About ``n_spans`` spans in traces of 5–30 spans starting within ``spread_ns`` of ``start_ns``."""
    g = g or Gen()
    rng = g.rng
    cols = columns if columns is not None else (store.columns_for("spans") if store else _empty())
    res_cache: dict = {}
    trace_ids = []
    made = 0
    while made < n_spans:
        trace_id = os.urandom(16)
        trace_ids.append(trace_id)
        budget = rng.randint(5, 30)
        t0 = start_ns + rng.randrange(max(1, spread_ns))
        error_trace = rng.random() < g.error_rate
        region = rng.choice(REGIONS)
        customer = f"cust-{rng.randint(1, 5000)}"
        stack = [("gateway", ZERO8, t0, rng.randint(20, 400) * 1_000_000)]
        count = 0
        while stack and count < budget:
            service, parent, st, dur = stack.pop(0)
            addr, ops = SERVICES[service]
            op = rng.choice(ops)
            method, route = op.split(" ", 1)
            err = error_trace and service in ("payments", "inventory") and rng.random() < 0.7
            status = 500 if err else 200
            host, port = addr.split(":")
            sid = _span(cols, res_cache, g, trace_id, parent, service, op, 2, st, dur, {
                "http.request.method": method, "http.route": route, "url.path": route.replace("{id}", "42"),
                "http.response.status_code": status, "server.address": host, "server.port": int(port),
                "client.address": "10.0.0.7", "user_agent.original": "python-requests/2.31",
                "customer.id": customer, "region": region, "network.protocol.version": "1.1",
            }, err)
            count += 1
            t = st + dur // 20
            if service in DEPS and count < budget:
                system, dbname = DEPS[service]
                ddur = rng.randint(1, 20) * 1_000_000
                attrs = {"db.system": system, "server.address": "127.0.0.1",
                         "server.port": 5432 if system == "postgresql" else 6379,
                         "db.operation": "SELECT" if system == "postgresql" else "GET",
                         "db.statement": "SELECT * FROM items WHERE id = $1" if system == "postgresql" else "GET key",
                         "region": region}
                if dbname:
                    attrs["db.name"] = dbname
                _span(cols, res_cache, g, trace_id, sid, service, f"{attrs['db.operation']} {dbname or 'cache'}", 3,
                      t, ddur, attrs, False)
                count += 1
                t += ddur
            for callee in CALLS[service]:
                if count >= budget - 1:
                    break
                caddr, _ = SERVICES[callee]
                ch, cp = caddr.split(":")
                cdur = max(1_000_000, int(dur * rng.uniform(0.2, 0.6)))
                cid = _span(cols, res_cache, g, trace_id, sid, service, f"{callee} call", 3, t, cdur, {
                    "http.request.method": "POST", "server.address": ch, "server.port": int(cp),
                    "url.full": f"http://{caddr}/x", "http.response.status_code": 200, "region": region,
                }, False)
                count += 1
                stack.append((callee, cid, t + 200_000, cdur - 400_000))
                t += cdur
        made += count
    return cols, trace_ids


def _empty() -> dict:
    from tracehouse.storage.schema import SPANS

    return {c.name: [] for c in SPANS.columns}
