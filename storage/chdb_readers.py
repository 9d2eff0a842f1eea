"""Read connections to the embedded engine, apart from the insert path.

chDB 26.9 hosts one engine per process, and any number of connections to it; queries on different
connections run in parallel (measured: a 4 s scan on one connection left 100k-row inserts on
another at 9-17 ms each). Statements therefore run on a small pool of connections of their own,
while inserts keep the backend's session and its lock: a slow read no longer holds ingestion.

A pool can be given setup statements run once on each new connection (``USE db``, ``SET …``):
the alert engine's SQL rules read through such a pool, whose connections are read-only and whose
default database is the store's.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import StorageError, StorageUnavailable
from .textvalues import decode_bytes, escape_param

log = logging.getLogger("tracehouse.storage")

__all__ = ["ReaderPool", "table_rows"]


class ReaderPool:
    """At most ``size`` connections to the engine open at ``path``, created on first need."""

    def __init__(self, path: str, size: int = 4, setup: Sequence[str] = (), wait_s: float = 30.0):
        self.path, self.size, self.setup, self.wait_s = path, max(1, int(size)), tuple(setup), wait_s
        self._free: queue.LifoQueue = queue.LifoQueue()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def _create(self):
        from chdb import session as chdb_session

        conn = chdb_session.Session(self.path)
        try:
            for stmt in self.setup:
                conn.query(stmt)
        except Exception:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        conn = None
        try:
            conn = self._free.get_nowait()
        except queue.Empty:
            with self._lock:
                if self._closed:
                    raise StorageError("store is closed") from None
                if len(self._all) < self.size:
                    conn = self._create()
                    self._all.append(conn)
            if conn is None:
                try:
                    conn = self._free.get(timeout=self.wait_s)
                except queue.Empty:
                    raise StorageUnavailable(f"no free engine connection within {self.wait_s:g} s") from None
        try:
            yield conn
        except BaseException:
            # A statement the engine stopped (a memory or time limit) leaves its connection's
            # output behind: the next statement on it read that as its own Arrow result and failed
            # ("Message metadata too long", a 500). A connection that failed is closed, not reused.
            self._discard(conn)
            raise
        self._free.put(conn)

    def _discard(self, conn: Any) -> None:
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        _close_quietly(conn)

    def query(self, sql: str, params: dict[str, Any] | None = None):
        """Run one statement; returns the engine's ArrowTable (or None). Engine errors propagate."""
        bound = {k: escape_param(v) for k, v in params.items()} if params else None
        with self.connection() as conn:
            if self._closed:
                raise StorageError("store is closed")
            return conn.query(sql, "ArrowTable", params=bound)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for c in conns:
            _close_quietly(c)


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception as e:  # closing an engine connection that already failed: nothing to keep
        log.debug("closing an engine read connection failed: %s: %s", type(e).__name__, e)


def table_rows(tbl: Any) -> tuple[list[str], list[tuple]]:
    """An ArrowTable → (names, rows). String values that are not UTF-8 read back with U+FFFD in
    place of each bad byte instead of failing the whole result."""
    if tbl is None or not hasattr(tbl, "column_names"):
        return [], []
    names = list(tbl.column_names)
    if not names:
        return [], []
    cols = []
    for c in tbl.columns:
        try:
            cols.append(c.to_pylist())
        except UnicodeDecodeError:
            cols.append(decode_bytes(c.cast(_as_binary(c.type)).to_pylist()))
    return names, list(zip(*cols))


def _as_binary(t):
    import pyarrow as pa

    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_as_binary(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _as_binary(f.type), f.nullable) for f in t])
    return t
