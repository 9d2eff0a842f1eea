"""A ClickHouse server through clickhouse-driver (native protocol, port 9000).

Placeholders ``{name:Type}`` are bound on the client by the driver's own escaping (old servers
have no server-side parameters). Clients are pooled; every call has connect and receive timeouts.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Sequence
from typing import Any

from .backend import PARAM_RE, Result, check_params
from .disk_full import is_disk_full
from .errors import QueryError, QueryLimitExceeded, QueryTimeout, StorageError, StorageUnavailable
from .tables import Table
from .textvalues import clean_params, decode_bytes
from .url import StorageURL


def to_driver_sql(sql: str) -> str:
    """``{name:Type}`` → ``%(name)s``; literal ``%`` doubled for the driver's %-substitution."""
    out, pos = [], 0
    for m in PARAM_RE.finditer(sql):
        out.append(sql[pos : m.start()].replace("%", "%%"))
        out.append(f"%({m.group(1)})s")
        pos = m.end()
    out.append(sql[pos:].replace("%", "%%"))
    return "".join(out)


def _coerce(params: dict[str, Any], sql: str) -> dict[str, Any]:
    types = {m.group(1): m.group(2).strip() for m in PARAM_RE.finditer(sql)}
    out: dict[str, Any] = {}
    for k, v in params.items():
        t = types.get(k, "")
        if t.startswith(("UInt", "Int")) and not isinstance(v, bool):
            out[k] = int(v)
        elif t.startswith("Float"):
            out[k] = float(v)
        elif t == "String":
            out[k] = str(v)
        else:
            out[k] = v
    return out


# Server errors that mean "not now" rather than "never": a replica without its ZooKeeper session
# (read-only tables), a lost ZooKeeper, an insert whose fate is unknown, shards or replicas out of
# reach, too many parts or queries. They are raised as StorageUnavailable so that writers keep the
# data and retry (a replay is exact: replicated deduplication drops what already landed).
RETRYABLE_CODES = frozenset({
    3,    # UNEXPECTED_END_OF_FILE
    32,   # ATTEMPT_TO_READ_AFTER_EOF
    95, 96,  # CANNOT_READ_FROM_SOCKET, CANNOT_WRITE_TO_SOCKET
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    209, 210,  # SOCKET_TIMEOUT, NETWORK_ERROR
    225,  # NO_ZOOKEEPER
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS
    254,  # NO_ACTIVE_REPLICAS
    279,  # ALL_CONNECTION_TRIES_FAILED
    286, 289,  # UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE, REPLICA_IS_NOT_IN_QUORUM
    319,  # UNKNOWN_STATUS_OF_INSERT
    369,  # ALL_REPLICAS_ARE_STALE
    999,  # KEEPER_EXCEPTION
})


log = logging.getLogger("tracehouse.storage")


class ServerBackend:
    kind = "clickhouse"

    def __init__(self, url: StorageURL, pool_size: int = 4, connect_timeout: float = 5.0,
                 receive_timeout: float = 60.0, node: tuple[str, int] | None = None,
                 default_database: str = "default"):
        """A pool of connections to ``url``'s host (then its ``alt_hosts`` in turn), or to ``node``
        alone (one replica of a cluster, for the sharded writer)."""
        self.url = url
        host, port = node or (url.host, url.port)
        self.node = (host, port)
        self._receive_timeout = float(receive_timeout)
        alt = "" if node else ",".join(f"{h}:{p}" for h, p in url.alt_hosts)
        self._kw = dict(
            host=host,
            port=port,
            user=url.user,
            password=url.password,
            database=default_database,
            connect_timeout=connect_timeout,
            send_receive_timeout=receive_timeout,
            sync_request_timeout=connect_timeout,
            secure=url.secure,
            settings={"use_numpy": False},
        )
        if alt:
            self._kw["alt_hosts"] = alt
        self._pool: queue.LifoQueue = queue.LifoQueue(maxsize=pool_size)
        for _ in range(pool_size):
            self._pool.put(None)
        self._closed = False

    def _client(self):
        from clickhouse_driver import Client

        from .driver_arrays import install

        install()  # array columns written in one pass (the driver's bytes, less CPU): driver_arrays.py
        try:
            c = self._pool.get(timeout=30)
        except queue.Empty:
            raise StorageUnavailable("no free ClickHouse connection within 30 s") from None
        return c if c is not None else Client(**self._kw)

    def _put(self, c, broken: bool) -> None:
        if broken and c is not None:
            _disconnect(c)
            c = None
        self._pool.put(c)

    def _run(self, fn, timeout: float | None = None):
        """``fn(client)`` on a pooled client; every read and write of its socket, and the hello of
        a (re)connection, waits at most ``timeout`` seconds (default: the backend's receive timeout)."""
        from clickhouse_driver import errors as ch_errors

        if self._closed:
            raise StorageError("store is closed")
        c = self._client()
        broken = False
        try:
            _socket_timeout(c, timeout or self._receive_timeout)
            return fn(c)
        except ch_errors.ServerException as e:
            if e.code == 159:
                raise QueryTimeout(str(e)) from e
            if e.code in RETRYABLE_CODES or is_disk_full(e.code, str(e)):
                raise StorageUnavailable(f"ClickHouse at {self._where(c)} cannot do it now: {e}") from e
            if e.code in QueryLimitExceeded.CODES:
                raise QueryLimitExceeded(str(e)) from e
            raise QueryError(str(e)) from e
        except (TimeoutError, ch_errors.NetworkError, ch_errors.SocketTimeoutError, OSError, EOFError) as e:
            broken = True
            raise StorageUnavailable(f"ClickHouse at {self._where(c)} unavailable: {e}") from e
        except ch_errors.Error as e:
            broken = True
            raise QueryError(str(e)) from e
        finally:
            self._put(c, broken)

    def _where(self, c) -> str:
        conn = getattr(c, "connection", None)
        host, port = getattr(conn, "host", None), getattr(conn, "port", None)
        return f"{host}:{port}" if host else f"{self.node[0]}:{self.node[1]}"

    def query(self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> Result:
        check_params(sql, params)
        if params:
            dsql, dparams = to_driver_sql(sql), _coerce(clean_params(params) or {}, sql)
        else:
            dsql, dparams = sql, None

        def run(c):
            rows, types = c.execute(dsql, dparams, with_column_types=True, settings=settings or None)
            return Result([n for n, _ in types], _text_rows(rows, [t for _, t in types]))

        return self._run(run, _wait_for(settings))

    def ping(self, timeout: float) -> bool:
        """Whether the server answers ``SELECT 1`` within ``timeout`` seconds, on a connection of
        its own (the pooled ones may all be waiting on a hung server)."""
        from clickhouse_driver import Client

        if self._closed:
            return False
        kw = dict(self._kw, connect_timeout=timeout, send_receive_timeout=timeout, sync_request_timeout=timeout)
        c = Client(**kw)
        try:
            return c.execute("SELECT 1") == [(1,)]
        except Exception as e:  # any failure means "not ready"; /readyz says so, the log says why
            log.debug("ClickHouse at %s:%s did not answer the readiness ping: %r", *self.node, e)
            return False
        finally:
            _disconnect(c)

    def insert(self, table: Table, qualified_name: str, columns: Sequence[Sequence[Any]],
               token: str | None = None, settings: dict[str, Any] | None = None) -> int:
        cols = ", ".join(table.column_names)
        data = [list(c) for c in columns]
        settings = dict(settings or {})
        if token:
            settings.update(insert_deduplication_token=token, deduplicate_blocks_in_dependent_materialized_views=1)

        def run(c):
            return c.execute(f"INSERT INTO {qualified_name} ({cols}) VALUES", data, columnar=True,
                             settings=settings or None)

        n = self._run(run, _wait_for(settings))
        return int(n or 0)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                c = self._pool.get_nowait()
            except queue.Empty:
                break
            if c is not None:
                _disconnect(c)


def _disconnect(c) -> None:
    """Close a client's connection; one that already failed has nothing left to keep."""
    try:
        c.disconnect()
    except Exception:  # noqa: BLE001 - closing a broken connection
        pass


#: seconds a server is given past a statement's own time limit to say it stopped (a hung server says nothing)
ANSWER_MARGIN_S = 5.0


def _wait_for(settings: dict[str, Any] | None) -> float | None:
    """How long to wait for a statement limited by ``max_execution_time``: its limit and a margin,
    instead of the backend's receive timeout (made for inserts and migrations)."""
    limit = (settings or {}).get("max_execution_time")
    try:
        return float(limit) + ANSWER_MARGIN_S if limit and float(limit) > 0 else None
    except (TypeError, ValueError):
        return None


def _socket_timeout(c, timeout: float) -> None:
    """Set ``timeout`` on the client's connections: their open sockets, and the hello of a reconnection."""
    for conn in {id(x): x for x in [getattr(c, "connection", None), *getattr(c, "connections", ())] if x}.values():
        conn.send_receive_timeout = timeout
        conn.sync_request_timeout = min(conn.sync_request_timeout, timeout)
        if getattr(conn, "socket", None) is not None:
            conn.socket.settimeout(timeout)


def _text_rows(rows: list, types: list[str]) -> list[tuple]:
    """Rows as tuples; String values that are not UTF-8 (which the driver hands back as bytes)
    decoded with U+FFFD for each bad byte. FixedString columns stay bytes (ids)."""
    text = [i for i, t in enumerate(types) if "String" in t and "FixedString" not in t]
    if not text:
        return [tuple(r) for r in rows]
    out = []
    for r in rows:
        r = tuple(r)
        if any(_has_bytes(r[i]) for i in text):
            r = tuple(decode_bytes(v) if i in text else v for i, v in enumerate(r))
        out.append(r)
    return out


def _has_bytes(v: Any) -> bool:
    if type(v) is bytes:
        return True
    return type(v) in (list, tuple) and any(type(x) is bytes for x in v)
