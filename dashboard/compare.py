"""Two traces side by side, aligned by service and operation (pure).

For each (service, operation) of either trace: how many spans, their total duration, and their
*self time* — the part of each span not covered by its children, i.e. time the span spent on its
own work or waiting on something untraced. Self times of a trace add up to the time its spans
cover, so the differences show where the slower trace lost its time.
"""

from __future__ import annotations

from typing import Any

from .waterfall import build_tree


def self_times(spans: list[dict[str, Any]]) -> list[int]:
    """Per span: its duration minus the union of its children's intervals (clipped to the span)."""
    _, children = build_tree(spans)
    out = []
    for i, s in enumerate(spans):
        lo, hi = s["start_ns"], s["end_ns"]
        covered, cur_start, cur_end = 0, None, None
        for c in sorted(((max(lo, spans[j]["start_ns"]), min(hi, spans[j]["end_ns"])) for j in children.get(i, ())),
                        key=lambda x: x[0]):
            if c[1] <= c[0]:
                continue
            if cur_end is None or c[0] > cur_end:
                if cur_end is not None:
                    covered += cur_end - cur_start
                cur_start, cur_end = c
            else:
                cur_end = max(cur_end, c[1])
        if cur_end is not None:
            covered += cur_end - cur_start
        out.append(max(0, (hi - lo) - covered))
    return out


def _by_operation(spans: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    acc: dict[tuple[str, str], dict[str, float]] = {}
    for s, self_ns in zip(spans, self_times(spans)):
        row = acc.setdefault((s["service"], s["name"]), {"count": 0, "total_ms": 0.0, "self_ms": 0.0, "errors": 0})
        row["count"] += 1
        row["total_ms"] += (s["end_ns"] - s["start_ns"]) / 1e6
        row["self_ms"] += self_ns / 1e6
        row["errors"] += 1 if s.get("error") else 0
    return acc


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``a`` and ``b`` are ``queries_traces.outline`` results. Rows by (service, operation), the
    biggest difference in self time first."""
    ra, rb = _by_operation(a["spans"]), _by_operation(b["spans"])
    empty = {"count": 0, "total_ms": 0.0, "self_ms": 0.0, "errors": 0}
    rows = []
    for key in sorted(set(ra) | set(rb)):
        x, y = ra.get(key, empty), rb.get(key, empty)
        rows.append({"service": key[0], "operation": key[1], "a": _round(x), "b": _round(y),
                     "delta_self_ms": round(y["self_ms"] - x["self_ms"], 3),
                     "delta_total_ms": round(y["total_ms"] - x["total_ms"], 3),
                     "only": "a" if key not in rb else "b" if key not in ra else ""})
    rows.sort(key=lambda r: (-abs(r["delta_self_ms"]), r["service"], r["operation"]))
    same_root = (root(a) == root(b))
    return {"rows": rows, "delta_ms": round(b["duration_ms"] - a["duration_ms"], 3), "same_operation": same_root,
            "root_a": root(a), "root_b": root(b)}


def _round(x: dict[str, float]) -> dict[str, float]:
    return {"count": int(x["count"]), "total_ms": round(x["total_ms"], 3), "self_ms": round(x["self_ms"], 3),
            "errors": int(x["errors"])}


def root(t: dict[str, Any]) -> tuple[str, str] | None:
    """(service, operation) of the trace's earliest root span."""
    ids = {s["span_id"] for s in t["spans"]}
    roots = [s for s in t["spans"] if not s.get("parent_span_id") or s["parent_span_id"] not in ids]
    if not roots:
        return None
    r = min(roots, key=lambda s: s["start_ns"])
    return r["service"], r["name"]
