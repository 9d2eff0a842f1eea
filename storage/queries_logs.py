"""Log search for the Logs page and ``/api/logs/search``: filters, newest-first pages, and the
volume over time by severity.

Pages are addressed by a cursor ``<ts_ns>-<skip>``: the next page holds the records at or before
``ts_ns``, after skipping the ``skip`` records at exactly ``ts_ns`` that earlier pages showed.
Records are ordered by time, then by observed time, service, instance, span id and a hash of
body and attributes, so the order is the same on every request (records equal in all of these
look the same, so trading places changes nothing on screen).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .attr_filters import SPAN_MAPS, AttrFilter, condition
from .attrs import decode_map
from .errors import InvalidParameter
from .ids import hex_id, parse_span_id, parse_trace_id
from .limits import require_raw_range
from .queries_telemetry import parse_severity
from .timerange import MAX_TIME_NS, NS, TimeRange, is_digits

__all__ = ["LogQuery", "GROUPS", "search", "volume", "services", "pick_step", "severity_group", "thread_snapshots",
           "snapshot_services"]

#: severity groups of the OTLP severity numbers (0 unset, 1-4 trace, 5-8 debug, … 21-24 fatal)
GROUPS = ("unset", "trace", "debug", "info", "warn", "error", "fatal")
MAX_PAGE = 500
_MAX_NS = 2**64 - 1  # ts_ns is a UInt64
BODY_CHARS = 4000
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
_ORDER = ("ts_ns DESC, observed_ns DESC, service DESC, instance DESC, span_id DESC, "
          "cityHash64(body, attr_keys, attr_values) DESC")


def severity_group(number: int) -> str:
    return GROUPS[min(6, (int(number) + 3) // 4)]



@dataclass(frozen=True)
class LogQuery:
    """What the Logs page filters by (all optional but the time range)."""

    tr: TimeRange
    service: str | None = None
    severity: str | None = None  # at least this severity (name or number)
    q: str | None = None  # body contains, case-insensitive
    filters: tuple[AttrFilter, ...] = ()
    trace_id: str | None = None
    span_id: str | None = None
    event_name: str | None = None

    def where(self, params: dict[str, Any]) -> str:
        require_raw_range(self.tr, "logs")
        params.update(start=self.tr.start_s, end=self.tr.end_s)
        conds = ["timestamp >= toDateTime({start:UInt32})", "timestamp <= toDateTime({end:UInt32})"]
        if self.service:
            conds.append("service = {service:String}")
            params["service"] = self.service
        if self.severity:
            conds.append("severity_number >= {sev:UInt8}")
            params["sev"] = parse_severity(self.severity)
        if self.q:
            if len(self.q) > 1000:
                raise InvalidParameter("q longer than 1000 characters")
            conds.append("positionCaseInsensitiveUTF8(body, {q:String}) > 0")
            params["q"] = self.q
        if self.trace_id:
            conds.append("trace_id = toFixedString(unhex({tid:String}), 16)")
            params["tid"] = parse_trace_id(self.trace_id)
        if self.span_id:
            conds.append("span_id = toFixedString(unhex({sid:String}), 8)")
            params["sid"] = parse_span_id(self.span_id)
        if self.event_name:
            conds.append("event_name = {ev:String}")
            params["ev"] = self.event_name
        for i, f in enumerate(self.filters):
            conds.append(condition(f, f"f{i}", params, SPAN_MAPS))
        return " AND ".join(conds)


def _second(ts_ns: int) -> int:
    """The ``timestamp`` (DateTime, UInt32 seconds) of a record at ``ts_ns``: the collector stores later
    times at the column's end."""
    return min(ts_ns, MAX_TIME_NS) // NS


def _cursor(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    ts, sep, skip = text.partition("-")
    if not sep or not is_digits(ts, 20) or not is_digits(skip, 9) or int(ts) > _MAX_NS:
        raise InvalidParameter("bad cursor: <ts_ns>-<skip>, as the 'next' of the previous page")
    return int(ts), int(skip)


def _check_skip(store, where: str, params: dict[str, Any], ts: int, skip: int) -> None:
    """A cursor skips only records at exactly its time that earlier pages showed, so never more than
    are stored at that time. Checked past a page's worth (below that, the pages' two queries read at
    most ``skip + limit`` records anyway): a crafted skip of a billion made the page query read
    and sort every column of every matching record in the range, to answer an empty page."""
    if skip <= MAX_PAGE:
        return
    n = store.read(f"SELECT count() FROM {store.t('logs')} WHERE {where} AND ts_ns = {{cts:UInt64}} "
                   "AND timestamp = toDateTime({cts_s:UInt32})", dict(params, cts=ts, cts_s=_second(ts))).scalar()
    if skip > int(n or 0):
        raise InvalidParameter(f"bad cursor: it skips {skip} records at {ts} ns, where {int(n or 0)} match; "
                               "follow the 'next' of the previous page")


def search(store, query: LogQuery, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
    """One page of matching records, newest first, and the cursor of the next (older) page.

    Two steps: the time of the last record the page needs, from the time column alone; then the
    page's records, reading only the granules from that time on (the table is sorted by service
    and time). Reading every column of a million records to keep a hundred took ~190 ms."""
    if not 1 <= int(limit) <= MAX_PAGE:
        raise InvalidParameter(f"limit must be 1 to {MAX_PAGE}")
    params: dict[str, Any] = {}
    where = query.where(params)
    cur = _cursor(cursor)
    skip = 0
    if cur is not None:
        _check_skip(store, where, params, *cur)
        where += " AND ts_ns <= {cts:UInt64}"
        params["cts"], skip = cur
    low = store.read(f"SELECT ts_ns FROM {store.t('logs')} WHERE {where} ORDER BY ts_ns DESC "
                      "LIMIT {pos:UInt32}, 1", dict(params, pos=skip + int(limit))).scalar()
    params.update(skip=skip, n=int(limit) + 1)
    page_where = where
    if low is not None:
        page_where += " AND ts_ns >= {low:UInt64} AND timestamp >= toDateTime({low_s:UInt32})"
        params.update(low=int(low), low_s=_second(int(low)))
    res = store.read(
        "SELECT ts_ns, severity_number, severity_text, service, instance, event_name, "
        "substringUTF8(body, 1, {chars:UInt32}) AS body, length(body) > {chars:UInt32} AS cut, "
        "lower(hex(trace_id)) AS trace_hex, lower(hex(span_id)) AS span_hex, "
        f"attr_keys, attr_values, attr_types, resource_keys, resource_values FROM {store.t('logs')} "
        f"WHERE {page_where} ORDER BY {_ORDER} LIMIT {{skip:UInt32}}, {{n:UInt32}}",
        dict(params, chars=BODY_CHARS),
    )
    rows = res.dicts()
    more = len(rows) > limit
    rows = rows[:limit]
    logs = [
        {"time_ns": int(r["ts_ns"]), "severity_number": int(r["severity_number"]), "severity": r["severity_text"],
         "level": severity_group(r["severity_number"]), "service": r["service"], "instance": r["instance"],
         "event_name": r["event_name"], "body": r["body"], "body_truncated": bool(r["cut"]),
         "trace_id": hex_id(r["trace_hex"]), "span_id": hex_id(r["span_hex"]),
         "attributes": decode_map(r["attr_keys"], r["attr_values"], r["attr_types"]),
         "resource": dict(zip(r["resource_keys"], r["resource_values"]))}
        for r in rows
    ]
    nxt = None
    if more and logs:
        last = logs[-1]["time_ns"]
        same = sum(1 for x in logs if x["time_ns"] == last)
        # records at exactly ``last`` seen so far: on this page, plus those skipped to reach it
        nxt = f"{last}-{same + (skip if cur is not None and cur[0] == last else 0)}"
    return {"logs": logs, "next": nxt}


def pick_step(tr: TimeRange, buckets: int = 100) -> int:
    """A round bucket width giving about ``buckets`` bars over ``tr``."""
    want = tr.seconds / buckets
    return next((s for s in _STEPS if s >= want), _STEPS[-1])


def volume(store, query: LogQuery, step_s: int | None = None) -> dict[str, Any]:
    """Matching records per time bucket and severity group: ``{"step_s", "total", "points":
    [{"t": unix seconds, "counts": {group: n}}]}``."""
    step = pick_step(query.tr) if step_s is None else int(step_s)
    if step < 1 or query.tr.seconds / step > 2000:
        raise InvalidParameter("step too small: more than 2000 buckets")
    params: dict[str, Any] = {"step": step}
    where = query.where(params)
    res = store.read(
        "SELECT intDiv(toUInt32(timestamp), {step:UInt32}) * {step:UInt32} AS t, "
        "least(intDiv(severity_number + 3, 4), 6) AS g, count() AS n "
        f"FROM {store.t('logs')} WHERE {where} GROUP BY t, g ORDER BY t, g",
        params,
    )
    points: dict[int, dict[str, int]] = {}
    total = 0
    for t, g, n in res.rows:
        points.setdefault(int(t), {})[GROUPS[int(g)]] = int(n)
        total += int(n)
    return {"step_s": step, "total": total, "points": [{"t": t, "counts": c} for t, c in sorted(points.items())]}


def services(store, tr: TimeRange, limit: int = 500) -> list[str]:
    """Services that logged in ``tr``, busiest first."""
    require_raw_range(tr, "logs")
    res = store.read(
        f"SELECT service, count() AS n FROM {store.t('logs')} WHERE timestamp >= toDateTime({{start:UInt32}}) "
        "AND timestamp <= toDateTime({end:UInt32}) GROUP BY service ORDER BY n DESC LIMIT {lim:UInt32}",
        {"start": tr.start_s, "end": tr.end_s, "lim": int(limit)},
    )
    return [r[0] for r in res.rows]


SNAPSHOT_EVENT = "tracehouse.snapshot"
# a thread snapshot: the agent's kind attribute, or (senders without it) a body listing threads
_THREADS = ("(attr_values[indexOf(attr_keys, 'snapshot.kind')] = 'threads' OR "
            "(NOT has(attr_keys, 'snapshot.kind') AND position(body, '\"threads\"') > 0))")


def thread_snapshots(store, tr: TimeRange, service: str, limit: int = 300) -> list[dict[str, Any]]:
    """The newest thread snapshots of a service in ``tr``: ``{"time_ns", "instance", "body"}``."""
    require_raw_range(tr, "snapshots")
    res = store.read(
        f"SELECT ts_ns, instance, body FROM {store.t('logs')} WHERE service = {{service:String}} "
        "AND timestamp >= toDateTime({start:UInt32}) AND timestamp <= toDateTime({end:UInt32}) "
        f"AND event_name = {{ev:String}} AND {_THREADS} ORDER BY ts_ns DESC LIMIT {{n:UInt32}}",
        {"service": service, "start": tr.start_s, "end": tr.end_s, "ev": SNAPSHOT_EVENT, "n": int(limit)},
    )
    return [{"time_ns": int(t), "instance": i, "body": b} for t, i, b in res.rows]


def snapshot_services(store, tr: TimeRange) -> list[dict[str, Any]]:
    """Services with thread snapshots in ``tr`` and how many."""
    require_raw_range(tr, "snapshots")
    res = store.read(
        f"SELECT service, count() AS n FROM {store.t('logs')} WHERE timestamp >= toDateTime({{start:UInt32}}) "
        "AND timestamp <= toDateTime({end:UInt32}) "
        f"AND event_name = {{ev:String}} AND {_THREADS} GROUP BY service ORDER BY n DESC LIMIT 500",
        {"start": tr.start_s, "end": tr.end_s, "ev": SNAPSHOT_EVENT},
    )
    return [{"service": s, "snapshots": int(n)} for s, n in res.rows]
