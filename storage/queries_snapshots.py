"""Snapshot requests: the queue behind the agent command channel, and reading requests back.

Semantics. A request names a service and, optionally, one ``service.instance.id``:

* with an instance, only that instance takes it, once;
* without one, every instance of the service that polls while the request is live (``TTL_S``)
  takes it once — each captures one snapshot (a gunicorn master and its workers each answer).

Taking is recorded as a row ``claimed_by = <instance>`` next to the request row
(``claimed_by = ''``), so a request is delivered to an instance at most once however many
collectors answer polls (an instance polls one request at a time). Snapshots that answer a
request carry its id in the log attribute ``snapshot.request_id``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from .attrs import decode_map
from .errors import InvalidParameter, NotFound
from .ids import hex_id
from .timerange import NS, UINT32_MAX

__all__ = ["KINDS", "TTL_S", "EVENT_NAME", "create_request", "queue_request", "take_pending", "list_requests", "get_request",
           "snapshots_for"]

KINDS = ("threads", "memory")
TTL_S = 120
#: how long after a request its snapshots may be stamped: taken while live (``TTL_S``), then queued
#: behind the agent's other snapshots and captured, on a clock that may run ahead of the server's
ANSWER_WINDOW_S = TTL_S + 600
EVENT_NAME = "tracehouse.snapshot"
_COLS = "id, claimed_by, updated_ns, service, instance, kind, reason, requested_by, requested_ns"


def _check(name: str, value: str, limit: int, required: bool = True) -> str:
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidParameter(f"{name} is required" if required else f"{name} must be a string")
    if len(value) > limit:
        raise InvalidParameter(f"{name} longer than {limit} characters")
    return value.strip()


def create_request(store, request_id: str, service: str, kind: str, instance: str = "", reason: str = "",
                   requested_by: str = "", now_ns: int | None = None) -> dict[str, Any]:
    service = _check("service", service, 256)
    instance = _check("instance", instance or "", 256, required=False)
    if kind not in KINDS:
        raise InvalidParameter(f"kind must be one of {list(KINDS)}")
    now_ns = now_ns or time.time_ns()
    row = {"id": request_id, "claimed_by": "", "updated_ns": now_ns, "service": service, "instance": instance,
           "kind": kind, "reason": _check("reason", reason or "", 500, required=False),
           "requested_by": _check("requested_by", requested_by or "", 200, required=False), "requested_ns": now_ns}
    store.insert("snapshot_requests", {k: [v] for k, v in row.items()})
    return row


def queue_request(store, service: str, kind: str, reason: str = "", instance: str = "",
                  requested_by: str = "") -> str:
    """Create a request with a fresh id and return the id (the alert engine's hook uses this)."""
    rid = uuid.uuid4().hex
    create_request(store, rid, service, kind, instance=instance, reason=reason, requested_by=requested_by)
    return rid


def take_pending(store, service: str, instance: str, now_ns: int | None = None, limit: int = 10) -> list[dict]:
    """Requests this instance has not taken yet (addressed to it or to any instance), marked taken."""
    service = _check("service", service, 256)
    instance = _check("instance", instance, 256)
    now_ns = now_ns or time.time_ns()
    res = store.read(
        f"SELECT id, any(kind) AS k, any(reason) AS rsn, any(requested_by) AS by, "
        f"any(instance) AS target, min(requested_ns) AS req_ns FROM {store.t('snapshot_requests')} "
        "WHERE service = {s:String} AND requested_ns >= {since:UInt64} AND (instance = '' OR instance = {i:String}) "
        "GROUP BY id HAVING sum(claimed_by = '') > 0 AND sum(claimed_by = {i:String}) = 0 "
        "ORDER BY req_ns LIMIT {n:UInt32}",
        {"s": service, "i": instance, "since": now_ns - TTL_S * 1_000_000_000, "n": int(limit)},
    )
    out = [dict(r) for r in res.dicts()]
    if out:
        cols: dict[str, list] = {k: [] for k in _COLS.split(", ")}
        for r in out:
            for k, v in (("id", r["id"]), ("claimed_by", instance), ("updated_ns", now_ns), ("service", service),
                         ("instance", r["target"]), ("kind", r["k"]), ("reason", r["rsn"]),
                         ("requested_by", r["by"]), ("requested_ns", int(r["req_ns"]))):
                cols[k].append(v)
        store.insert("snapshot_requests", cols)
    return [{"id": r["id"], "kind": r["k"], "reason": r["rsn"], "requested_by": r["by"]} for r in out]


def _rows(store, where: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    res = store.read(
        f"SELECT id, claimed_by, max(updated_ns) AS upd, any(service) AS svc, any(instance) AS target, "
        f"any(kind) AS k, any(reason) AS rsn, any(requested_by) AS by, min(requested_ns) AS req_ns "
        f"FROM {store.t('snapshot_requests')} WHERE {where} "
        "GROUP BY id, claimed_by ORDER BY req_ns DESC, id, claimed_by LIMIT 10000",
        params,
    )
    return list(res.dicts())


def _assemble(rows: list[dict[str, Any]], now_ns: int) -> list[dict[str, Any]]:
    reqs: dict[str, dict[str, Any]] = {}
    for r in rows:
        req = reqs.get(r["id"])
        if req is None:
            req = reqs[r["id"]] = {"id": r["id"], "service": r["svc"], "instance": r["target"] or None,
                                   "kind": r["k"], "reason": r["rsn"], "requested_by": r["by"],
                                   "requested_ns": int(r["req_ns"]), "taken_by": []}
        if r["claimed_by"]:
            req["taken_by"].append({"instance": r["claimed_by"], "at_ns": int(r["upd"])})
    for req in reqs.values():
        expired = now_ns - req["requested_ns"] > TTL_S * 1_000_000_000
        req["status"] = ("taken" if req["taken_by"] else "expired" if expired else "pending")
        req["expires_ns"] = req["requested_ns"] + TTL_S * 1_000_000_000
    return list(reqs.values())


def list_requests(store, service: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    if not 1 <= int(limit) <= 500:
        raise InvalidParameter("limit must be 1 to 500")
    inner = (f"SELECT id FROM {store.t('snapshot_requests')} "
             + ("WHERE service = {s:String} " if service else "")
             + "GROUP BY id ORDER BY max(requested_ns) DESC LIMIT {n:UInt32}")
    params: dict[str, Any] = {"n": int(limit)}
    if service:
        params["s"] = service
    rows = _rows(store, f"id IN ({inner})", params)
    return _assemble(rows, time.time_ns())


def get_request(store, request_id: str) -> dict[str, Any]:
    rows = _rows(store, "id = {id:String}", {"id": _check("id", request_id, 64)})
    if not rows:
        raise NotFound(f"no snapshot request {request_id!r}")
    return _assemble(rows, time.time_ns())[0]


def snapshots_for(store, request_id: str, since_ns: int, limit: int = 100) -> list[dict[str, Any]]:
    """The snapshot log records that answer ``request_id`` (newest first): captured between a minute
    before the request (the agent's clock may be behind) and ``ANSWER_WINDOW_S`` after it. Without
    the upper bound, reading an old request back scanned every log record stored since it."""
    start = since_ns // NS
    res = store.read(
        "SELECT ts_ns, service, instance, body, lower(hex(trace_id)) AS trace_hex, lower(hex(span_id)) AS span_hex, "
        f"attr_keys, attr_values, attr_types FROM {store.t('logs')} "
        "WHERE timestamp >= toDateTime({start:UInt32}) AND timestamp <= toDateTime({end:UInt32}) "
        "AND event_name = {ev:String} AND attr_values[indexOf(attr_keys, 'snapshot.request_id')] = {id:String} "
        "ORDER BY ts_ns DESC LIMIT {n:UInt32}",
        {"start": min(max(0, start - 60), UINT32_MAX), "end": min(start + ANSWER_WINDOW_S, UINT32_MAX),
         "ev": EVENT_NAME, "id": request_id, "n": int(limit)},
    )
    return [{"time_ns": int(r["ts_ns"]), "service": r["service"], "instance": r["instance"], "body": r["body"],
             "trace_id": hex_id(r["trace_hex"]), "span_id": hex_id(r["span_hex"]),
             "attributes": decode_map(r["attr_keys"], r["attr_values"], r["attr_types"])} for r in res.dicts()]
