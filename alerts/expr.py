"""Rule expressions → SQL → samples. Pure SQL builders plus one ``evaluate`` that runs them.

Every statement runs on ClickHouse 18.16 and current releases: no toStartOfInterval, no Map, no
JSONExtract; every user value is a bound parameter. A sample is ``(labels, value)``; the
comparison with the threshold is done in Python so that a preview can show every value.

Units: ``rate`` is calls per second, ``error_rate`` a fraction (0–1), ``p50/p95/p99`` milliseconds.
RED windows come from the per-minute rollup, so they are rounded out to whole minutes (a 1m
window evaluated at 12:00:30 covers 11:59:00–12:00:30; the rate divides by that span).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import EvaluationError
from .rules import Rule
from .sqlguard import prepare

NS = 1_000_000_000
QueryFunc = Callable[..., Any]  # (sql, params, settings=None) -> storage Result


@dataclass
class Sample:
    labels: dict[str, str]
    value: float


def _attr(param: str) -> str:
    return f"attr_values[indexOf(attr_keys, {{{param}:String}})]"


def red_sql(rule: Rule, db: str, now_s: int) -> tuple[str, dict[str, Any], float]:
    start_min = (now_s - int(rule.window)) // 60 * 60
    span_s = max(1.0, float(now_s - start_min))
    params: dict[str, Any] = {"start": start_min, "end": now_s}
    where = ["is_entry = 1", "minute >= toDateTime({start:UInt32})", "minute <= toDateTime({end:UInt32})"]
    keys = ["service"]
    if rule.service:
        where.append("service = {service:String}")
        params["service"] = rule.service
    if rule.operation:
        where.append("name = {operation:String}")
        params["operation"] = rule.operation
        keys.append("name")
    q = {"p50": 1, "p95": 2, "p99": 3}.get(rule.signal)
    value = {
        "rate": f"countMerge(calls) / {span_s}",
        "error_rate": "sumMerge(errors) / countMerge(calls)",
    }.get(rule.signal) or f"quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_q)[{q}] / 1000000"
    sql = (f"SELECT {', '.join(keys)}, {value} AS value, countMerge(calls) AS n_calls FROM {db}.red_1m "
           f"WHERE {' AND '.join(where)} GROUP BY {', '.join(keys)} HAVING n_calls > 0 ORDER BY {', '.join(keys)}")
    return sql, params, span_s


def metric_sql(rule: Rule, db: str, now_s: int) -> tuple[str, dict[str, Any]]:
    start = now_s - int(rule.window)
    params: dict[str, Any] = {"metric": rule.metric or "tracehouse.probe.up", "start": start, "end": now_s,
                              "start_ns": start * NS, "end_ns": now_s * NS}
    where = ["name = {metric:String}", "timestamp >= toDateTime({start:UInt32})", "timestamp <= toDateTime({end:UInt32})",
             "ts_ns > {start_ns:UInt64}", "ts_ns <= {end_ns:UInt64}"]
    filters = dict(rule.filters)
    group_by = list(rule.group_by)
    if rule.kind == "middleware":
        group_by = ["service", "probe.target", "probe.kind"]
        if rule.target:
            filters["probe.target"] = rule.target
    if rule.service:
        filters.setdefault("service", rule.service)
    for i, (k, v) in enumerate(sorted(filters.items())):
        if k in ("service", "instance"):
            where.append(f"{k} = {{f{i}:String}}")
        else:
            where.append(f"{_attr(f'fk{i}')} = {{f{i}:String}}")
            params[f"fk{i}"] = k
        params[f"f{i}"] = v
    cols = []
    for i, k in enumerate(group_by):
        if k in ("service", "instance"):
            cols.append(f"{k} AS g{i}")
        else:
            cols.append(f"{_attr(f'gk{i}')} AS g{i}")
            params[f"gk{i}"] = k
    agg = "last" if rule.kind == "middleware" else rule.aggregation
    value = {"last": "argMax(value, ts_ns)", "count": "toFloat64(count())"}.get(agg, f"{agg}(value)")
    sel = ", ".join([*cols, f"{value} AS value"])
    gb = f" GROUP BY {', '.join(f'g{i}' for i in range(len(group_by)))}" if group_by else ""
    return f"SELECT {sel} FROM {db}.metric_points WHERE {' AND '.join(where)}{gb}", params


def absence_sql(rule: Rule, db: str, now_s: int) -> tuple[str, dict[str, Any]]:
    start = now_s - int(rule.window)
    params = {"service": rule.service, "start": start, "end": now_s}
    span_q = (f"SELECT count() FROM {db}.spans WHERE service = {{service:String}} "
              "AND timestamp >= toDateTime({start:UInt32}) AND timestamp <= toDateTime({end:UInt32})")
    metric_q = (f"SELECT count() FROM {db}.metric_points WHERE service = {{service:String}} "
                "AND timestamp >= toDateTime({start:UInt32}) AND timestamp <= toDateTime({end:UInt32})")
    parts = {"spans": [span_q], "metrics": [metric_q], "any": [span_q, metric_q]}[rule.signal or "any"]
    return "SELECT toFloat64(" + " + ".join(f"({p})" for p in parts) + ") AS value", params


def _label_value(v: Any) -> str:
    if isinstance(v, bytes):
        return v.hex()
    return "" if v is None else str(v)


def _rows_to_samples(res: Any, names: list[str] | None = None, skip: tuple[str, ...] = ()) -> list[Sample]:
    cols = list(res.names)
    if "value" not in cols:
        raise EvaluationError("the query returned no column named value")
    vi = cols.index("value")
    out = []
    for row in res.rows[:10_000]:
        labels = {}
        for i, c in enumerate(cols):
            if i == vi or c in skip:
                continue
            name = names[i] if names else c
            labels[name] = _label_value(row[i])
        v = row[vi]
        try:
            value = float(v) if v is not None else math.nan
        except (TypeError, ValueError):
            raise EvaluationError(f"value column is not numeric: {v!r}") from None
        out.append(Sample(labels, value))
    return out


def evaluate(rule: Rule, query: QueryFunc, db: str, now_ns: int, sql_query: QueryFunc | None = None) -> list[Sample]:
    """Run ``rule``'s expression at ``now_ns``; return every sample (condition not applied).
    ``sql_query(sql, params)`` runs a SQL rule's checked text where user SQL runs
    (``Store.rule_reader().query``: read-only, the store's database by default, limited)."""
    now_s = now_ns // NS
    if rule.kind == "red":
        sql, params, _ = red_sql(rule, db, now_s)
        res = query(sql, params)
        samples = []
        for s in _rows_to_samples(res, skip=("n_calls",)):
            labels = {"service": s.labels["service"]}
            if "name" in s.labels:
                labels["operation"] = s.labels["name"]
            samples.append(Sample(labels, s.value))
        return samples
    if rule.kind in ("metric", "middleware"):
        sql, params = metric_sql(rule, db, now_s)
        res = query(sql, params)
        group_by = ["service", "target", "probe_kind"] if rule.kind == "middleware" else \
            [g.replace(".", "_") for g in rule.group_by]
        names = [*group_by, "value"]
        return _rows_to_samples(res, names)
    if rule.kind == "absence":
        sql, params = absence_sql(rule, db, now_s)
        res = query(sql, params)
        return [Sample({"service": rule.service}, float(res.scalar() or 0))]
    if rule.kind == "sql":
        if sql_query is None:
            raise EvaluationError("SQL rules run through a rule reader (Store.rule_reader); none was given")
        sql = prepare(rule.query, db)
        start = now_s - int(rule.window)
        all_params = {"start": start, "end": now_s, "start_ns": start * NS, "end_ns": now_s * NS}
        used = {k: v for k, v in all_params.items() if "{" + k + ":" in sql}
        return _rows_to_samples(sql_query(sql, used))
    raise EvaluationError(f"unknown rule kind {rule.kind}")
