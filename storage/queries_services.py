"""RED overview queries over the ``red_1m`` rollup (never raw spans)."""

from __future__ import annotations

import math
from typing import Any

from .errors import InvalidParameter
from .timerange import TimeRange

MAX_POINTS = 2000
#: services listed by the API (the busiest; a result LIMIT in the SQL) and on the pages
MAX_SERVICES = 2000
PAGE_SERVICES = 500
#: a service's operations listed (the most calls first); a result LIMIT in the SQL
MAX_OPERATIONS = 500


def _f(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


def _ms(ns: Any) -> float | None:
    v = _f(ns)
    return None if v is None else round(v / 1e6, 3)


def _window(tr: TimeRange) -> dict[str, int]:
    return {"start": tr.start_s - tr.start_s % 60, "end": tr.end_s}


def _red(row: dict[str, Any], seconds: float) -> dict[str, Any]:
    calls = int(row["calls"] or 0)
    errors = int(row["errors"] or 0)
    q = row.get("q") or [None, None, None]
    return {
        "requests": calls,
        "errors": errors,
        "rate": round(calls / seconds, 4),
        "error_rate": round(errors / calls, 4) if calls else 0.0,
        "p50_ms": _ms(q[0]),
        "p95_ms": _ms(q[1]),
        "p99_ms": _ms(q[2]),
    }


def _scope(tr: TimeRange, match: str | None) -> tuple[str, dict[str, Any]]:
    """WHERE text and its parameters: the window, and names containing ``match`` (any case) if given."""
    params: dict[str, Any] = _window(tr)
    cond = "minute >= toDateTime({start:UInt32}) AND minute < toDateTime({end:UInt32})"
    return cond + _containing("service", match, params), params


def _containing(column: str, match: str | None, params: dict[str, Any]) -> str:
    """SQL ` AND …`: ``column`` contains ``match`` (any case); nothing when ``match`` is empty."""
    if not match:
        return ""
    if len(match) > 1000:
        raise InvalidParameter("q longer than 1000 characters")
    params["match"] = match
    return f" AND positionCaseInsensitiveUTF8({column}, {{match:String}}) > 0"


def _busiest(store, cond: str, cap: str = "cap") -> str:
    """SQL: the ``{<cap>}`` services with the most spans in the window (then the most errors, then
    by name), so a flood of one-span services named to sort first cannot push busier ones off a list."""
    return (f"SELECT service FROM {store.t('red_1m')} WHERE {cond} GROUP BY service "
            f"ORDER BY countMerge(calls) DESC, sumMerge(errors) DESC, service LIMIT {{{cap}:UInt32}}")


def services(store, tr: TimeRange, limit: int = MAX_SERVICES, match: str | None = None) -> list[dict[str, Any]]:
    """Per service: request rate, error rate, p50/p95/p99 and span count, by name. Requests are the
    service's entry spans (server/consumer/root); a service with none (a batch worker, say) is
    measured by all its spans. At most ``limit`` services: the busiest (see :func:`listing`);
    ``match``: only names containing it (any case)."""
    cond, params = _scope(tr, match)
    res = store.read(
        f"SELECT service, is_entry, countMerge(calls) AS calls, sumMerge(errors) AS errors, "
        f"quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_q) AS q FROM {store.t('red_1m')} "
        f"WHERE {cond} AND service IN ({_busiest(store, cond)}) GROUP BY service, is_entry "
        "ORDER BY service, is_entry LIMIT {rows:UInt32}",
        {**params, "cap": int(limit), "rows": 2 * int(limit)},
    )
    by_service: dict[str, dict[int, dict[str, Any]]] = {}
    for row in res.dicts():
        by_service.setdefault(row["service"], {})[int(row["is_entry"])] = row
    out = []
    for name, rows in sorted(by_service.items()):
        main = rows.get(1) or rows[0]
        item = {"service": name, **_red(main, tr.seconds)}
        item["span_count"] = sum(int(r["calls"] or 0) for r in rows.values())
        out.append(item)
    return out


def listing(store, tr: TimeRange, limit: int = MAX_SERVICES, match: str | None = None) -> dict[str, Any]:
    """:func:`services` and whether the list was cut: ``{"services", "total", "truncated"}``. Past
    ``limit`` services the busiest are kept (most spans, then most errors, then by name) and
    ``total`` counts them all; counted only when the list is full. Services as busy as the last
    one kept can be left out (a flood of one-span services against a one-span service): ``match``
    finds any service by part of its name."""
    rows = services(store, tr, limit, match)
    total = len(rows)
    if total >= limit:
        cond, params = _scope(tr, match)
        total = int(store.read(f"SELECT uniqExact(service) FROM {store.t('red_1m')} WHERE {cond}", params).scalar())
    return {"services": rows, "total": total, "truncated": total > len(rows)}


def service_summary(store, service: str, tr: TimeRange) -> dict[str, Any] | None:
    """One service's row of :func:`services` (None when it has no spans in ``tr``), reading only
    that service's rollup rows."""
    res = store.read(
        f"SELECT is_entry, countMerge(calls) AS calls, sumMerge(errors) AS errors, "
        f"quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_q) AS q FROM {store.t('red_1m')} "
        "WHERE service = {service:String} AND minute >= toDateTime({start:UInt32}) "
        "AND minute < toDateTime({end:UInt32}) GROUP BY is_entry",
        {"service": service, **_window(tr)},
    )
    rows = {int(r["is_entry"]): r for r in res.dicts()}
    if not rows:
        return None
    main = rows.get(1) or rows[0]
    return {"service": service, **_red(main, tr.seconds),
            "span_count": sum(int(r["calls"] or 0) for r in rows.values()), "has_entry": 1 in rows}


def _operations(store, service: str, tr: TimeRange, limit: int, match: str | None) -> list[dict[str, Any]]:
    """Up to ``limit`` + 1 of the service's operations, the busiest first (the extra row says the
    list goes on)."""
    cond, params = _op_scope(service, tr, match)
    res = store.read(
        f"SELECT name, kind, max(is_entry) AS is_entry, countMerge(calls) AS calls, sumMerge(errors) AS errors, "
        f"quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_q) AS q FROM {store.t('red_1m')} WHERE {cond} "
        "GROUP BY name, kind ORDER BY calls DESC, errors DESC, name, kind LIMIT {cap:UInt32}",
        {**params, "cap": int(limit) + 1},
    )
    return [
        {"operation": r["name"], "kind": _KINDS.get(int(r["kind"]), "unspecified"), "entry": bool(r["is_entry"]),
         **_red(r, tr.seconds)}
        for r in res.dicts()
    ]


def _op_scope(service: str, tr: TimeRange, match: str | None) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"service": service, **_window(tr)}
    cond = ("service = {service:String} AND minute >= toDateTime({start:UInt32}) "
            "AND minute < toDateTime({end:UInt32})")
    return cond + _containing("name", match, params), params


def operations(store, service: str, tr: TimeRange, limit: int = MAX_OPERATIONS,
               match: str | None = None) -> list[dict[str, Any]]:
    """The service's operations (name and span kind) with their RED, the most calls first (then the
    most errors, then by name): at most ``limit`` (see :func:`operation_listing`)."""
    return _operations(store, service, tr, limit, match)[:limit]


def operation_listing(store, service: str, tr: TimeRange, limit: int = MAX_OPERATIONS,
                      match: str | None = None) -> dict[str, Any]:
    """:func:`operations` and whether the list was cut: ``{"operations", "total", "truncated"}``.
    Past ``limit`` the busiest are kept and ``total`` counts them all (counted only then); an
    operation no busier than the last one kept can be left out: ``match`` (part of the name, any
    case) finds any."""
    rows = _operations(store, service, tr, limit, match)
    if len(rows) <= limit:
        return {"operations": rows, "total": len(rows), "truncated": False}
    cond, params = _op_scope(service, tr, match)
    total = int(store.read(f"SELECT uniqExact(name, kind) FROM {store.t('red_1m')} WHERE {cond}", params).scalar())
    return {"operations": rows[:limit], "total": total, "truncated": True}


_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def pick_step(tr: TimeRange, step_s: int | None) -> int:
    if step_s is None:
        step_s = max(60, int(tr.seconds / 120))
    step_s = max(60, int(step_s) - int(step_s) % 60)
    if tr.seconds / step_s > MAX_POINTS:
        raise InvalidParameter(f"step too small: more than {MAX_POINTS} points")
    return step_s


def series(store, service: str, tr: TimeRange, step_s: int | None = None, operation: str | None = None,
           has_entry: bool | None = None) -> dict[str, Any]:
    """Rate, errors and latency quantiles over time for a service's requests (or one operation).
    ``has_entry``: whether the service has entry spans in ``tr``, when the caller knows (else asked)."""
    step = pick_step(tr, step_s)
    params: dict[str, Any] = {"service": service, "step": step, **_window(tr)}
    cond = "is_entry = 1"
    if operation:
        cond = "name = {op:String}"
        params["op"] = operation
    elif has_entry is None:
        has_entry = store.read(
            f"SELECT count() FROM {store.t('red_1m')} WHERE service = {{service:String}} AND is_entry = 1 "
            "AND minute >= toDateTime({start:UInt32}) AND minute < toDateTime({end:UInt32})",
            {"service": service, **_window(tr)},
        ).scalar()
    if not operation and not has_entry:
        cond = "1"
    res = store.read(
        f"SELECT intDiv(toUInt32(minute), {{step:UInt32}}) * {{step:UInt32}} AS t, countMerge(calls) AS calls, "
        f"sumMerge(errors) AS errors, quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_q) AS q "
        f"FROM {store.t('red_1m')} WHERE service = {{service:String}} AND {cond} "
        "AND minute >= toDateTime({start:UInt32}) AND minute < toDateTime({end:UInt32}) GROUP BY t ORDER BY t "
        "LIMIT {cap:UInt32}",
        {**params, "cap": MAX_POINTS + 1},
    )
    points = []
    for r in res.dicts():
        red = _red(r, step)
        points.append({"t": int(r["t"]), **red})
    return {"service": service, "operation": operation, "step_s": step, "points": points}


def sparklines(store, tr: TimeRange, step_s: int | None = None, limit: int = MAX_SERVICES,
               match: str | None = None) -> dict[str, list[tuple[int, float]]]:
    """Request-rate series of the services :func:`services` lists with the same ``limit`` and
    ``match`` (one query)."""
    step = pick_step(tr, step_s)
    cond, params = _scope(tr, match)
    res = store.read(
        "SELECT service, groupArray(t) AS ts, groupArray(calls) AS cs FROM ("
        f"SELECT service, intDiv(toUInt32(minute), {{step:UInt32}}) * {{step:UInt32}} AS t, countMerge(calls) AS calls "
        f"FROM {store.t('red_1m')} WHERE is_entry = 1 AND {cond} AND service IN ({_busiest(store, cond)}) "
        "GROUP BY service, t) GROUP BY service LIMIT {cap:UInt32}",
        {**params, "step": step, "cap": int(limit)},
    )
    out: dict[str, list[tuple[int, float]]] = {}
    for service, ts, cs in res.rows:
        out[service] = sorted((int(t), round(int(c) / step, 4)) for t, c in zip(ts, cs))
    return out
