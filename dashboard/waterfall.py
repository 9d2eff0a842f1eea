"""The trace waterfall as pure functions: span tree, critical path and row layout.

Everything here works on the span dicts of ``queries_traces.trace`` and is iterative (no
recursion), so traces of tens of thousands of spans or very deep chains are fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7",
           "#bab0ac", "#86bcb6", "#d37295", "#a0cbe8")


@dataclass(slots=True)
class Row:
    span: dict[str, Any]
    index: int
    depth: int
    has_children: bool
    offset_pct: float
    width_pct: float
    color: str
    critical: bool
    error: bool


def build_tree(spans: list[dict[str, Any]]) -> tuple[list[int], dict[int, list[int]]]:
    """(roots, children) as indices into ``spans``; children by start time. A span whose parent
    is missing from the trace (not yet arrived, or dropped) is shown as a root."""
    by_id = {s["span_id"]: i for i, s in enumerate(spans)}
    roots: list[int] = []
    children: dict[int, list[int]] = {}
    for i, s in enumerate(spans):
        p = s.get("parent_span_id")
        pi = by_id.get(p) if p else None
        if pi is None or pi == i:
            roots.append(i)
        else:
            children.setdefault(pi, []).append(i)
    key = lambda i: (spans[i]["start_ns"], spans[i]["span_id"])  # noqa: E731
    roots.sort(key=key)
    for lst in children.values():
        lst.sort(key=key)
    # a parent cycle (corrupt data) would leave spans unreachable: surface them as roots
    seen = {i for i, _ in _walk(roots, children)}
    for i in range(len(spans)):
        if i not in seen:
            roots.append(i)
            seen.update(j for j, _ in _walk([i], children))
    return roots, children


def _walk(roots: list[int], children: dict[int, list[int]]):
    """Depth-first pre-order: (index, depth)."""
    stack = [(r, 0) for r in reversed(roots)]
    seen: set[int] = set()
    while stack:
        i, d = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        yield i, d
        for c in reversed(children.get(i, ())):
            stack.append((c, d + 1))


def critical_path(spans: list[dict[str, Any]], roots: list[int], children: dict[int, list[int]]) -> list[int]:
    """The chain from the root that ends last down through, at each level, the child that ends
    last (ties: the later-starting one): the spans that determine when the trace ends."""
    if not roots:
        return []
    end = lambda i: (spans[i]["end_ns"], spans[i]["start_ns"])  # noqa: E731
    path = [max(roots, key=end)]
    seen = {path[0]}
    while True:
        kids = [c for c in children.get(path[-1], ()) if c not in seen]
        if not kids:
            return path
        nxt = max(kids, key=end)
        path.append(nxt)
        seen.add(nxt)


def service_colors(services: list[str]) -> dict[str, str]:
    return {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(sorted(services))}


def layout(spans: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows in tree order with depth, bar offset/width as % of the trace, colour and flags."""
    if not spans:
        return {"rows": [], "critical": [], "colors": {}, "start_ns": 0, "duration_ns": 0, "max_depth": 0}
    roots, children = build_tree(spans)
    cp = critical_path(spans, roots, children)
    crit = set(cp)
    t0 = min(s["start_ns"] for s in spans)
    t1 = max(s["end_ns"] for s in spans)
    total = max(1, t1 - t0)
    colors = service_colors(list({s["service"] for s in spans}))
    rows = []
    max_depth = 0
    for i, d in _walk(roots, children):
        s = spans[i]
        off = (s["start_ns"] - t0) * 100.0 / total
        width = max(0.15, (s["end_ns"] - s["start_ns"]) * 100.0 / total)
        max_depth = max(max_depth, d)
        rows.append(Row(s, i, d, bool(children.get(i)), round(off, 3), round(min(width, 100.0 - off), 3) or 0.15,
                        colors[s["service"]], i in crit, _is_error(s)))
    return {"rows": rows, "critical": [spans[i]["span_id"] for i in cp],
            "colors": colors, "start_ns": t0, "duration_ns": total, "max_depth": max_depth}


def ticks(duration_ns: int, n: int = 5) -> list[tuple[float, str]]:
    """Axis ticks as (percent, label)."""
    ms = duration_ns / 1e6
    out = []
    for k in range(n + 1):
        v = ms * k / n
        label = f"{v / 1000:.2f} s" if ms >= 2000 else f"{v:.1f} ms" if ms >= 10 else f"{v:.2f} ms"
        out.append((round(100.0 * k / n, 3), label))
    return out


def _is_error(s: dict[str, Any]) -> bool:
    e = s.get("error")
    return bool(e) if e is not None else s["status"]["code"] == "error"


def compact(spans: list[dict[str, Any]]) -> dict[str, Any]:
    """The waterfall's rows in tree order as parallel lists, for the page's script to draw only the
    rows in view (a 50,000-span trace is ≈2.5 MB of JSON instead of ≈50 MB of HTML rows).

    ``ids`` is every row's 16-digit span id concatenated; ``parent`` the parent's row (-1 for a
    root); ``svc``/``op`` index ``services``/``names``; ``start``/``dur`` are ns from the trace's
    start; ``flags``: 1 error, 2 on the critical path, 4 has children."""
    if not spans:
        return {"ids": "", "parent": [], "depth": [], "svc": [], "op": [], "start": [], "dur": [], "flags": [],
                "services": [], "colors": [], "names": [], "total_ns": 0, "critical": []}
    roots, children = build_tree(spans)
    cp = critical_path(spans, roots, children)
    crit = set(cp)
    t0 = min(s["start_ns"] for s in spans)
    total = max(1, max(s["end_ns"] for s in spans) - t0)
    services = sorted({s["service"] for s in spans})
    colors = service_colors(services)
    svc_ix = {name: i for i, name in enumerate(services)}
    names: dict[str, int] = {}
    row_of: dict[int, int] = {}
    ids, parent, depth, svc, op, start, dur, flags = [], [], [], [], [], [], [], []
    for i, d in _walk(roots, children):
        s = spans[i]
        row_of[i] = len(ids)
        ids.append(s["span_id"])
        p = s.get("parent_span_id")
        parent.append(p)  # resolved to a row below, once every row is known
        depth.append(d)
        svc.append(svc_ix[s["service"]])
        op.append(names.setdefault(s["name"], len(names)))
        start.append(s["start_ns"] - t0)
        dur.append(s["end_ns"] - s["start_ns"])
        flags.append((1 if _is_error(s) else 0) | (2 if i in crit else 0) | (4 if children.get(i) else 0))
    by_id = {sid: r for r, sid in enumerate(ids)}
    parent = [by_id.get(p, -1) if p else -1 for p in parent]
    return {"ids": "".join(ids), "parent": parent, "depth": depth, "svc": svc, "op": op, "start": start, "dur": dur,
            "flags": flags, "services": services, "colors": [colors[x] for x in services], "names": list(names),
            "total_ns": total, "critical": [spans[i]["span_id"] for i in cp]}
