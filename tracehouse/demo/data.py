"""The demo's data stores, annotated with OpenTelemetry client spans (database semantic
conventions) the way any service can annotate calls that no instrumentation library covers:
SQLite for orders, payments, stock and the job queue; Redis as the stock cache when a Redis URL
is given."""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

_tracer = trace.get_tracer("tracehouse.demo")


@contextmanager
def client_span(name: str, attributes: dict[str, Any]):
    with _tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes,
                                       record_exception=True, set_status_on_exception=True) as span:
        yield span


class Database:
    """One SQLite file per service; each statement is a ``db.system=sqlite`` client span."""

    def __init__(self, path: str, name: str):
        self.path, self.name = path, name
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            c.execute("PRAGMA journal_mode=WAL")
            self._local.conn = c
        return c

    def execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        op = sql.split(None, 1)[0].upper()
        with client_span(f"{op} {self.name}", {"db.system": "sqlite", "db.name": self.name,
                                               "db.operation": op, "db.statement": sql,
                                               "server.address": os.path.basename(self.path)}):
            return self._conn().execute(sql, params).fetchall()


class Cache:
    """Redis when available (``redis://`` URL), with a ``db.system=redis`` client span per call."""

    def __init__(self, url: str | None):
        self.url = url
        self._client = None
        if url:
            import redis

            self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
            host = url.split("//", 1)[1].split("/", 1)[0]
            self._host, _, self._port = host.partition(":")

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def _span(self, op: str, key: str):
        return client_span(op, {"db.system": "redis", "db.operation": op, "db.statement": f"{op} {key}",
                                "server.address": self._host, "server.port": int(self._port or 6379)})

    def get(self, key: str) -> bytes | None:
        if not self._client:
            return None
        with self._span("GET", key) as span:
            try:
                return self._client.get(key)
            except Exception as e:  # a cache outage degrades to the database
                span.set_status(Status(StatusCode.ERROR, str(e)))
                return None

    def set(self, key: str, value: str, ttl_s: int = 30) -> None:
        if not self._client:
            return
        with self._span("SET", key) as span:
            try:
                self._client.set(key, value, ex=ttl_s)
            except Exception as e:
                span.set_status(Status(StatusCode.ERROR, str(e)))
