"""The service map: services, their dependencies and the calls between them, from the
``edges_1m`` and ``service_endpoints`` rollups."""

from __future__ import annotations

from typing import Any

from .queries_services import MAX_SERVICES, _f, _ms, _window, listing
from .timerange import TimeRange

#: endpoints and edges read for one map (the busiest first); a result LIMIT in the SQL
MAX_EDGES = 5000
_LOCAL_NAMES = {"localhost": "127.0.0.1", "::1": "127.0.0.1", "[::1]": "127.0.0.1", "0.0.0.0": "127.0.0.1"}


def normalize_address(addr: str) -> str:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        host, port = addr, ""
    host = _LOCAL_NAMES.get(host.lower(), host.lower())
    return f"{host}:{port}" if port else host


def service_map(store, tr: TimeRange, limit: int = MAX_SERVICES) -> dict[str, Any]:
    """Nodes and edges; past ``limit`` services the busiest are drawn (``queries_services.listing``)
    with the edges among them and their dependencies, and ``truncated`` / ``services_total`` say so.
    ``edges_truncated``: more than ``MAX_EDGES`` edges were called, the busiest are shown."""
    w = _window(tr)
    got = listing(store, tr, limit)
    svc = {s["service"]: s for s in got["services"]}
    endpoints: dict[str, tuple[str, int]] = {}
    res = store.read(
        f"SELECT address, service, countMerge(hits) AS hits FROM {store.t('service_endpoints')} "
        "WHERE minute >= toDateTime({start:UInt32}) AND minute < toDateTime({end:UInt32}) "
        "GROUP BY address, service ORDER BY hits DESC LIMIT {cap:UInt32}",
        {**w, "cap": MAX_EDGES},
    )
    for address, service, hits in res.rows:
        key = normalize_address(address)
        if key not in endpoints or endpoints[key][1] < hits:
            endpoints[key] = (service, int(hits))
    res = store.read(
        f"SELECT service, target, target_kind, countMerge(calls) AS calls, sumMerge(errors) AS errors, "
        f"quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_q) AS q FROM {store.t('edges_1m')} "
        "WHERE minute >= toDateTime({start:UInt32}) AND minute < toDateTime({end:UInt32}) "
        "GROUP BY service, target, target_kind ORDER BY calls DESC, errors DESC, service, target "
        "LIMIT {cap:UInt32}",
        {**w, "cap": MAX_EDGES + 1},
    )
    edge_rows = res.dicts()
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
                target, kind = hit[0], "service"
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
            "edges_truncated": len(edge_rows) > MAX_EDGES}
