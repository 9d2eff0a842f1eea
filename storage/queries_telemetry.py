"""Metric series and log records."""

from __future__ import annotations

from typing import Any

from .attrs import decode_map
from .errors import InvalidParameter
from .ids import hex_id, parse_trace_id
from .limits import require_raw_range
from .queries_services import pick_step
from .queries_traces import parse_attr_filters
from .timerange import TimeRange, is_digits

METRIC_TYPES = {1: "gauge", 2: "sum", 3: "histogram", 4: "exponential_histogram", 5: "summary"}
_VALUE = "if(type IN (3, 4, 5), if(count > 0, sum / count, 0), value)"
AGGS = {
    "avg": f"avg({_VALUE})",
    "min": f"min({_VALUE})",
    "max": f"max({_VALUE})",
    "sum": f"sum({_VALUE})",
    "last": f"argMax({_VALUE}, ts_ns)",
    "count": "count()",
    "rate": f"(max({_VALUE}) - min({_VALUE})) / {{step:UInt32}}",
}
SEVERITIES = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "warning": 13, "error": 17, "fatal": 21}


def parse_severity(text: str) -> int:
    """The lowest severity number a user asked for: a name (``warn``) or a number 0-24."""
    s = text.strip().lower()
    num = int(s) if is_digits(s) else SEVERITIES.get(s)
    if num is None or not 0 <= num <= 24:
        raise InvalidParameter(f"bad severity {text!r}: one of trace, debug, info, warn, error, fatal or 1-24")
    return num
MAX_SERIES = 200


MAX_NAMES = 5000


def metric_names(store, tr: TimeRange, service: str | None = None, limit: int = MAX_NAMES) -> list[dict[str, Any]]:
    """The metrics with points in ``tr``, by name; past ``limit`` the ones with the most points (a
    flood of one-point names that sort first must not hide the others)."""
    require_raw_range(tr, "metric points")
    params: dict[str, Any] = {"start": tr.start_s, "end": tr.end_s, "cap": int(limit)}
    cond = ""
    if service:
        cond = " AND service = {service:String}"
        params["service"] = service
    res = store.read(
        f"SELECT name, any(type) AS type, any(unit) AS unit, any(description) AS description, "
        f"groupUniqArray(service) AS services, count() AS points FROM {store.t('metric_points')} "
        f"WHERE timestamp >= toDateTime({{start:UInt32}}) AND timestamp <= toDateTime({{end:UInt32}}){cond} "
        "GROUP BY name ORDER BY points DESC, name LIMIT {cap:UInt32}",
        params,
    )
    return sorted((
        {"name": r["name"], "type": METRIC_TYPES.get(int(r["type"]), "unknown"), "unit": r["unit"],
         "description": r["description"], "services": sorted(r["services"]), "points": int(r["points"])}
        for r in res.dicts()), key=lambda m: m["name"])


def metric_listing(store, tr: TimeRange, service: str | None = None, limit: int = MAX_NAMES) -> dict[str, Any]:
    """:func:`metric_names` and whether the list was cut: ``{"metrics", "total", "truncated"}``
    (``total`` counted only when the list is full)."""
    rows = metric_names(store, tr, service, limit)
    total = len(rows)
    if total >= limit:
        params: dict[str, Any] = {"start": tr.start_s, "end": tr.end_s, **({"service": service} if service else {})}
        total = int(store.read(
            f"SELECT uniqExact(name) FROM {store.t('metric_points')} WHERE timestamp >= toDateTime({{start:UInt32}}) "
            "AND timestamp <= toDateTime({end:UInt32})" + (" AND service = {service:String}" if service else ""),
            params).scalar())
    return {"metrics": rows, "total": total, "truncated": total > len(rows)}


def metric_series(store, name: str, tr: TimeRange, service: str | None = None, labels: list[str] | None = None,
                  step_s: int | None = None, agg: str = "avg", group_by: list[str] | None = None) -> dict[str, Any]:
    """Series of one metric, one per (service, instance, attributes) — or per the ``group_by`` labels —
    aggregated per step. Histograms and summaries contribute their mean (sum / count)."""
    if not name:
        raise InvalidParameter("name is required")
    if agg not in AGGS:
        raise InvalidParameter(f"agg must be one of {sorted(AGGS)}")
    require_raw_range(tr, "metric points")
    step = pick_step(tr, step_s) if step_s is None or step_s >= 60 else max(1, int(step_s))
    if tr.seconds / step > 2000:
        raise InvalidParameter("step too small: more than 2000 points")
    params: dict[str, Any] = {"name": name, "start": tr.start_s, "end": tr.end_s, "step": step}
    conds = ["name = {name:String}", "timestamp >= toDateTime({start:UInt32})", "timestamp <= toDateTime({end:UInt32})"]
    if service:
        conds.append("service = {service:String}")
        params["service"] = service
    for i, (k, v) in enumerate(parse_attr_filters(labels)):
        conds.append(f"attr_values[indexOf(attr_keys, {{lk{i}:String}})] = {{lv{i}:String}}")
        params[f"lk{i}"], params[f"lv{i}"] = k, v
    if group_by:
        if len(group_by) > 10:
            raise InvalidParameter("at most 10 group_by labels")
        keys = []
        for i, g in enumerate(group_by):
            if g in ("service", "instance"):
                keys.append(g)
            else:
                params[f"g{i}"] = g
                keys.append(f"attr_values[indexOf(attr_keys, {{g{i}:String}})]")
        series_key = "[" + ", ".join(f"toString({k})" for k in keys) + "]"
        key_names = list(group_by)
    else:
        series_key = "arrayConcat([toString(service), toString(instance)], attr_keys, attr_values)"
        key_names = []
    # One row per series (its points as arrays), at most MAX_SERIES + 1 of them: the cap is in the
    # SQL, so a metric with a million label sets costs the engine's aggregation, not a transfer. Past
    # the cap the series with the most points are kept (a flood of one-point label sets that sort
    # first must not hide the others), listed by labels.
    params["cap"] = MAX_SERIES + 1
    sql = (
        "SELECT skey, groupArray(t) AS ts, groupArray(v) AS vs FROM ("
        f"SELECT {series_key} AS skey, intDiv(toUInt32(timestamp), {{step:UInt32}}) * {{step:UInt32}} AS t, "
        f"{AGGS[agg]} AS v, count() AS n FROM {store.t('metric_points')} WHERE {' AND '.join(conds)} "
        "GROUP BY skey, t) GROUP BY skey ORDER BY sum(n) DESC, skey LIMIT {cap:UInt32}"
    )
    rows = store.read(sql, params).rows
    series = []
    for skey, ts, vs in sorted(rows[:MAX_SERIES], key=lambda r: tuple(r[0])):
        key = tuple(skey)
        if key_names:
            lbl = dict(zip(key_names, key))
        else:
            n = (len(key) - 2) // 2
            lbl = {"service": key[0], "instance": key[1], **dict(zip(key[2 : 2 + n], key[2 + n :]))}
        points = sorted([int(t), None if v is None or v != v else float(v)] for t, v in zip(ts, vs))
        series.append({"labels": lbl, "points": points})
    return {"name": name, "agg": agg, "step_s": step, "series": series, "truncated": len(rows) > MAX_SERIES}


def logs(store, tr: TimeRange, service: str | None = None, trace_id: str | None = None,
         severity: str | None = None, q: str | None = None, event_name: str | None = None,
         limit: int = 100) -> list[dict[str, Any]]:
    if not 1 <= int(limit) <= 1000:
        raise InvalidParameter("limit must be 1 to 1000")
    require_raw_range(tr, "logs")
    params: dict[str, Any] = {"start": tr.start_s, "end": tr.end_s, "limit": int(limit)}
    conds = ["timestamp >= toDateTime({start:UInt32})", "timestamp <= toDateTime({end:UInt32})"]
    if service:
        conds.append("service = {service:String}")
        params["service"] = service
    if trace_id:
        conds.append("trace_id = toFixedString(unhex({tid:String}), 16)")
        params["tid"] = parse_trace_id(trace_id)
    if severity:
        conds.append("severity_number >= {sev:UInt8}")
        params["sev"] = parse_severity(severity)
    if q:
        if len(q) > 1000:
            raise InvalidParameter("q longer than 1000 characters")
        conds.append("positionCaseInsensitiveUTF8(body, {q:String}) > 0")
        params["q"] = q
    if event_name:
        conds.append("event_name = {ev:String}")
        params["ev"] = event_name
    res = store.read(
        "SELECT ts_ns, severity_number, severity_text, service, instance, event_name, body, lower(hex(trace_id)) AS trace_hex, lower(hex(span_id)) AS span_hex, "
        f"attr_keys, attr_values, attr_types, resource_keys, resource_values FROM {store.t('logs')} "
        f"WHERE {' AND '.join(conds)} ORDER BY timestamp DESC, ts_ns DESC LIMIT {{limit:UInt32}}",
        params,
    )
    return [
        {"time_ns": int(r["ts_ns"]), "severity_number": int(r["severity_number"]), "severity": r["severity_text"],
         "service": r["service"], "instance": r["instance"], "event_name": r["event_name"], "body": r["body"],
         "trace_id": hex_id(r["trace_hex"]), "span_id": hex_id(r["span_hex"]),
         "attributes": decode_map(r["attr_keys"], r["attr_values"], r["attr_types"]),
         "resource": dict(zip(r["resource_keys"], r["resource_values"]))}
        for r in res.dicts()
    ]
