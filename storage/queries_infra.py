"""Host and container metrics (the infrastructure page): the latest value of each infra metric per
host or container, and one series per host or container of one metric. Raw metric points, read
within the raw-data range limit; SQL that runs on ClickHouse 18.16 and current ClickHouse alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .limits import require_raw_range
from .timerange import TimeRange

if TYPE_CHECKING:
    from .store import Store

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


#: hosts and containers on the page: the ones with the most points of the infra metrics
MAX_MACHINES = 200


def _where(names: str) -> str:
    return ("timestamp >= toDateTime({start:UInt32}) AND timestamp <= toDateTime({end:UInt32}) "
            f"AND name IN ({names})")


def infra_latest(store: Store, tr: TimeRange, limit: int = MAX_MACHINES) -> dict[str, Any]:
    """``{"rows", "total", "truncated"}``: per (host, container, metric) latest and average value
    over ``tr`` of the infra metrics, for the ``limit`` (host, container) pairs with the most points
    (a flood of one-point hosts that sort first must not hide the others); ``total`` counts the
    pairs when the list is full."""
    require_raw_range(tr, "metric points")
    names = ", ".join(f"'{n}'" for n in INFRA_METRICS)  # constants, not user input
    params = {"start": tr.start_s, "end": tr.end_s, "cap": int(limit)}
    table = store.t("metric_points")
    res = store.read(
        f"SELECT {HOST} AS host, {CONTAINER} AS container, any({CONTAINER_NAME}) AS container_name, name, "
        f"any(unit) AS unit, argMax({_VALUE}, ts_ns) AS last, avg({_VALUE}) AS mean, "
        f"groupUniqArray(service) AS services FROM {table} WHERE {_where(names)} "
        f"AND ({HOST}, {CONTAINER}) IN (SELECT {HOST} AS h, {CONTAINER} AS c FROM {table} "
        f"WHERE {_where(names)} GROUP BY h, c ORDER BY count() DESC, h, c LIMIT {{cap:UInt32}}) "
        "GROUP BY host, container, name ORDER BY host, container, name LIMIT 5000",
        params,
    )
    rows = [{"host": r["host"], "container": r["container"], "container_name": r["container_name"],
             "name": r["name"], "unit": r["unit"], "last": _num(r["last"]), "mean": _num(r["mean"]),
             "services": sorted(r["services"])} for r in res.dicts()]
    shown = len({(r["host"], r["container"]) for r in rows})
    total = shown
    if shown >= limit:
        total = int(store.read(f"SELECT count() FROM (SELECT {HOST} AS h, {CONTAINER} AS c FROM {table} "
                               f"WHERE {_where(names)} GROUP BY h, c)", {"start": tr.start_s, "end": tr.end_s}
                               ).scalar())
    return {"rows": rows, "total": total, "truncated": total > shown}


def infra_series(store: Store, tr: TimeRange, name: str, step_s: int) -> dict[str, list[tuple[int, float | None]]]:
    """One series per host (or container, when the points carry one) of metric ``name``: the 30
    with the most points."""
    require_raw_range(tr, "metric points")
    res = store.read(
        "SELECT who, groupArray(t) AS ts, groupArray(v) AS vs, sum(n) AS pts FROM ("
        f"SELECT if({CONTAINER} != '', concat('container ', {CONTAINER}), concat('host ', {HOST})) AS who, "
        "intDiv(toUInt32(timestamp), {step:UInt32}) * {step:UInt32} AS t, "
        f"avg({_VALUE}) AS v, count() AS n FROM {store.t('metric_points')} WHERE name = {{name:String}} "
        "AND timestamp >= toDateTime({start:UInt32}) AND timestamp <= toDateTime({end:UInt32}) "
        "GROUP BY who, t) GROUP BY who ORDER BY pts DESC, who LIMIT 30",
        {"name": name, "start": tr.start_s, "end": tr.end_s, "step": int(step_s)},
    )
    return {who: sorted((int(t), _num(v)) for t, v in zip(ts, vs)) for who, ts, vs, _ in res.rows}


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if v != v else v
