"""Server-side layout of the service map: layers by call depth, laid out as SVG coordinates.

Pure: takes ``queries_map.service_map`` output, returns nodes with x/y and edges with paths.
Services nobody calls sit in the first layer; a node's layer is one more than its deepest
caller's (cycles are cut where first met); databases, caches and queues go right of their callers.
"""

from __future__ import annotations

from typing import Any

NODE_W, NODE_H = 170, 54
COL_GAP, ROW_GAP = 200, 40
MARGIN = 24


def layers(nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> dict[str, int]:
    ids = [n["id"] for n in nodes]
    out_edges: dict[str, list[str]] = {i: [] for i in ids}
    indeg = {i: 0 for i in ids}
    for e in edges:
        if e["source"] in out_edges and e["target"] in indeg and e["source"] != e["target"]:
            out_edges[e["source"]].append(e["target"])
            indeg[e["target"]] += 1
    layer = {i: 0 for i in ids}
    # longest-path layering over a DAG view: Kahn's algorithm; nodes left over are on cycles
    queue = sorted(i for i in ids if indeg[i] == 0)
    remaining = dict(indeg)
    done: set[str] = set()
    while queue or len(done) < len(ids):
        if not queue:  # a cycle: break it at the smallest remaining node
            queue = [min(i for i in ids if i not in done)]
        i = queue.pop(0)
        if i in done:
            continue
        done.add(i)
        for t in out_edges[i]:
            if t in done:
                continue
            layer[t] = max(layer[t], layer[i] + 1)
            remaining[t] -= 1
            if remaining[t] <= 0:
                queue.append(t)
    return layer


def busiest(graph: dict[str, Any], max_nodes: int, max_edges: int) -> dict[str, Any]:
    """The part of ``queries_map.service_map``'s graph a page draws: every service with spans of its
    own (the graph already holds only the busiest), then the other nodes (dependencies, and peers
    known only by name) with the most calls into them, up to ``max_nodes`` in all; and of the calls
    among those, the ``max_edges`` with the most calls (then errors). ``nodes_hidden`` and
    ``edges_hidden`` count what was left out."""
    nodes, edges = graph.get("nodes", []), graph.get("edges", [])
    calls_in: dict[str, tuple[int, int]] = {}
    for e in edges:
        c, x = calls_in.get(e["target"], (0, 0))
        calls_in[e["target"]] = (c + e["calls"], x + e["errors"])
    own = [n for n in nodes if "requests" in n]
    others = sorted((n for n in nodes if "requests" not in n),
                    key=lambda n: (-calls_in.get(n["id"], (0, 0))[0], -calls_in.get(n["id"], (0, 0))[1], n["id"]))
    keep = {n["id"] for n in own + others[:max(0, max_nodes - len(own))]}
    among = [e for e in edges if e["source"] in keep and e["target"] in keep]
    among = sorted(among, key=lambda e: (-e["calls"], -e["errors"], e["source"], e["target"]))[:max_edges]
    return {**graph, "nodes": [n for n in nodes if n["id"] in keep],
            "edges": sorted(among, key=lambda e: (e["source"], e["target"])),
            "nodes_hidden": len(nodes) - len(keep), "edges_hidden": len(edges) - len(among)}


def health_of(node: dict[str, Any]) -> str:
    er = node.get("error_rate")
    if node.get("kind") == "service" and not node.get("requests") and er is None:
        return "idle"
    er = float(er or 0)
    if er >= 0.05:
        return "critical"
    if er >= 0.01:
        return "warning"
    return "ok"


def layout(graph: dict[str, Any]) -> dict[str, Any]:
    nodes = graph.get("nodes", [])
    edges = graph.get("edges", [])
    layer = layers(nodes, edges)
    cols: dict[int, list[dict[str, Any]]] = {}
    for n in sorted(nodes, key=lambda n: (n["kind"] != "service", n["id"])):
        cols.setdefault(layer[n["id"]], []).append(n)
    pos: dict[str, tuple[int, int]] = {}
    placed = []
    for c, members in sorted(cols.items()):
        for r, n in enumerate(members):
            x = MARGIN + c * (NODE_W + COL_GAP)
            y = MARGIN + r * (NODE_H + ROW_GAP)
            pos[n["id"]] = (x, y)
            placed.append({**n, "x": x, "y": y, "w": NODE_W, "h": NODE_H, "layer": c, "health": health_of(n)})
    # edge errors colour their target when the target has no RED of its own (a database, say)
    incoming_err: dict[str, float] = {}
    for e in edges:
        incoming_err[e["target"]] = max(incoming_err.get(e["target"], 0.0), float(e.get("error_rate") or 0))
    for n in placed:
        if n["kind"] != "service":
            n["health"] = health_of({"kind": n["kind"], "error_rate": incoming_err.get(n["id"], 0.0)})
    out_edges = []
    for e in edges:
        if e["source"] not in pos or e["target"] not in pos:
            continue
        sx, sy = pos[e["source"]]
        tx, ty = pos[e["target"]]
        x1, y1 = sx + NODE_W, sy + NODE_H / 2
        x2, y2 = tx, ty + NODE_H / 2
        if tx <= sx:  # back edge or same layer: loop under the nodes
            x1, y1 = sx + NODE_W / 2, sy + NODE_H
            x2, y2 = tx + NODE_W / 2, ty + NODE_H
            dip = max(y1, y2) + 40
            path = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{dip:.0f} {x2:.0f},{dip:.0f} {x2:.0f},{y2:.0f}"
            lx, ly = (x1 + x2) / 2, dip - 6
        else:
            mx = (x1 + x2) / 2
            path = f"M{x1:.0f},{y1:.0f} C{mx:.0f},{y1:.0f} {mx:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
            lx, ly = mx, (y1 + y2) / 2 - 5
        out_edges.append({**e, "path": path, "lx": round(lx), "ly": round(ly),
                          "health": health_of({"kind": "edge", "error_rate": e.get("error_rate")})})
    width = MARGIN * 2 + (max(cols) + 1 if cols else 1) * (NODE_W + COL_GAP)
    height = MARGIN * 2 + max((len(m) for m in cols.values()), default=1) * (NODE_H + ROW_GAP) + 40
    return {"nodes": placed, "edges": out_edges, "width": width, "height": height}
