"""A ClickHouse server through clickhouse-driver (native protocol, port 9000).

Placeholders ``{name:Type}`` are bound on the client by the driver's own escaping (old servers
have no server-side parameters). Clients are pooled. Every call ends within a deadline, all it waits
for included (a free connection, the driver's ping, a reconnection and the statement): a statement's
``max_execution_time`` and a margin; else :data:`DEFAULT_CALL_S`; an insert, or a statement run in a
:func:`long_calls` scope (migrations, rollup rebuilds, retention), :data:`LONG_CALL_S`. Within it, the TCP
connect and the hello of a (re)connection wait at most the connect timeout, and each read or write of
a statement at most the receive timeout (a server at work sends progress packets meanwhile).
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .backend import PARAM_RE, Result, check_params
from .disk_full import is_disk_full
from .errors import QueryError, QueryLimitExceeded, QueryTimeout, StorageError, StorageUnavailable
from .host_race import race_hosts
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
                 default_database: str = "default", call_timeout: float | None = None):
        """A pool of connections to ``url``'s host (then its ``alt_hosts`` in turn), or to ``node``
        alone (one replica of a cluster, for the sharded writer)."""
        self.url = url
        host, port = node or (url.host, url.port)
        self.node = (host, port)
        self._receive_timeout = float(receive_timeout)
        self._ping_s = float(connect_timeout)
        self._connect_s = float(connect_timeout)
        #: seconds a call without a time limit may take in all (outside a ``long_calls`` scope)
        self._call_s = float(call_timeout) if call_timeout else DEFAULT_CALL_S
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
        #: the hosts a connection tries in turn, and the one that answered last (new connections try
        #: it first: a host that drops connects unanswered would cost each its connect timeout)
        self._hosts = [self.node] if node else list(url.hosts)
        self._answered: tuple[str, int] | None = None
        self._pool: queue.LifoQueue = queue.LifoQueue(maxsize=pool_size)
        for _ in range(pool_size):
            self._pool.put(None)
        self._closed = False

    def _client(self, wait_s: float = 30.0):
        from clickhouse_driver import Client

        from .driver_arrays import install

        install()  # array columns written in one pass (the driver's bytes, less CPU): driver_arrays.py
        try:
            c = self._pool.get(timeout=max(0.0, wait_s))
        except queue.Empty:
            raise StorageUnavailable(f"no free ClickHouse connection within {wait_s:.0f} s") from None
        if c is None:
            c = _bounded(Client(**self._client_kw()))
        return c

    def _client_kw(self, **overrides: Any) -> dict[str, Any]:
        """The client's options, its hosts in turn from the one that answered last."""
        kw = dict(self._kw, **overrides)
        last = self._answered
        if last is not None and len(self._hosts) > 1 and last in self._hosts:
            i = self._hosts.index(last)
            first, *rest = self._hosts[i:] + self._hosts[:i]
            kw["host"], kw["port"] = first
            kw["alt_hosts"] = ",".join(f"{h}:{p}" for h, p in rest)
        return kw

    def _note_answer(self, c) -> None:
        conn = getattr(c, "connection", None)
        host, port = getattr(conn, "host", None), getattr(conn, "port", None)
        if host is not None and port is not None:
            self._answered = (host, int(port))

    def _put(self, c, broken: bool) -> None:
        if broken and c is not None:
            _disconnect(c)
            c = None
        self._pool.put(c)

    def _run(self, fn, timeout: float | None = None, long: bool = False):
        """``fn(client)`` on a pooled client, ending within a deadline: ``timeout`` (a statement with a
        time limit: the limit and a margin), else :data:`LONG_CALL_S` for ``long`` calls (inserts) and
        in a ``long_calls`` scope, else the backend's call timeout. The wait for a free connection, the
        driver's ping of a pooled connection, a reconnection (its TCP connect and hello within the
        connect timeout) and the statement all count against it, and past it the client's sockets are
        shut (``_Watchdog``), so a hung server answers ``StorageUnavailable`` then, not after a ping, a
        hello and a 60 s read in turn."""
        from clickhouse_driver import errors as ch_errors

        if self._closed:
            raise StorageError("store is closed")
        budget = timeout or _LONG.get() or (LONG_CALL_S if long else self._call_s)
        deadline = time.monotonic() + budget
        c = self._client(min(30.0, budget))
        broken = False
        watch = _WATCHDOG.watch(deadline, c)
        try:
            try:
                left = max(0.1, deadline - time.monotonic())
                _socket_timeout(c, min(self._receive_timeout, left), min(self._ping_s, left),
                                min(self._connect_s, left))
                out = fn(c)
                self._note_answer(c)
                return out
            except Exception as e:
                if _WATCHDOG.cancel(watch):  # cut off at the deadline
                    broken = True
                    raise StorageUnavailable(f"ClickHouse at {self._where(c)} did not answer within "
                                             f"{budget:.0f} s") from e
                raise
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
            if _WATCHDOG.cancel(watch):
                broken = True  # its sockets were shut just as it ended: not fit for another call
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
        c = _bounded(Client(**self._client_kw(connect_timeout=timeout, send_receive_timeout=timeout,
                                              sync_request_timeout=timeout)))
        watch = _WATCHDOG.watch(time.monotonic() + timeout, c)  # connect, hello and answer: timeout in all
        try:
            ok = c.execute("SELECT 1") == [(1,)]
            self._note_answer(c)
            return ok
        except Exception as e:  # any failure means "not ready"; /readyz says so, the log says why
            log.debug("ClickHouse at %s:%s did not answer the readiness ping: %r", *self.node, e)
            return False
        finally:
            _WATCHDOG.cancel(watch)
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

        n = self._run(run, _wait_for(settings), long=True)  # a big block: sent and written within LONG_CALL_S
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


#: seconds a call without a time limit may take in all, everything it waits for included (a backend's
#: default; ``call_timeout`` sets another): reads of settings, documents and the like, which a hung
#: server must not hold for minutes
DEFAULT_CALL_S = 30.0
#: seconds an insert, or a statement in a ``long_calls`` scope, may take in all; on a hung server it
#: still ends sooner: its ping and reconnection within the connect timeout, a read within the
#: receive timeout
LONG_CALL_S = 900.0

_LONG: contextvars.ContextVar[float | None] = contextvars.ContextVar("tracehouse_long_calls", default=None)


@contextlib.contextmanager
def long_calls(seconds: float = LONG_CALL_S) -> Iterator[None]:
    """Calls without a time limit made in this scope (this thread) may take ``seconds`` in all, not
    the backend's call timeout: migrations, rollup rebuilds, retention, which may run for long."""
    token = _LONG.set(float(seconds))
    try:
        yield
    finally:
        _LONG.reset(token)


#: seconds a server is given past a statement's own time limit to say it stopped (a hung server says
#: nothing): a call with a time limit ends within the limit and this, all it waits for included
ANSWER_MARGIN_S = 5.0


def _wait_for(settings: dict[str, Any] | None) -> float | None:
    """How long to wait for a statement limited by ``max_execution_time``: its limit and a margin,
    instead of the backend's receive timeout (made for inserts and migrations)."""
    limit = (settings or {}).get("max_execution_time")
    try:
        return float(limit) + ANSWER_MARGIN_S if limit and float(limit) > 0 else None
    except (TypeError, ValueError):
        return None


#: seconds between two cuts of a call past its deadline (a reconnection made meanwhile has a new socket)
CUT_EVERY_S = 0.2


class _Watch:
    __slots__ = ("client", "done", "fired")

    def __init__(self, client: Any):
        self.client, self.done, self.fired = client, False, False


class _Watchdog:
    """One thread for every backend that ends calls past their deadline: it shuts down the sockets
    of the call's client (``shutdown``, never ``close``: the descriptor stays the calling thread's),
    so that the read the call waits in returns at once, and does it again every ``CUT_EVERY_S``
    until the call ends (the driver reconnects after a failed ping, on a new socket)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, client: Any) -> _Watch:
        w = _Watch(client)
        with self._cv:
            heapq.heappush(self._heap, (deadline, next(self._seq), w))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="clickhouse-deadlines", daemon=True)
                self._thread.start()
            self._cv.notify()
        return w

    def cancel(self, w: _Watch) -> bool:
        """The call ended: no cut after this returns. Whether its sockets were cut."""
        with self._cv:
            w.done = True
            return w.fired

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cv.wait()
                    continue
                when, _, w = self._heap[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
                w.fired = True
                _cut(w.client)  # under the lock: cancel() returning means no cut comes after
                heapq.heappush(self._heap, (time.monotonic() + CUT_EVERY_S, next(self._seq), w))


_WATCHDOG = _Watchdog()


def _connections(c) -> list:
    return list({id(x): x for x in [getattr(c, "connection", None), *getattr(c, "connections", ())] if x}.values())


def _cut(c) -> None:
    for conn in _connections(c):
        sock = getattr(conn, "socket", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # not connected (yet, or any more)
                pass


def _socket_timeout(c, timeout: float, ping_s: float, connect_s: float) -> None:
    """Set ``timeout`` on the client's connections' reads and writes (their open sockets, and the
    statement after a reconnection); the driver's ping before a statement waits ``ping_s``, the TCP
    connect and hello of a reconnection ``connect_s`` (set each time: a call left with little of its
    time must not shorten the next one's)."""
    for conn in _connections(c):
        conn.send_receive_timeout = timeout
        conn.sync_request_timeout = ping_s
        conn.connect_timeout = connect_s
        conn.tracehouse_handshake_s = connect_s
        if getattr(conn, "socket", None) is not None:
            conn.socket.settimeout(timeout)


def _bounded(c):
    """Client ``c`` with its connections' hello bounded, connecting to the first of its hosts that
    answers (``host_race.py``)."""
    for conn in _connections(c):
        _bound_handshake(conn)
        race_hosts(conn)
    return c


def _bound_handshake(conn) -> None:
    """Make ``conn``'s (re)connections wait for the server's hello at most its ``tracehouse_handshake_s``
    (the driver waits the receive timeout, 60 s, on a server that accepts and says nothing); the
    statement's reads after it wait the receive timeout again."""
    init = conn._init_connection

    def bounded(host, port):
        idle = conn.send_receive_timeout
        conn.send_receive_timeout = min(idle, getattr(conn, "tracehouse_handshake_s", idle))
        try:
            init(host, port)
        finally:
            conn.send_receive_timeout = idle
        if getattr(conn, "socket", None) is not None:
            conn.socket.settimeout(idle)

    conn._init_connection = bounded


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
