"""A ClickHouse server through clickhouse-driver (native protocol, port 9000).

Placeholders ``{name:Type}`` are bound on the client by the driver's own escaping (old servers
have no server-side parameters). Clients are pooled; every call has connect and receive timeouts.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from typing import Any

from .backend import PARAM_RE, Result, check_params
from .errors import QueryError, QueryLimitExceeded, QueryTimeout, StorageError, StorageUnavailable
from .schema import Table
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
    out = {}
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


class ServerBackend:
    kind = "clickhouse"

    def __init__(self, url: StorageURL, pool_size: int = 4, connect_timeout: float = 5.0,
                 receive_timeout: float = 60.0, default_database: str = "default"):
        self.url = url
        self._kw = dict(
            host=url.host,
            port=url.port,
            user=url.user,
            password=url.password,
            database=default_database,
            connect_timeout=connect_timeout,
            send_receive_timeout=receive_timeout,
            sync_request_timeout=connect_timeout,
            secure=url.secure,
            settings={"use_numpy": False},
        )
        self._pool: queue.LifoQueue = queue.LifoQueue(maxsize=pool_size)
        for _ in range(pool_size):
            self._pool.put(None)
        self._closed = False

    def _client(self):
        from clickhouse_driver import Client

        try:
            c = self._pool.get(timeout=30)
        except queue.Empty:
            raise StorageUnavailable("no free ClickHouse connection within 30 s") from None
        return c if c is not None else Client(**self._kw)

    def _put(self, c, broken: bool) -> None:
        if broken and c is not None:
            try:
                c.disconnect()
            except Exception:
                pass
            c = None
        self._pool.put(c)

    def _run(self, fn):
        from clickhouse_driver import errors as ch_errors

        if self._closed:
            raise StorageError("store is closed")
        c = self._client()
        broken = False
        try:
            return fn(c)
        except ch_errors.ServerException as e:
            if e.code == 159:
                raise QueryTimeout(str(e)) from e
            if e.code in QueryLimitExceeded.CODES:
                raise QueryLimitExceeded(str(e)) from e
            raise QueryError(str(e)) from e
        except (TimeoutError, ch_errors.NetworkError, ch_errors.SocketTimeoutError, OSError, EOFError) as e:
            broken = True
            raise StorageUnavailable(f"ClickHouse at {self.url.host}:{self.url.port} unavailable: {e}") from e
        except ch_errors.Error as e:
            broken = True
            raise QueryError(str(e)) from e
        finally:
            self._put(c, broken)

    def query(self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> Result:
        check_params(sql, params)
        if params:
            dsql, dparams = to_driver_sql(sql), _coerce(clean_params(params), sql)
        else:
            dsql, dparams = sql, None

        def run(c):
            rows, types = c.execute(dsql, dparams, with_column_types=True, settings=settings or None)
            return Result([n for n, _ in types], _text_rows(rows, [t for _, t in types]))

        return self._run(run)

    def insert(self, table: Table, qualified_name: str, columns: Sequence[Sequence[Any]],
               token: str | None = None) -> int:
        cols = ", ".join(table.column_names)
        data = [list(c) for c in columns]
        settings = ({"insert_deduplication_token": token, "deduplicate_blocks_in_dependent_materialized_views": 1}
                    if token else None)

        def run(c):
            return c.execute(f"INSERT INTO {qualified_name} ({cols}) VALUES", data, columnar=True, settings=settings)

        n = self._run(run)
        return int(n or 0)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                c = self._pool.get_nowait()
            except queue.Empty:
                break
            if c is not None:
                try:
                    c.disconnect()
                except Exception:
                    pass


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
