"""The metrics explorer: one metric by name, filtered and grouped by labels, aggregated per step.

A *stream* is one (service, instance, attribute set) of the metric, as its SDK exported it. SQL
reduces each stream to one row per step (its first and last cumulative values, or the sum of its
deltas); Python turns those into increases (resets handled), merges the streams of each group
and applies the aggregation. Labels are point attributes, then resource attributes, plus
``service`` and ``instance``.

Aggregations by type — gauge: avg, min, max, sum (of the streams' averages), last, count (points);
sum: rate and increase (monotonic counters), and the gauge ones; histogram, exponential histogram
and summary: p50, p90, p95, p99 (from the merged buckets; a summary reports its own nearest
quantile), avg (sum / count of the observations), rate (observations per second), count
(observations per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import metric_math as mm
from .attr_filters import AttrFilter, column_condition, condition
from .errors import InvalidParameter
from .limits import require_raw_range
from .queries_services import pick_step
from .queries_telemetry import METRIC_TYPES
from .timerange import TimeRange

__all__ = ["MetricQuery", "AGGS", "describe", "labels", "explore", "exemplars", "default_agg", "latency_metrics",
           "label_listing"]

_HIST = ("p50", "p90", "p95", "p99", "avg", "rate", "count")
AGGS = {
    "gauge": ("avg", "min", "max", "sum", "last", "count"),
    "sum": ("rate", "increase", "avg", "min", "max", "sum", "last", "count"),
    "histogram": _HIST,
    "exponential_histogram": _HIST,
    "summary": _HIST,
}
QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
COLUMNS = ("service", "instance")
MAX_GROUPS = 100
#: label keys listed per kind (point, resource attributes): the ones most points carry
MAX_LABEL_KEYS = 200
MAX_ROWS = 200_000
_MAPS = (("attr_keys", "attr_values"), ("resource_keys", "resource_values"))
_NS = 1_000_000_000


@dataclass(frozen=True)
class MetricQuery:
    name: str
    tr: TimeRange
    service: str | None = None
    filters: tuple[AttrFilter, ...] = ()
    group_by: tuple[str, ...] = ()
    agg: str | None = None  # None: the type's default
    step_s: int | None = None

    def where(self, params: dict[str, Any]) -> str:
        require_raw_range(self.tr, "metric points")
        params.update(name=self.name, start=self.tr.start_s, end=self.tr.end_s)
        conds = ["name = {name:String}", "timestamp >= toDateTime({start:UInt32})",
                 "timestamp <= toDateTime({end:UInt32})"]
        if self.service:
            conds.append("service = {service:String}")
            params["service"] = self.service
        for i, f in enumerate(self.filters):
            if f.key in COLUMNS:
                conds.append(column_condition(f, f.key, f"f{i}", params))
            else:
                conds.append(condition(f, f"f{i}", params, _MAPS))
        return " AND ".join(conds)


def _label(key: str, pname: str, params: dict[str, Any]) -> str:
    if key in COLUMNS:
        return f"toString({key})"
    params[pname] = key
    return (f"if(has(attr_keys, {{{pname}:String}}), attr_values[indexOf(attr_keys, {{{pname}:String}})], "
            f"resource_values[indexOf(resource_keys, {{{pname}:String}})])")


def describe(store, tr: TimeRange, name: str) -> dict[str, Any] | None:
    """Type, unit, description and temporality of a metric in ``tr`` (None when it has no points).
    Points of one name sent as more than one type (a gauge and a histogram, say): the type with the
    most points, which ``explore`` then reads alone (``type_code``)."""
    require_raw_range(tr, "metric points")
    res = store.read(
        "SELECT type, any(unit) AS unit, any(description) AS description, "
        "any(temporality) AS temporality, max(is_monotonic) AS monotonic, count() AS points, "
        f"groupUniqArray(service) AS services FROM {store.t('metric_points')} WHERE name = {{name:String}} "
        "AND timestamp >= toDateTime({start:UInt32}) AND timestamp <= toDateTime({end:UInt32}) "
        "GROUP BY type ORDER BY points DESC, type LIMIT 1",
        {"name": name, "start": tr.start_s, "end": tr.end_s},
    ).dicts()
    if not res or not int(res[0]["points"]):
        return None
    r = res[0]
    return {"name": name, "type": METRIC_TYPES.get(int(r["type"]), "unknown"), "unit": r["unit"],
            "description": r["description"], "temporality": {1: "delta", 2: "cumulative"}.get(int(r["temporality"]), ""),
            "monotonic": bool(r["monotonic"]), "points": int(r["points"]), "services": sorted(r["services"]),
            "type_code": int(r["type"])}


def default_agg(info: dict[str, Any]) -> str:
    t = info["type"]
    if t == "sum":
        return "rate" if info.get("monotonic") else "avg"
    return "p95" if t in ("histogram", "exponential_histogram", "summary") else "avg"


def labels(store, tr: TimeRange, name: str, values_per_key: int = 20) -> list[dict[str, Any]]:
    """The metric's label keys with their most frequent values (see :func:`label_listing`)."""
    return label_listing(store, tr, name, values_per_key)["labels"]


def label_listing(store, tr: TimeRange, name: str, values_per_key: int = 20,
                  max_keys: int = MAX_LABEL_KEYS) -> dict[str, Any]:
    """``{"labels": [{"key", "values"}], "truncated"}``: the metric's label keys with their most
    frequent values, service and instance first, then point attributes, then resource attributes
    not already listed. Past ``max_keys`` keys of one kind, the ones most points carry (a flood of
    keys that sort first must not hide the others), and ``truncated`` says so."""
    require_raw_range(tr, "metric points")
    base = {"name": name, "start": tr.start_s, "end": tr.end_s}
    params = {**base, "nv": int(values_per_key), "nk": int(max_keys), "rows": int(values_per_key) * int(max_keys)}
    where = ("name = {name:String} AND timestamp >= toDateTime({start:UInt32}) "
             "AND timestamp <= toDateTime({end:UInt32})")
    table = store.t("metric_points")
    out: dict[str, list[str]] = {}
    truncated = False
    for key in COLUMNS:
        res = store.read(f"SELECT toString({key}) AS v, count() AS n FROM {table} WHERE {where} "
                          "GROUP BY v ORDER BY n DESC, v LIMIT {nv:UInt32}", {**base, "nv": params["nv"]})
        out[key] = [r[0] for r in res.rows]
    for keys, values in _MAPS:
        busiest = (f"SELECT k FROM {table} ARRAY JOIN {keys} AS k WHERE {where} "
                   "GROUP BY k ORDER BY count() DESC, k LIMIT {nk:UInt32}")
        res = store.read(
            f"SELECT k, v, count() AS n FROM {table} ARRAY JOIN {keys} AS k, {values} AS v "
            f"WHERE {where} AND k IN ({busiest}) GROUP BY k, v ORDER BY k, n DESC, v LIMIT {{nv:UInt32}} BY k "
            "LIMIT {rows:UInt32}", params)
        listed = set(out) if keys != "attr_keys" else set()
        found = set()
        for k, v, _ in res.rows:
            found.add(k)
            if k not in listed:
                out.setdefault(k, []).append(v)
        if len(found) >= max_keys:
            truncated = truncated or int(store.read(
                f"SELECT uniqExact(k) FROM {table} ARRAY JOIN {keys} AS k WHERE {where}", base).scalar()) > len(found)
    return {"labels": [{"key": k, "values": v} for k, v in out.items()], "truncated": truncated}


_SELECT = {
    "value": ("count() AS c, sum(value) AS s, min(value) AS mn, max(value) AS mx, argMax(value, ts_ns) AS last, "
              "argMin(value, ts_ns) AS first"),
    "histogram": ("argMax(count, ts_ns) AS lc, argMax(sum, ts_ns) AS ls, argMax(bucket_counts, ts_ns) AS lb, "
                  "argMin(count, ts_ns) AS fc, argMin(sum, ts_ns) AS fs, argMin(bucket_counts, ts_ns) AS fb, "
                  "sum(count) AS dc, sum(sum) AS ds, sumForEach(bucket_counts) AS db, "
                  "argMax(explicit_bounds, ts_ns) AS bounds"),
    "exponential_histogram": (
        "argMax(count, ts_ns) AS lc, argMax(sum, ts_ns) AS ls, argMin(count, ts_ns) AS fc, argMin(sum, ts_ns) AS fs, "
        "sum(count) AS dc, sum(sum) AS ds, "
        "argMax((exp_scale, exp_zero_count, exp_positive_offset, exp_positive_counts), ts_ns) AS lx, "
        "argMin((exp_scale, exp_zero_count, exp_positive_offset, exp_positive_counts), ts_ns) AS fx, "
        "groupArray(500)((exp_scale, exp_zero_count, exp_positive_offset, exp_positive_counts)) AS dx"),
    "summary": ("argMax(count, ts_ns) AS lc, argMax(sum, ts_ns) AS ls, argMin(count, ts_ns) AS fc, "
                "argMin(sum, ts_ns) AS fs, sum(count) AS dc, sum(sum) AS ds, argMax(quantiles, ts_ns) AS qs, "
                "argMax(quantile_values, ts_ns) AS qv"),
}


def explore(store, mq: MetricQuery) -> dict[str, Any]:
    """``{"name", "type", "unit", "agg", "step_s", "series": [{"labels", "points": [[t, v]]}],
    "series_total", "truncated"}``; an unknown metric gives no series. Past ``MAX_GROUPS`` groups the
    ones with the most points are kept (then by labels) and ``series_total`` counts them all;
    ``truncated``: groups or points (past ``MAX_ROWS`` rows of a stream and step) were left out.
    ``step_s`` is coarser than ``asked_step_s`` when the streams would not fit in ``MAX_ROWS`` at the
    step asked (or picked)."""
    _check_query(mq)
    info = describe(store, mq.tr, mq.name)
    mtype, agg, step = _type_agg_step(mq, info)
    out: dict[str, Any] = {"name": mq.name, "type": mtype, "unit": info["unit"] if info else "", "agg": agg, "step_s": step,
           "asked_step_s": step, "series": [], "series_total": 0, "truncated": False, "info": info}
    if info is None or mtype == "unknown":
        return out
    base: dict[str, Any] = {"type": info["type_code"]}
    where = mq.where(base) + " AND type = {type:UInt8}"  # points of another type under the name are not mixed in
    group = ("[" + ", ".join(_label(g, f"g{i}", base) for i, g in enumerate(mq.group_by)) + "]"
             if mq.group_by else "emptyArrayString()")
    params: dict[str, Any] = {**base, "step": step, "rows": MAX_ROWS}
    kind = "value" if mtype in ("gauge", "sum") else mtype
    table = store.t("metric_points")
    busiest = ""
    if mq.group_by:
        # past MAX_GROUPS groups, the ones with the most points: a flood of one-point label values
        # that sort first must not hide the others (one more is read to tell the list was cut)
        params["groups"] = MAX_GROUPS + 1
        busiest = (f" AND {group} IN (SELECT {group} AS g FROM {table} WHERE {where} GROUP BY g "
                   "ORDER BY count() DESC, g LIMIT {groups:UInt32})")
    sql = (f"SELECT {group} AS grp, {_STREAM} AS stream, "
           "intDiv(toUInt32(timestamp), {step:UInt32}) * {step:UInt32} AS t, max(ts_ns) AS lts, min(ts_ns) AS fts, "
           "argMin(start_ns, ts_ns) AS fstart, count() AS n, "
           f"any(temporality) AS temp, {_SELECT[kind]} FROM {table} WHERE {where}{busiest} "
           "GROUP BY grp, stream, t ORDER BY grp, stream, t LIMIT {rows:UInt32}")
    if info["points"] >= MAX_ROWS:
        # More streams than fit at the step asked would have the rows cut in stream order, leaving
        # the last streams out of every step (an average of a subset). With as many points as
        # rows could be cut (the name's points in the range bound the rows), the streams are
        # counted first and the series read once, at a coarser step that fits them all, as a
        # chart's "max data points" does; cut only when not even one step fits. (Reading at the
        # asked step, then again once it overflowed, read and converted MAX_ROWS rows for
        # nothing: 3.3 of 8.9 s for 50k label sets of a histogram.)
        counted = {k: v for k, v in params.items() if k not in ("step", "rows")}
        streams = int(store.read(f"SELECT uniqExact({_STREAM}) FROM {table} WHERE {where}{busiest}",
                                 counted).scalar())
        step = out["step_s"] = params["step"] = fitting_step(mq.tr.seconds, streams, step)
    rows = store.read(sql, params).dicts()
    points: dict[tuple, int] = {}
    for r in rows:
        points[tuple(r["grp"])] = points.get(tuple(r["grp"]), 0) + int(r["n"])
    keep = set(sorted(points, key=lambda k: (-points[k], k))[:MAX_GROUPS])
    out["series"] = _series(rows, keep, kind, agg, step, mq)
    total = len(points)
    if total > MAX_GROUPS or len(rows) >= MAX_ROWS:
        total = int(store.read(f"SELECT uniqExact({group}) FROM {table} WHERE {where}", base).scalar())
    out["series_total"] = total
    out["truncated"] = len(rows) >= MAX_ROWS or total > len(out["series"])
    return out


_STREAM = "cityHash64(service, instance, attr_keys, attr_values)"


def _check_query(mq: MetricQuery) -> None:
    if not mq.name:
        raise InvalidParameter("metric name is required")
    if len(mq.group_by) > 10:
        raise InvalidParameter("at most 10 group-by labels")
    if any(not g or len(g) > 1000 for g in mq.group_by):
        raise InvalidParameter("bad group-by label")
    if mq.step_s is not None and int(mq.step_s) < 10:
        raise InvalidParameter("step must be at least 10 s")


def _type_agg_step(mq: MetricQuery, info: dict[str, Any] | None) -> tuple[str, str, int]:
    """The metric's type, the aggregation (asked, or the type's default) and the step (asked, or
    picked for the range); InvalidParameter when they do not go together."""
    mtype = info["type"] if info else "gauge"
    agg = mq.agg or (default_agg(info) if info else "avg")
    if agg not in AGGS.get(mtype, ()):
        raise InvalidParameter(f"aggregation {agg!r} does not apply to a {mtype}: one of {', '.join(AGGS[mtype])}")
    step = pick_step(mq.tr, None) if mq.step_s is None else int(mq.step_s)
    if mq.tr.seconds / step > 2000:
        raise InvalidParameter("step too small: more than 2000 points")
    return mtype, agg, step


def _series(rows: list[dict[str, Any]], keep: set[tuple], kind: str, agg: str, step: int,
            mq: MetricQuery) -> list[dict[str, Any]]:
    """The kept groups' series: each stream's contribution per step (a counter's increase from the
    stream's previous row), reduced by ``agg`` over the group's streams."""
    groups: dict[tuple, dict[int, list]] = {}
    prev: dict[Any, dict[str, Any]] = {}
    for r in rows:
        key = tuple(r["grp"])
        if key not in keep:
            continue
        contrib = _contribution(kind, r, prev.get(r["stream"]), step, mq.tr.start_ns)
        prev[r["stream"]] = r
        groups.setdefault(key, {}).setdefault(int(r["t"]), []).append(contrib)
    reduce = _reduce_value if kind == "value" else _reduce_hist
    return [{"labels": dict(zip(mq.group_by, key)),
             "points": [[t, reduce(agg, cs)] for t, cs in sorted(steps.items())]} for key, steps in groups.items()]


def fitting_step(seconds: float, streams: int, step: int) -> int:
    """The smallest step, a whole number of minutes and at least ``step``, at which ``streams``
    streams' rows (one per stream and step, plus one for a range that is not step-aligned) fit in
    ``MAX_ROWS``; ``step`` when none does (not even one step per stream)."""
    per_stream = MAX_ROWS // max(streams, 1) - 1
    if per_stream < 1:
        return step
    need = -(-int(seconds) // per_stream)  # ceil
    return max(step, -(-need // 60) * 60)


def _tuple(x: Any) -> tuple:
    """A ClickHouse tuple as the backends return it (chDB: a dict keyed "1", "2", …)."""
    return tuple(x.values()) if isinstance(x, dict) else tuple(x)


def _hist(kind: str, r: dict[str, Any], which: str) -> mm.Hist:
    """The cumulative histogram of a row's last (``l``) or first (``f``) point."""
    count, total = float(r[which + "c"]), float(r[which + "s"])
    if kind == "histogram":
        return count, total, mm.explicit_buckets(r[which + "b"], r["bounds"])
    if kind == "exponential_histogram":
        scale, zero, offset, counts = _tuple(r[which + "x"])
        return count, total, mm.exponential_buckets(scale, zero, offset, counts)
    return count, total, {}


def _delta_hist(kind: str, r: dict[str, Any]) -> mm.Hist:
    if kind == "histogram":
        return float(r["dc"]), float(r["ds"]), mm.explicit_buckets(r["db"], r["bounds"])
    if kind == "exponential_histogram":
        buckets: dict[float, float] = {}
        for scale, zero, offset, counts in map(_tuple, r["dx"]):
            buckets = mm.add(buckets, mm.exponential_buckets(scale, zero, offset, counts))
        return float(r["dc"]), float(r["ds"]), buckets
    return float(r["dc"]), float(r["ds"]), {}


def _contribution(kind: str, r: dict[str, Any], prev: dict[str, Any] | None, step: int,
                  window_ns: int) -> dict[str, Any]:
    """One stream's share of one step: its values and what it gained since the previous step
    (``inc``) over how many seconds (``secs``). A cumulative stream's first step in the window
    counts from its start time when that falls inside the window (everything it counted is new),
    else from its first point there."""
    delta = int(r["temp"]) == 1
    fresh = prev is None and not delta and int(r["fstart"]) >= window_ns and int(r["fstart"]) > 0
    if kind == "value":
        c = dict(c=int(r["c"]), s=float(r["s"]), mn=float(r["mn"]), mx=float(r["mx"]), last=float(r["last"]),
                 lts=int(r["lts"]))
        if delta:
            c.update(inc=c["s"], secs=float(step))
        elif prev is not None:
            c.update(inc=mm.counter_increase(c["last"], float(prev["last"])),
                     secs=(int(r["lts"]) - int(prev["lts"])) / _NS)
        elif fresh:
            c.update(inc=c["last"], secs=(int(r["lts"]) - int(r["fstart"])) / _NS)
        else:
            c.update(inc=mm.counter_increase(c["last"], float(r["first"])), secs=(int(r["lts"]) - int(r["fts"])) / _NS)
        return c
    if delta:
        h, secs = _delta_hist(kind, r), float(step)
    elif prev is not None:
        h = mm.increase(_hist(kind, r, "l"), _hist(kind, prev, "l"))
        secs = (int(r["lts"]) - int(prev["lts"])) / _NS
    elif fresh:
        h, secs = _hist(kind, r, "l"), (int(r["lts"]) - int(r["fstart"])) / _NS
    else:
        h = mm.increase(_hist(kind, r, "l"), _hist(kind, r, "f"))
        secs = (int(r["lts"]) - int(r["fts"])) / _NS
    out: dict[str, Any] = {"h": h, "secs": secs}
    if kind == "summary":
        out["qs"], out["qv"] = r["qs"], r["qv"]
    return out


def _reduce_value(agg: str, cs: list[dict[str, Any]]) -> float | None:
    if agg == "avg":
        n = sum(c["c"] for c in cs)
        return sum(c["s"] for c in cs) / n if n else None
    if agg == "min":
        return min(c["mn"] for c in cs)
    if agg == "max":
        return max(c["mx"] for c in cs)
    if agg == "sum":
        return sum(c["s"] / c["c"] for c in cs if c["c"])
    if agg == "last":
        return max(cs, key=lambda c: c["lts"])["last"]
    if agg == "count":
        return float(sum(c["c"] for c in cs))
    if agg == "increase":
        return sum(c["inc"] for c in cs)
    rates = [c["inc"] / c["secs"] for c in cs if c["secs"] > 0]  # rate
    return sum(rates) if rates else None


def _reduce_hist(agg: str, cs: list[dict[str, Any]]) -> float | None:
    if agg == "rate":
        rates = [c["h"][0] / c["secs"] for c in cs if c["secs"] > 0]
        return sum(rates) if rates else None
    count = sum(c["h"][0] for c in cs)
    if agg == "count":
        return count
    if agg == "avg":
        return sum(c["h"][1] for c in cs) / count if count else None
    q = QUANTILES[agg]
    if "qs" in cs[0]:  # summaries: each stream's own quantile, averaged
        return mm.mean(mm.summary_quantile(q, c["qs"], c["qv"]) for c in cs)
    buckets: dict[float, float] = {}
    for c in cs:
        buckets = mm.add(buckets, c["h"][2])
    return mm.quantile(q, buckets)


_TIME_UNITS_MS = {"s": 1000.0, "ms": 1.0, "us": 0.001, "μs": 0.001, "µs": 0.001, "ns": 1e-6}


def latency_metrics(names: list[dict[str, Any]]) -> list[str]:
    """Of ``queries_telemetry.metric_names`` rows: histograms of durations in a time unit."""
    return [m["name"] for m in names
            if m["type"] in ("histogram", "exponential_histogram") and m["unit"] in _TIME_UNITS_MS
            and ("duration" in m["name"] or "latency" in m["name"])][:10]


def exemplars(store, tr: TimeRange, service: str, names: list[str] | None = None, per_step: int = 3,
              step_s: int = 60, limit: int = 500) -> list[dict[str, Any]]:
    """Exemplars (a measurement with the trace and span it came from) of the service's latency
    histograms, in milliseconds: the ``per_step`` slowest in each ``step_s`` bucket, so the points
    spread over the range and the outliers are always there. ``names``: the histograms to read;
    None for every histogram of the service named like a duration or latency in a time unit."""
    require_raw_range(tr, "metric points")
    params: dict[str, Any] = {"service": service, "start": tr.start_s, "end": tr.end_s, "per": int(per_step),
                              "step": int(step_s) * _NS, "lim": int(limit)}
    if names is not None:
        if not names:
            return []
        for i, n in enumerate(names[:10]):
            params[f"n{i}"] = n
        which = f"name IN ({', '.join(f'{{n{i}:String}}' for i in range(len(names[:10])))})"
    else:
        which = ("type IN (3, 4) AND (position(name, 'duration') > 0 OR position(name, 'latency') > 0) "
                 f"AND unit IN ({', '.join(repr(u) for u in _TIME_UNITS_MS)})")
    to_ms = "multiIf(" + ", ".join(f"unit = '{u}', {f!r}" for u, f in _TIME_UNITS_MS.items()) + ", 0.0)"
    res = store.read(
        f"SELECT name, if(ex_t > 0, ex_t, ts_ns) AS t, ex_v * {to_ms} AS v_ms, lower(hex(ex_tid)) AS tid, "
        f"lower(hex(ex_sid)) AS sid FROM {store.t('metric_points')} ARRAY JOIN exemplar_trace_ids AS ex_tid, "
        "exemplar_span_ids AS ex_sid, exemplar_values AS ex_v, exemplar_times_ns AS ex_t "
        f"WHERE {which} AND service = {{service:String}} "
        "AND timestamp >= toDateTime({start:UInt32}) AND timestamp <= toDateTime({end:UInt32}) "
        "AND notEmpty(exemplar_trace_ids) AND ex_tid != toFixedString(unhex('00000000000000000000000000000000'), 16) "
        "AND v_ms > 0 ORDER BY v_ms DESC LIMIT {per:UInt32} BY intDiv(t, {step:UInt64}) LIMIT {lim:UInt32}",
        params,
    )
    out = [{"metric": name, "time_ns": int(t), "value_ms": round(float(v), 3), "trace_id": tid,
            "span_id": sid if sid.strip("0") else None} for name, t, v, tid, sid in res.rows]
    out.sort(key=lambda e: e["time_ns"])
    return out


_MEAN = "if(type IN (3, 4, 5), if(count > 0, sum / count, 0), value)"


def service_resources(store, tr: TimeRange, service: str, prefixes: tuple[str, ...], names: tuple[str, ...],
                      step_s: int, drawn: int = 8) -> dict[str, Any]:
    """The first ``drawn`` metrics (by name) of a service whose name starts with one of ``prefixes``,
    and those of ``names``, in one read: ``{"metrics": {name: {"unit", "series": [{"labels", "points":
    [[t, mean, last, last_ns]]}]}}, "step_s", "asked_step_s", "truncated"}``, one series per instance and
    attribute set (the service page's resource charts and probe table took a query per metric).

    Only those metrics are read, and at a step coarser than ``step_s`` when their streams would not
    fit in ``MAX_ROWS`` rows at it: the rows were cut in name and instance order, so a service with
    many instances lost the last metrics (the probes, which sort after ``process.*``) without a word.
    ``truncated``: rows were left out all the same (more streams than even one step each fits)."""
    require_raw_range(tr, "metric points")
    base: dict[str, Any] = {"service": service, "start": tr.start_s, "end": tr.end_s}
    params = dict(base)
    which = []
    for i, p in enumerate(prefixes):
        params[f"p{i}"] = p
        which.append(f"startsWith(name, {{p{i}:String}})")
    for i, n in enumerate(names):
        params[f"n{i}"] = n
        which.append(f"name = {{n{i}:String}}")
    out: dict[str, Any] = {"metrics": {}, "step_s": int(step_s), "asked_step_s": int(step_s), "truncated": False}
    if not which:
        return out
    where = ("service = {service:String} AND timestamp >= toDateTime({start:UInt32}) "
             "AND timestamp <= toDateTime({end:UInt32})")
    present = store.read(f"SELECT name, uniqExact(instance, attr_keys, attr_values) FROM {store.t('metric_points')} "
                         f"WHERE {where} AND ({' OR '.join(which)}) GROUP BY name ORDER BY name", params).rows
    picked = [(n, s) for n, s in present if n.startswith(prefixes)][:drawn] + [(n, s) for n, s in present
                                                                               if n in names]
    if not picked:
        return out
    wanted = {f"w{i}": n for i, (n, _) in enumerate(picked)}
    step = out["step_s"] = fitting_step(tr.seconds, sum(int(s) for _, s in picked), int(step_s))
    q = {**base, "step": step, "rows": MAX_ROWS, **wanted}
    res = store.read(
        "SELECT name, any(unit) AS unit, instance, attr_keys, attr_values, "
        "intDiv(toUInt32(timestamp), {step:UInt32}) * {step:UInt32} AS t, "
        f"avg({_MEAN}) AS mean, argMax({_MEAN}, ts_ns) AS last, max(ts_ns) AS lts FROM {store.t('metric_points')} "
        f"WHERE {where} AND name IN ({', '.join(f'{{{k}:String}}' for k in wanted)}) "
        "GROUP BY name, instance, attr_keys, attr_values, t ORDER BY name, instance, t LIMIT {rows:UInt32}",
        q,
    )
    out["truncated"] = len(res.rows) >= MAX_ROWS
    metrics = out["metrics"]
    for name, unit, instance, keys, values, t, mean, last, lts in res.rows:
        m = metrics.setdefault(name, {"unit": unit, "series": {}})
        key = (instance, tuple(keys), tuple(values))
        s = m["series"].get(key)
        if s is None:
            s = m["series"][key] = {"labels": {"service": service, "instance": instance, **dict(zip(keys, values))},
                                    "points": []}
        s["points"].append([int(t), _num(mean), _num(last), int(lts)])
    for m in metrics.values():
        m["series"] = list(m["series"].values())
    return out


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if v != v else v
