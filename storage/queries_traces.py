"""Trace search (over the ``trace_summary`` rollup) and trace lookup (spans of one trace)."""

from __future__ import annotations

import json
from typing import Any

from .attr_filters import AttrFilter, condition
from .attrs import decode_map
from .errors import InvalidParameter, NotFound
from .ids import hex_id, parse_span_id, parse_trace_id
from .limits import require_raw_range
from .shared_spans import reparent_shared_children, shared_server_id
from .timerange import UINT32_MAX, TimeRange

MAX_TRACE_SPANS = 50_000
#: text (names, attribute keys and values, events, links) a full trace may carry in one answer:
#: past it, the spans that start first up to it (``truncated``); the outline has every span's shape
MAX_TRACE_TEXT_BYTES = 32 << 20
#: spans the waterfall outline reads (light columns only, so far more than a full trace)
MAX_OUTLINE_SPANS = 200_000
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS = {0: "unset", 1: "ok", 2: "error"}


def parse_attr_filters(values: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for v in values or []:
        key, sep, val = v.partition("=")
        if not sep or not key.strip():
            raise InvalidParameter(f"bad attribute filter {v!r}: use key=value")
        out.append((key.strip(), val))
    if len(out) > 20:
        raise InvalidParameter("at most 20 attribute filters")
    return out


def _check_search(tr: TimeRange, limit: int, status: str | None, min_duration_ms: float | None,
                  max_duration_ms: float | None) -> None:
    if not 1 <= int(limit) <= 1000:
        raise InvalidParameter("limit must be 1 to 1000")
    if status not in (None, "", "ok", "error"):
        raise InvalidParameter("status must be ok or error")
    require_raw_range(tr, "trace search")
    for name, v in (("min_duration_ms", min_duration_ms), ("max_duration_ms", max_duration_ms)):
        if v is not None and not 0 <= v <= 1e10:
            raise InvalidParameter(f"{name} out of range")


def _trace_filters(min_duration_ms: float | None, max_duration_ms: float | None, status: str | None,
                   pick: list[str], having: list[str], params: dict[str, Any]) -> None:
    """The whole-trace filters (duration, status): the states to merge and the conditions on them."""
    if min_duration_ms is not None or max_duration_ms is not None:
        pick.append("maxMerge(last_end_ns) AS end_ns")
    if min_duration_ms is not None:
        having.append("(end_ns - start_ns) >= {min_d:UInt64}")
        params["min_d"] = int(min_duration_ms * 1e6)
    if max_duration_ms is not None:
        having.append("(end_ns - start_ns) <= {max_d:UInt64}")
        params["max_d"] = int(max_duration_ms * 1e6)
    if status:
        pick.append("maxMerge(errors) AS err")
        having.append("err = 1" if status == "error" else "err = 0")


def search(store, tr: TimeRange, service: str | None = None, operation: str | None = None,
           min_duration_ms: float | None = None, max_duration_ms: float | None = None,
           status: str | None = None, attrs: list[AttrFilter | tuple[str, str]] | None = None,
           limit: int = 50) -> list[dict[str, Any]]:
    """Traces that started in ``tr`` and match the filters; durations are of the whole trace.
    ``attrs``: :class:`AttrFilter` s (a ``(key, value)`` pair is ``key=value``), each met by one span
    of the trace (its own or its resource's attributes), all by the same span."""
    _check_search(tr, limit, status, min_duration_ms, max_duration_ms)
    params: dict[str, Any] = {
        "hstart": tr.start_s - tr.start_s % 3600,
        "hend": tr.end_s,
        "start_ns": tr.start_ns,
        "end_ns": tr.end_ns,
        "limit": int(limit),
    }
    where = ["hour >= toDateTime({hstart:UInt32})", "hour < toDateTime({hend:UInt32})"]
    having = ["start_ns >= {start_ns:UInt64}", "start_ns < {end_ns:UInt64}"]
    span_conds = []
    if operation:
        span_conds.append("name = {operation:String}")
        params["operation"] = operation
    for i, f in enumerate(attrs or []):
        span_conds.append(condition(f if isinstance(f, AttrFilter) else AttrFilter(f[0], "=", f[1]), f"a{i}", params))
    if service:
        # Through the spans (a LowCardinality column beside the trace id): cheaper than merging
        # every trace's service set, ~130 → ~40 ms at 1.5M spans an hour.
        params["service"] = service
        span_conds.insert(0, "service = {service:String}")
    if span_conds:
        params["sstart"], params["send"] = tr.start_s, tr.end_s + 3600
        where.append(
            f"trace_id IN (SELECT trace_id FROM {store.t('spans')} WHERE timestamp >= toDateTime({{sstart:UInt32}}) "
            f"AND timestamp < toDateTime({{send:UInt32}}) AND {' AND '.join(span_conds)})"
        )
    # Two phases: pick the newest matching trace ids merging only the states the filters need,
    # then merge every state (root names, service sets: the costly ones) for those ids alone.
    # At 1.5M spans an hour this takes an unfiltered search from ~145 to ~27 ms.
    pick = ["minMerge(first_start_ns) AS start_ns"]
    _trace_filters(min_duration_ms, max_duration_ms, status, pick, having, params)
    table = store.t("trace_summary")
    hours = " AND ".join(where[:2])
    sql = (
        "SELECT lower(hex(trace_id)) AS tid, minMerge(first_start_ns) AS start_ns, maxMerge(last_end_ns) AS end_ns, "
        "countMerge(span_count) AS spans, maxMerge(errors) AS err, argMinMerge(root_service) AS root_service, "
        "argMinMerge(root_name) AS root_name, groupUniqArrayMerge(services) AS services "
        f"FROM {table} WHERE {hours} AND trace_id IN (SELECT trace_id FROM ("
        f"SELECT trace_id, {', '.join(pick)} FROM {table} WHERE {' AND '.join(where)} GROUP BY trace_id "
        f"HAVING {' AND '.join(having)} ORDER BY start_ns DESC LIMIT {{limit:UInt32}})) "
        "GROUP BY trace_id ORDER BY start_ns DESC"
    )
    return [
        {
            "trace_id": r["tid"],
            "root_service": r["root_service"],
            "root_operation": r["root_name"],
            "start_ns": int(r["start_ns"]),
            "duration_ms": round((int(r["end_ns"]) - int(r["start_ns"])) / 1e6, 3),
            "span_count": int(r["spans"]),
            "error": bool(r["err"]),
            "services": sorted(r["services"]),
        }
        for r in store.read(sql, params).dicts()
    ]


_SPAN_COLUMNS = (
    "lower(hex(span_id)) AS span_hex, lower(hex(parent_span_id)) AS parent_hex, service, name, kind, start_ns, duration_ns, status_code, "
    "status_message, trace_state, attr_keys, attr_values, attr_types, resource_keys, resource_values, scope_name, "
    "scope_version, events_time_ns, events_name, events_attrs, arrayMap(x -> lower(hex(x)), links_trace_id) AS links_trace_hex, "
    "arrayMap(x -> lower(hex(x)), links_span_id) AS links_span_hex, links_attrs"
)


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"_raw": text}


def span_dict(r: dict[str, Any], trace_id: str) -> dict[str, Any]:
    start = int(r["start_ns"])
    dur = int(r["duration_ns"])
    return {
        "trace_id": trace_id,
        "span_id": r["span_hex"],
        "parent_span_id": hex_id(r["parent_hex"]),
        "service": r["service"],
        "name": r["name"],
        "kind": KINDS.get(int(r["kind"]), "unspecified"),
        "start_ns": start,
        "end_ns": start + dur,
        "duration_ms": round(dur / 1e6, 3),
        "status": {"code": STATUS.get(int(r["status_code"]), "unset"), "message": r["status_message"]},
        "trace_state": r["trace_state"],
        "attributes": decode_map(r["attr_keys"], r["attr_values"], r["attr_types"]),
        "resource": _resource(r["resource_keys"], r["resource_values"]),
        "scope": {"name": r["scope_name"], "version": r["scope_version"]},
        "events": [
            {"time_ns": int(t), "name": n, "attributes": _json(a)}
            for t, n, a in zip(r["events_time_ns"], r["events_name"], r["events_attrs"])
        ] if r["events_name"] else [],
        "links": [
            {"trace_id": hex_id(t), "span_id": hex_id(s), "attributes": _json(a)}
            for t, s, a in zip(r["links_trace_hex"], r["links_span_hex"], r["links_attrs"])
        ] if r["links_trace_hex"] else [],
    }


def _resource(keys: list[str], values: list[str]) -> dict[str, Any]:
    # Resource values are stored as text; arrays and maps were stored as JSON.
    if not any(v[:1] in ("[", "{") for v in values):
        return dict(zip(keys, values))
    return {k: _maybe_json(v) for k, v in zip(keys, values)}


def _maybe_json(v: str) -> Any:
    if v[:1] in ("[", "{"):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _hours(store, tid: str) -> dict[str, int]:
    """The hours a trace's spans fall in, as ``lo``/``hi`` parameters bounding a spans query
    (``hi`` included). The last hour a DateTime holds (2106-02-07 06:00 UTC, where later times are
    clamped) ends at the type's largest value: past it, as a UInt32 parameter, the bound matched
    nothing, and one span sent that far ahead made its whole trace answer 404."""
    bounds = store.read(
        f"SELECT count() AS n, toUInt32(min(hour)) AS lo, toUInt32(max(hour)) AS hi FROM {store.t('trace_summary')} "
        "WHERE trace_id = toFixedString(unhex({tid:String}), 16)",
        {"tid": tid},
    ).dicts()[0]
    if not bounds["n"]:
        raise NotFound(f"trace {tid} not found")
    return {"lo": int(bounds["lo"]), "hi": min(int(bounds["hi"]) + 3599, UINT32_MAX)}


def _text_bytes(arrays: tuple[str, ...], strings: tuple[str, ...]) -> str:
    """SQL for the bytes of text a span carries (ClickHouse 18.16 has no ``byteSize``)."""
    return " + ".join([f"arraySum(arrayMap(x -> length(x), {a}))" for a in arrays] + [f"length({c})" for c in strings])


_SPAN_TEXT = _text_bytes(("attr_keys", "attr_values", "resource_keys", "resource_values", "events_name",
                          "events_attrs", "links_attrs"), ("name", "status_message", "trace_state"))
_SPAN_ORDER = "ORDER BY start_ns, span_id LIMIT 1 BY span_id"


def trace(store, trace_id: str) -> dict[str, Any]:
    """Every span of one trace, by start time, up to :data:`MAX_TRACE_SPANS` spans and
    :data:`MAX_TRACE_TEXT_BYTES` of their text (``truncated`` past either). Raises NotFound."""
    tid = parse_trace_id(trace_id)
    where = (f"FROM {store.t('spans')} WHERE trace_id = unhex({{tid:String}}) "
             "AND timestamp >= toDateTime({lo:UInt32}) AND timestamp <= toDateTime({hi:UInt32})")
    params = {"tid": tid, **_hours(store, tid)}
    # First each span's place and size alone: sorting every column of a 100,000-span trace with
    # 6 kB of attributes each passed the memory limit (422), so the trace could not be read at all
    # (grouped, so that the engine sums the sizes before it sorts, not after: sorted first, the
    # attributes came along into the sort and it passed the limit again)
    sizes = store.read(f"SELECT min(start_ns) AS st, lower(hex(span_id)) AS sid, any({_SPAN_TEXT}) {where} "
                       "GROUP BY span_id ORDER BY st, sid LIMIT {cap:UInt32}", {**params, "cap": MAX_TRACE_SPANS + 1}).rows
    if not sizes:
        raise NotFound(f"trace {tid} not found")
    total, keep = 0, 0
    for _, _, size in sizes[:MAX_TRACE_SPANS]:
        total += int(size)
        if total > MAX_TRACE_TEXT_BYTES and keep:
            break
        keep += 1
    truncated = keep < len(sizes)
    last_start, last_sid = sizes[keep - 1][0], sizes[keep - 1][1]
    rows = store.read(
        f"SELECT {_SPAN_COLUMNS} {where} AND (start_ns < {{ls:UInt64}} OR (start_ns = {{ls:UInt64}} "
        f"AND lower(hex(span_id)) <= {{lsid:String}})) {_SPAN_ORDER} LIMIT {{keep:UInt32}}",
        {**params, "ls": int(last_start), "lsid": last_sid, "keep": keep}).dicts()
    spans = [span_dict(r, tid) for r in rows]
    if not spans:
        raise NotFound(f"trace {tid} not found")
    reparent_shared_children(tid, spans, [s for s in spans if s["kind"] == "server"])
    start = min(s["start_ns"] for s in spans)
    end = max(s["end_ns"] for s in spans)
    return {
        "trace_id": tid,
        "start_ns": start,
        "duration_ms": round((end - start) / 1e6, 3),
        "span_count": len(spans),
        "services": sorted({s["service"] for s in spans}),
        "error": any(s["status"]["code"] == "error" for s in spans),
        "truncated": truncated,
        "spans": spans,
    }



def span(store, trace_id: str, span_id: str) -> dict[str, Any]:
    """One span with everything (attributes, resource, events, links). Raises NotFound."""
    tid, sid = parse_trace_id(trace_id), parse_span_id(span_id)
    hours = _hours(store, tid)
    res = store.read(
        f"SELECT {_SPAN_COLUMNS} FROM {store.t('spans')} WHERE trace_id = unhex({{tid:String}}) "
        "AND span_id = unhex({sid:String}) AND timestamp >= toDateTime({lo:UInt32}) "
        "AND timestamp <= toDateTime({hi:UInt32}) LIMIT 1",
        {"tid": tid, "sid": sid, **hours},
    )
    rows = res.dicts()
    if not rows:
        raise NotFound(f"span {sid} not found in trace {tid}")
    out = span_dict(rows[0], tid)
    parent = out["parent_span_id"]
    if parent:  # the parent the trace view gives it (a shared span's server side: ``shared_spans``)
        server = shared_server_id(bytes.fromhex(tid), bytes.fromhex(parent), out["service"]).hex()
        if server != sid and store.read(
                f"SELECT count() FROM {store.t('spans')} WHERE trace_id = unhex({{tid:String}}) "
                "AND span_id = unhex({sid:String}) AND timestamp >= toDateTime({lo:UInt32}) "
                "AND timestamp <= toDateTime({hi:UInt32})",
                {"tid": tid, "sid": server, **hours}).rows[0][0]:
            out["parent_span_id"] = server
    return out


def outline(store, trace_id: str, cap: int = MAX_OUTLINE_SPANS) -> dict[str, Any]:
    """A trace's shape for the waterfall and comparisons: per span only its ids, service, name,
    times and error flag (no attributes: a 50,000-span trace reads and converts in a fraction of
    the time of :func:`trace`). ``truncated`` when the trace has more than ``cap`` spans."""
    tid = parse_trace_id(trace_id)
    res = store.read(
        "SELECT lower(hex(span_id)), lower(hex(parent_span_id)), service, name, start_ns, duration_ns, "
        f"status_code = 2, kind = 2 FROM {store.t('spans')} WHERE trace_id = unhex({{tid:String}}) "
        "AND timestamp >= toDateTime({lo:UInt32}) AND timestamp <= toDateTime({hi:UInt32}) "
        "ORDER BY start_ns, span_id LIMIT 1 BY span_id LIMIT {cap:UInt32}",
        {"tid": tid, **_hours(store, tid), "cap": int(cap) + 1},
    )
    rows = res.rows
    truncated = len(rows) > cap
    zero = "0" * 16
    spans = [{"span_id": sid, "parent_span_id": None if p == zero else p, "service": svc, "name": name,
              "start_ns": int(st), "end_ns": int(st) + int(d), "duration_ms": round(int(d) / 1e6, 3), "error": bool(e)}
             for sid, p, svc, name, st, d, e, _ in rows[:cap]]
    if not spans:
        raise NotFound(f"trace {tid} not found")
    reparent_shared_children(tid, spans, [s for s, row in zip(spans, rows) if row[7]])
    start = min(s["start_ns"] for s in spans)
    end = max(s["end_ns"] for s in spans)
    return {"trace_id": tid, "start_ns": start, "duration_ms": round((end - start) / 1e6, 3),
            "span_count": len(spans), "services": sorted({s["service"] for s in spans}),
            "error": any(s["error"] for s in spans), "truncated": truncated, "spans": spans}
