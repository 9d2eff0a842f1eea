"""Generated log records for tests and benchmarks, written straight into storage columns."""

from __future__ import annotations

import os
import random

from tracehouse.collector.convert import shared_tuple
from tracehouse.storage.attrs import encode_map

NS = 1_000_000_000
SERVICES = ("gateway", "orders", "payments", "inventory", "users")
# (severity number, text, weight)
LEVELS = ((5, "DEBUG", 15), (9, "INFO", 64), (13, "WARN", 12), (17, "ERROR", 8), (21, "FATAL", 1))
MESSAGES = ("request {route} finished in {ms} ms", "cache miss for key item:{n}", "retrying call to {peer} ({n}/3)",
            "payment {n} declined: insufficient funds", "slow query on items took {ms} ms",
            "connection pool exhausted, waiting", "user {n} signed in", "reserved {n} items")


def generate(n: int, start_ns: int, spread_ns: int, store=None, trace_ids: list[bytes] | None = None,
             seed: int = 7) -> dict:
    """``n`` records spread over ``spread_ns`` after ``start_ns``; about half carry a trace id
    (from ``trace_ids`` when given)."""
    rng = random.Random(seed)
    cols = store.columns_for("logs")
    weights = [w for *_, w in LEVELS]
    attr_sets = {}
    for svc in SERVICES:
        for logger in ("app.views", "app.db", "app.client"):
            k, v, t = encode_map({"logger": logger, "code.function": "handle", "region": "eu-west"})
            attr_sets[(svc, logger)] = (shared_tuple(tuple(k)), list(v), shared_tuple(tuple(t)))
    res = {svc: (shared_tuple(("service.name", "host.name")), [svc, f"node-{i % 3}"])
           for i, svc in enumerate(SERVICES)}
    zero16, zero8 = b"\x00" * 16, b"\x00" * 8
    for _ in range(n):
        ts = start_ns + rng.randrange(spread_ns)
        svc = rng.choice(SERVICES)
        sev, text, _ = rng.choices(LEVELS, weights)[0]
        msg = rng.choice(MESSAGES).format(route="/orders", ms=rng.randint(1, 900), n=rng.randint(1, 9999),
                                          peer=rng.choice(SERVICES))
        k, v, t = attr_sets[(svc, rng.choice(("app.views", "app.db", "app.client")))]
        linked = rng.random() < 0.5
        tid = (rng.choice(trace_ids) if trace_ids else os.urandom(16)) if linked else zero16
        rk, rv = res[svc]
        for key, val in (("timestamp", ts // NS), ("ts_ns", ts), ("observed_ns", ts + 1000), ("trace_id", tid),
                         ("span_id", os.urandom(8) if linked else zero8), ("flags", 1), ("severity_number", sev),
                         ("severity_text", text), ("service", svc), ("instance", f"{svc}-1"), ("event_name", ""),
                         ("body", msg), ("attr_keys", k), ("attr_values", v), ("attr_types", t),
                         ("resource_keys", rk), ("resource_values", rv), ("scope_name", "app"),
                         ("scope_version", "")):
            cols[key].append(val)
    return cols
