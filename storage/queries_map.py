"""The service map: services, their dependencies and the calls between them, from the
``edges_1m`` and ``service_endpoints`` rollups."""

from __future__ import annotations

from typing import Any

from .queries_services import MAX_SERVICES, _busiest, _f, _ms, _window, listing
from .timerange import TimeRange

#: endpoints and edges read for one map (the busiest first); a result LIMIT in the SQL
MAX_EDGES = 5000
_LOCAL_NAMES = {"localhost": "127.0.0.1", "::1": "127.0.0.1", "[::1]": "127.0.0.1", "0.0.0.0": "127.0.0.1"}


def normalize_address(addr: str) -> str:
    host, sep, port = addr.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):  # as the SQL (_normalized) reads a port
        host, port = addr, ""
    host = _LOCAL_NAMES.get(host.lower(), host.lower())
    return f"{host}:{port}" if port else host


def _normalized(column: str, alias: str) -> str:
    """SQL: :func:`normalize_address` of ``column`` (a port is ASCII digits here); ``alias`` names
    its parts (``alias_p``, ``alias_l``, ``alias_h``)."""
    local = "[" + ", ".join(f"'{k}'" for k in _LOCAL_NAMES) + "]"
    mapped = "[" + ", ".join(f"'{v}'" for v in _LOCAL_NAMES.values()) + "]"
    p, low, h = f"{alias}_p", f"{alias}_l", f"{alias}_h"
    host = (f"(transform((lowerUTF8(if({p} = '', {column}, substring({column}, 1, length({column}) - length({p}) - 1)))"
            f" AS {low}), {local}, {mapped}, {low}) AS {h})")
    return f"if((extract({column}, ':([0-9]+)$') AS {p}) = '', {host}, concat({h}, ':', {p}))"


_WINDOW = "minute >= toDateTime({start:UInt32}) AND minute < toDateTime({end:UInt32})"


def _busiest_edges(store, more: str = "", callers: str = "") -> str:
    """SQL: the ``{cap}`` edges (caller, target as recorded, kind) with the most calls in the window,
    then the most errors; ``more``: further columns; ``callers``: a condition on the caller."""
    return (f"SELECT service, target, target_kind, countMerge(calls) AS calls, sumMerge(errors) AS errors{more} "
            f"FROM {store.t('edges_1m')} WHERE {_WINDOW}{callers} GROUP BY service, target, target_kind "
            "ORDER BY calls DESC, errors DESC, service, target, target_kind LIMIT {cap:UInt32}")


def _endpoints(store, params: dict[str, Any], callers: str) -> dict[str, str]:
    """Normalized address → the service that answers most requests there, for the addresses the
    busiest edges call (and only those: a flood of other addresses cannot push them out)."""
    res = store.read(
        f"SELECT {_normalized('address', 'a')} AS addr, argMax(service, hits) AS service FROM ("
        f"SELECT address, service, countMerge(hits) AS hits FROM {store.t('service_endpoints')} WHERE {_WINDOW} "
        f"AND {_normalized('address', 'e')} IN (SELECT {_normalized('target', 't')} FROM "
        f"({_busiest_edges(store, callers=callers)}) "
        "WHERE target_kind IN ('external', 'service')) GROUP BY address, service) GROUP BY addr LIMIT {cap:UInt32}",
        params,
    )
    return {normalize_address(addr): service for addr, service in res.rows}


def service_map(store, tr: TimeRange, limit: int = MAX_SERVICES) -> dict[str, Any]:
    """Nodes and edges; past ``limit`` services the busiest are drawn (``queries_services.listing``)
    with the edges among them and their dependencies, and ``truncated`` / ``services_total`` say so.
    Past ``MAX_EDGES`` edges (caller → target as recorded) the busiest are read, ``edges_truncated``
    says so and ``edges_total`` counts them all (those of the services drawn, when the list is cut).
    A client call to an address is drawn to the service that answers there."""
    params = {**_window(tr), "cap": MAX_EDGES + 1}
    got = listing(store, tr, limit)
    svc = {s["service"]: s for s in got["services"]}
    callers = ""
    if got["truncated"]:
        # only the edges of the services drawn are read: a flood of busier edges from services
        # left off the map would otherwise take the places among the MAX_EDGES read
        callers = f" AND service IN ({_busiest(store, _WINDOW, 'drawn')})"
        params["drawn"] = int(limit)
    endpoints = _endpoints(store, params, callers)
    edge_rows = store.read(_busiest_edges(store, ", quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_q) AS q",
                                          callers), params).dicts()
    edges_total = len(edge_rows)
    if edges_total > MAX_EDGES:
        counted = {k: v for k, v in params.items() if k != "cap"}
        edges_total = int(store.read(f"SELECT uniqExact(service, target, target_kind) FROM {store.t('edges_1m')} "
                                     f"WHERE {_WINDOW}{callers}", counted).scalar())
    nodes: dict[str, dict[str, Any]] = {
        name: {"id": name, "name": name, "kind": "service", "requests": s["requests"], "rate": s["rate"],
               "error_rate": s["error_rate"], "p95_ms": s["p95_ms"]}
        for name, s in svc.items()
    }
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    for r in edge_rows[:MAX_EDGES]:
        target, kind = r["target"], r["target_kind"]
        if kind in ("external", "service"):
            hit = endpoints.get(normalize_address(target))
            if hit:
                target, kind = hit, "service"
        if target == r["service"] and kind == "service":
            continue  # a service calling itself through its own address: not an edge on the map
        if got["truncated"] and (r["service"] not in svc or (kind == "service" and target not in svc)):
            continue  # a service left off the list: its edges would bring it back as a bare node
        node_id = target if kind == "service" else f"{kind}:{target}"
        nodes.setdefault(node_id, {"id": node_id, "name": target, "kind": kind})
        e = edges.setdefault((r["service"], node_id), {"source": r["service"], "target": node_id, "calls": 0,
                                                       "errors": 0, "p95_ms": None, "p50_ms": None})
        e["calls"] += int(r["calls"])
        e["errors"] += int(r["errors"])
        q = r["q"] or [None, None, None]
        p95, p50 = _ms(q[1]), _ms(q[0])
        # merging two edges' quantiles exactly is impossible here; keep the worse one
        if p95 is not None and (e["p95_ms"] is None or p95 > e["p95_ms"]):
            e["p95_ms"] = p95
        if p50 is not None and (e["p50_ms"] is None or p50 > e["p50_ms"]):
            e["p50_ms"] = p50
        nodes.setdefault(r["service"], {"id": r["service"], "name": r["service"], "kind": "service"})
    out_edges = []
    for e in edges.values():
        e["rate"] = round(e["calls"] / tr.seconds, 4)
        e["error_rate"] = round(e["errors"] / e["calls"], 4) if e["calls"] else 0.0
        out_edges.append(e)
    out_edges.sort(key=lambda e: (e["source"], e["target"]))
    return {"nodes": sorted(nodes.values(), key=lambda n: (n["kind"] != "service", n["id"])), "edges": out_edges,
            "window_s": _f(tr.seconds), "truncated": got["truncated"], "services_total": got["total"],
            "edges_truncated": len(edge_rows) > MAX_EDGES, "edges_total": edges_total}
