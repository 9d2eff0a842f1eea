"""Seeds for the hostile-cardinality tests: one ingest client's flood of cheap names, sorting first,
against a few real ones that must stay listed."""

from __future__ import annotations

import os

from testkit.seed import NS, span_row

ROOT = b"\0" * 8


def operations(store, service: str, now: int, n: int = 600) -> None:
    """``n`` one-span operations ``aaa-op-NNNNN`` of ``service`` and ``zz-checkout`` with 3 spans."""
    cols = store.columns_for("spans")
    for i in range(n):
        span_row(cols, os.urandom(16), os.urandom(8), ROOT, service, f"aaa-op-{i:05d}", now - 30 * NS, 1000, {})
    for _ in range(3):
        span_row(cols, os.urandom(16), os.urandom(8), ROOT, service, "zz-checkout", now - 20 * NS, 5_000_000, {})
    store.insert("spans", cols)


def app_and_its_dependencies(cols, now: int) -> None:
    """``app`` calls (3 times each) postgresql at zz-db, the service ``zz-api`` by address
    (zz-api:8080, where it answered once) and ``local-svc`` as LOCALHOST:9090 (it answered once at
    127.0.0.1:9090)."""
    tid, root = os.urandom(16), os.urandom(8)
    span_row(cols, tid, root, ROOT, "app", "GET /", now - 20 * NS, 5_000_000, {})
    for _ in range(3):
        span_row(cols, tid, os.urandom(8), root, "app", "SELECT", now - 20 * NS, 1_000_000,
                 {"db.system": "postgresql", "server.address": "zz-db", "server.port": 5432}, kind=3)
    for service, called, answered, port in (("zz-api", "zz-api", "zz-api", 8080),
                                            ("local-svc", "LOCALHOST", "127.0.0.1", 9090)):
        for _ in range(3):
            span_row(cols, tid, os.urandom(8), root, "app", "call", now - 20 * NS, 1_000_000,
                     {"server.address": called, "server.port": port}, kind=3)
        span_row(cols, tid, os.urandom(8), root, service, "GET /x", now - 20 * NS, 500_000,
                 {"server.address": answered, "server.port": port}, kind=2)


def peers(cols, now: int, n: int) -> None:
    """``n`` one-call client spans of ``app``, each to another peer.service ``aaa-peer-NNNNN``."""
    for i in range(n):
        span_row(cols, os.urandom(16), os.urandom(8), os.urandom(8), "app", "call", now - 30 * NS, 1000,
                 {"peer.service": f"aaa-peer-{i:05d}"}, kind=3)
