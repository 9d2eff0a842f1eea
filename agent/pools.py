"""Connection-pool figures for the clients that expose them: redis-py, SQLAlchemy and psycopg2 pools.

Pools are found by wrapping the pool classes' constructors when the host imports the client
(the agent imports none of them) and kept as weak references; figures are read at
collection time, nothing runs on the request path. Exported with the OpenTelemetry database
semantic-convention names:

- ``db.client.connection.count`` {``db.client.connection.state``: ``used`` | ``idle``}
- ``db.client.connection.max``
- ``db.client.connection.pending_requests`` (SQLAlchemy overflow beyond its size; 0 where unknown)

each with ``db.client.connection.pool.name`` and ``db.system``.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any

from . import errors
from .forklocks import renew_in_child
from .on_import import Deferred

_lock = threading.Lock()
renew_in_child(globals(), "_lock")
_pools: list[tuple[weakref.ref, str, str]] = []  # (pool, db.system, pool name)
_installed = False


def track(pool: Any, system: str, name: str) -> None:
    with _lock:
        _pools.append((weakref.ref(pool), system, name))


def _redis_name(pool: Any) -> str:
    kw = getattr(pool, "connection_kwargs", {}) or {}
    if kw.get("path"):
        return f"redis+unix://{kw['path']}/{kw.get('db', 0)}"
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _redis_figures(pool: Any) -> tuple[int, int, int, int] | None:
    in_use = getattr(pool, "_in_use_connections", None)
    idle = getattr(pool, "_available_connections", None)
    if in_use is None or idle is None:
        return None
    return len(in_use), len(idle), int(getattr(pool, "max_connections", 0) or 0), 0


def _sqlalchemy_figures(pool: Any) -> tuple[int, int, int, int] | None:
    try:
        size = int(pool.size())
        return int(pool.checkedout()), int(pool.checkedin()), size + max(0, int(getattr(pool, "_max_overflow", 0))), \
            max(0, int(pool.overflow()))
    except (AttributeError, TypeError, ValueError) as exc:  # a pool class we do not know: no figures
        errors.swallow("read SQLAlchemy pool figures", exc)
        return None


def _psycopg2_figures(pool: Any) -> tuple[int, int, int, int] | None:
    used, idle = getattr(pool, "_used", None), getattr(pool, "_pool", None)
    if used is None or idle is None:
        return None
    return len(used), len(idle), int(getattr(pool, "maxconn", 0) or 0), 0


_FIGURES = {"redis": _redis_figures, "sqlalchemy": _sqlalchemy_figures, "postgresql": _psycopg2_figures}


def _wrap_init(cls: type, on_new) -> None:
    original = cls.__init__
    if getattr(original, "_tracehouse_wrapped", False):
        return

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        try:
            on_new(self)
        except Exception as exc:  # never break the application's pool
            errors.swallow("track connection pool", exc)

    __init__._tracehouse_wrapped = True  # type: ignore[attr-defined]
    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    cls.__init__ = __init__


def _redis(module) -> None:
    _wrap_init(module.ConnectionPool, lambda p: track(p, "redis", _redis_name(p)))


def _sqlalchemy(module) -> None:
    _wrap_init(module.QueuePool, lambda p: track(p, "sqlalchemy", f"sqlalchemy-{id(p):x}"))


def _psycopg2(module) -> None:
    def name(p: Any) -> str:
        kw = getattr(p, "_kwargs", {}) or {}
        dsn = " ".join(str(a) for a in getattr(p, "_args", ()) if isinstance(a, str))
        if kw:
            return f"postgresql://{kw.get('host', 'localhost')}:{kw.get('port', 5432)}/{kw.get('dbname', '')}"
        return "postgresql:" + " ".join(x for x in dsn.split() if not x.startswith("password"))

    _wrap_init(module.AbstractConnectionPool, lambda p: track(p, "postgresql", name(p)))


def install() -> None:
    """Wrap the pool classes of the clients the host imports, when it imports them (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    for module, wrap in (("redis.connection", _redis), ("sqlalchemy.pool", _sqlalchemy),
                         ("psycopg2.pool", _psycopg2)):
        Deferred((module,), lambda wrap=wrap, module=module: wrap(sys.modules[module]), f"track {module} pools")


def snapshot() -> list[dict[str, Any]]:
    """The live pools' figures (dropped pools are forgotten)."""
    out = []
    with _lock:
        alive = [(ref, system, name) for ref, system, name in _pools if ref() is not None]
        _pools[:] = alive
    for ref, system, name in alive:
        pool = ref()
        if pool is None:
            continue
        figs = _FIGURES[system](pool)
        if figs is not None:
            used, idle, maximum, pending = figs
            out.append({"system": system, "name": name, "used": used, "idle": idle, "max": maximum,
                        "pending": pending})
    return out


def register(meter) -> list:
    from opentelemetry.metrics import Observation

    def _attrs(p: dict[str, Any], **extra: str) -> dict[str, str]:
        return {"db.client.connection.pool.name": p["name"], "db.system": p["system"], **extra}

    def count(options):
        obs = []
        for p in snapshot():
            obs.append(Observation(p["used"], _attrs(p, **{"db.client.connection.state": "used"})))
            obs.append(Observation(p["idle"], _attrs(p, **{"db.client.connection.state": "idle"})))
        return obs

    def maximum(options):
        return [Observation(p["max"], _attrs(p)) for p in snapshot() if p["max"]]

    def pending(options):
        return [Observation(p["pending"], _attrs(p)) for p in snapshot()]

    return [
        meter.create_observable_up_down_counter("db.client.connection.count", [count], unit="{connection}",
                                                description="Connections in the pool, by state."),
        meter.create_observable_up_down_counter("db.client.connection.max", [maximum], unit="{connection}",
                                                description="Largest number of connections the pool allows."),
        meter.create_observable_up_down_counter("db.client.connection.pending_requests", [pending],
                                                unit="{request}",
                                                description="Connections beyond the pool size (SQLAlchemy overflow)."),
    ]
