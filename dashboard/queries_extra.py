"""Queries the dashboard needs that ``tracehouse.storage`` does not (yet) offer.

Each is a function of a Store using ``store.query`` with bound parameters only, in SQL that runs
on ClickHouse 18.16 and current ClickHouse alike.
"""

from __future__ import annotations

from typing import Any

from tracehouse.storage import TimeRange
from tracehouse.storage.limits import require_raw_range

HOST = "resource_values[indexOf(resource_keys, 'host.name')]"
CONTAINER = "resource_values[indexOf(resource_keys, 'container.id')]"
CONTAINER_NAME = "resource_values[indexOf(resource_keys, 'container.name')]"
INFRA_METRICS = (
    "system.cpu.utilization", "system.memory.usage", "system.memory.utilization", "system.disk.io",
    "system.network.io", "container.cpu.utilization", "container.cpu.usage", "container.memory.usage",
    "container.memory.working_set", "container.blockio.io_service_bytes_recursive", "container.network.io",
    "process.cpu.utilization", "process.memory.usage",
)
_VALUE = "if(type IN (3, 4, 5), if(count > 0, sum / count, 0), value)"


_REQ = ("SELECT lower(hex(trace_id)) AS tid, name, start_ns, duration_ns, status_code FROM {spans} "
        "WHERE service = {{service:String}} AND timestamp >= toDateTime({{start:UInt32}}) "
        "AND timestamp <= toDateTime({{end:UInt32}}) AND {cond} ORDER BY {order} LIMIT 1 BY trace_id "
        "LIMIT {{limit:UInt32}}")
_ENTRY = "(kind IN (2, 5) OR parent_span_id = toFixedString(unhex('0000000000000000'), 8))"


def _requests(store, tr: TimeRange, service: str, cond: str, order: str, limit: int,
              extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    require_raw_range(tr, "requests")
    res = store.read(_REQ.format(spans=store.t("spans"), cond=cond, order=order),
                     {"service": service, "start": tr.start_s, "end": tr.end_s, "limit": int(limit), **(extra or {})})
    return [{"trace_id": r["tid"], "start_ns": int(r["start_ns"]), "root_service": service,
             "root_operation": r["name"], "span_count": None, "error": int(r["status_code"]) == 2,
             "duration_ms": round(int(r["duration_ns"]) / 1e6, 3)} for r in res.dicts()]


def slowest_requests(store, tr: TimeRange, service: str, limit: int = 10,
                     at_least_ms: float | None = None) -> list[dict[str, Any]]:
    """The service's slowest entry spans (server/consumer kind, or roots) in ``tr``, one per trace.
    Reads one service's spans (time and service filters prune the table) instead of merging every
    trace summary of the window, which at a million spans costs 5x more.

    ``at_least_ms`` (a high quantile from the rollup, say p95) narrows the scan to the spans at
    least that slow first, so only a few percent of the rows are read and sorted (≈65 → 4 ms for
    200k spans); when fewer than ``limit`` traces are that slow, the whole range is read."""
    if at_least_ms:
        rows = _requests(store, tr, service, _ENTRY + " AND duration_ns >= {thr:UInt64}", "duration_ns DESC", limit,
                         {"thr": int(at_least_ms * 1e6)})
        if len(rows) >= limit:
            return rows
    return _requests(store, tr, service, _ENTRY, "duration_ns DESC", limit)


def failing_requests(store, tr: TimeRange, service: str, limit: int = 10) -> list[dict[str, Any]]:
    """The service's newest spans with error status in ``tr``, one per trace."""
    return _requests(store, tr, service, "status_code = 2", "start_ns DESC", limit)


def infra_latest(store, tr: TimeRange) -> list[dict[str, Any]]:
    """Per (host, container, metric): latest and average value over ``tr`` for the infra metrics."""
    require_raw_range(tr, "metric points")
    names = ", ".join(f"'{n}'" for n in INFRA_METRICS)  # constants, not user input
    res = store.read(
        f"SELECT {HOST} AS host, {CONTAINER} AS container, any({CONTAINER_NAME}) AS container_name, name, "
        f"any(unit) AS unit, argMax({_VALUE}, ts_ns) AS last, avg({_VALUE}) AS mean, "
        f"groupUniqArray(service) AS services FROM {store.t('metric_points')} "
        "WHERE timestamp >= toDateTime({start:UInt32}) AND timestamp <= toDateTime({end:UInt32}) "
        f"AND name IN ({names}) GROUP BY host, container, name ORDER BY host, container, name LIMIT 5000",
        {"start": tr.start_s, "end": tr.end_s},
    )
    return [{"host": r["host"], "container": r["container"], "container_name": r["container_name"],
             "name": r["name"], "unit": r["unit"], "last": _num(r["last"]), "mean": _num(r["mean"]),
             "services": sorted(r["services"])} for r in res.dicts()]


def infra_series(store, tr: TimeRange, name: str, step_s: int) -> dict[str, list[tuple[int, float]]]:
    """One series per host (or container, when the points carry one) of metric ``name``."""
    require_raw_range(tr, "metric points")
    res = store.read(
        "SELECT who, groupArray(t) AS ts, groupArray(v) AS vs FROM ("
        f"SELECT if({CONTAINER} != '', concat('container ', {CONTAINER}), concat('host ', {HOST})) AS who, "
        "intDiv(toUInt32(timestamp), {step:UInt32}) * {step:UInt32} AS t, "
        f"avg({_VALUE}) AS v FROM {store.t('metric_points')} WHERE name = {{name:String}} "
        "AND timestamp >= toDateTime({start:UInt32}) AND timestamp <= toDateTime({end:UInt32}) "
        "GROUP BY who, t) GROUP BY who ORDER BY who LIMIT 30",
        {"name": name, "start": tr.start_s, "end": tr.end_s, "step": int(step_s)},
    )
    return {who: sorted((int(t), _num(v)) for t, v in zip(ts, vs)) for who, ts, vs in res.rows}


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if v != v else v


def group_infra(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pure: latest rows → {hosts: [{host, metrics{name: row}, services}], containers: [...]}."""
    hosts: dict[str, dict[str, Any]] = {}
    containers: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["container"]:
            c = containers.setdefault(r["container"], {"id": r["container"], "name": r["container_name"],
                                                       "host": r["host"], "metrics": {}, "services": set()})
            c["metrics"][r["name"]] = r
            c["services"].update(r["services"])
        else:
            h = hosts.setdefault(r["host"] or "(unknown host)", {"host": r["host"] or "(unknown host)",
                                                                "metrics": {}, "services": set()})
            h["metrics"][r["name"]] = r
            h["services"].update(r["services"])
    for d in (*hosts.values(), *containers.values()):
        d["services"] = sorted(d["services"])
    return {"hosts": sorted(hosts.values(), key=lambda h: h["host"]),
            "containers": sorted(containers.values(), key=lambda c: c["id"])}
