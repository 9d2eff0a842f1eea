"""The statements behind the alert engine's built-in rule kinds: RED over the per-minute rollup,
an aggregate of a metric's points, and the count of a service's spans or points (absence). Each
builder returns ``(sql, params)`` for the engine's query function to run; nothing here runs SQL.

Every statement runs on ClickHouse 18.16 and current releases: no toStartOfInterval, no Map, no
JSONExtract; every user value is a bound parameter. RED windows come from the per-minute rollup, so
they are rounded out to whole minutes (a 1m window evaluated at 12:00:30 covers 11:59:00–12:00:30;
the rate divides by that span). Units: ``rate`` is calls per second, ``error_rate`` a fraction
(0–1), ``p50/p95/p99`` milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

NS = 1_000_000_000
#: columns of ``metric_points`` a filter or a grouping names directly; other keys are attributes
_COLUMNS = ("service", "instance")


def _attr(param: str) -> str:
    return f"attr_values[indexOf(attr_keys, {{{param}:String}})]"


def red_sql(db: str, now_s: int, window_s: int, signal: str, service: str = "",
            operation: str = "") -> tuple[str, dict[str, Any], float]:
    """RED of entry spans per service (and operation, when one is given) over the window ending at
    ``now_s``: columns ``service`` [, ``name``], ``value``, ``n_calls``. Also returns the seconds
    the window covers."""
    start_min = (now_s - int(window_s)) // 60 * 60
    span_s = max(1.0, float(now_s - start_min))
    params: dict[str, Any] = {"start": start_min, "end": now_s}
    where = ["is_entry = 1", "minute >= toDateTime({start:UInt32})", "minute <= toDateTime({end:UInt32})"]
    keys = ["service"]
    if service:
        where.append("service = {service:String}")
        params["service"] = service
    if operation:
        where.append("name = {operation:String}")
        params["operation"] = operation
        keys.append("name")
    q = {"p50": 1, "p95": 2, "p99": 3}.get(signal)
    value = {
        "rate": f"countMerge(calls) / {span_s}",
        "error_rate": "sumMerge(errors) / countMerge(calls)",
    }.get(signal) or f"quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_q)[{q}] / 1000000"
    sql = (f"SELECT {', '.join(keys)}, {value} AS value, countMerge(calls) AS n_calls FROM {db}.red_1m "
           f"WHERE {' AND '.join(where)} GROUP BY {', '.join(keys)} HAVING n_calls > 0 ORDER BY {', '.join(keys)}")
    return sql, params, span_s


def metric_sql(db: str, now_s: int, window_s: int, metric: str, filters: Mapping[str, str],
               group_by: Iterable[str], aggregation: str) -> tuple[str, dict[str, Any]]:
    """``aggregation`` (``last``, ``count`` or a ClickHouse aggregate of ``value``) of metric
    ``metric``'s points in the window, where every filter (a column or an attribute) matches, per
    ``group_by`` key: columns ``g0``, ``g1``, … then ``value``."""
    start = now_s - int(window_s)
    params: dict[str, Any] = {"metric": metric, "start": start, "end": now_s,
                              "start_ns": start * NS, "end_ns": now_s * NS}
    where = ["name = {metric:String}", "timestamp >= toDateTime({start:UInt32})", "timestamp <= toDateTime({end:UInt32})",
             "ts_ns > {start_ns:UInt64}", "ts_ns <= {end_ns:UInt64}"]
    for i, (k, v) in enumerate(sorted(filters.items())):
        if k in _COLUMNS:
            where.append(f"{k} = {{f{i}:String}}")
        else:
            where.append(f"{_attr(f'fk{i}')} = {{f{i}:String}}")
            params[f"fk{i}"] = k
        params[f"f{i}"] = v
    cols = []
    keys = list(group_by)
    for i, k in enumerate(keys):
        if k in _COLUMNS:
            cols.append(f"{k} AS g{i}")
        else:
            cols.append(f"{_attr(f'gk{i}')} AS g{i}")
            params[f"gk{i}"] = k
    value = {"last": "argMax(value, ts_ns)", "count": "toFloat64(count())"}.get(aggregation, f"{aggregation}(value)")
    sel = ", ".join([*cols, f"{value} AS value"])
    gb = f" GROUP BY {', '.join(f'g{i}' for i in range(len(keys)))}" if keys else ""
    return f"SELECT {sel} FROM {db}.metric_points WHERE {' AND '.join(where)}{gb}", params


def absence_sql(db: str, now_s: int, window_s: int, service: str, signal: str = "any") -> tuple[str, dict[str, Any]]:
    """How many spans (``signal`` "spans"), metric points ("metrics") or both ("any") ``service``
    sent in the window: one column, ``value``."""
    start = now_s - int(window_s)
    params = {"service": service, "start": start, "end": now_s}
    span_q = (f"SELECT count() FROM {db}.spans WHERE service = {{service:String}} "
              "AND timestamp >= toDateTime({start:UInt32}) AND timestamp <= toDateTime({end:UInt32})")
    metric_q = (f"SELECT count() FROM {db}.metric_points WHERE service = {{service:String}} "
                "AND timestamp >= toDateTime({start:UInt32}) AND timestamp <= toDateTime({end:UInt32})")
    parts = {"spans": [span_q], "metrics": [metric_q], "any": [span_q, metric_q]}[signal or "any"]
    return "SELECT toFloat64(" + " + ".join(f"({p})" for p in parts) + ") AS value", params
