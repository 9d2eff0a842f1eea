"""The pure parts: waterfall tree / critical path / layout, map layering, snapshot parsing, figures."""

from __future__ import annotations

import json

from tracehouse.dashboard import figures, servicemap_layout, snapshots, waterfall


def _span(sid, parent, start, end, service="a", error=False):
    return {"span_id": sid, "parent_span_id": parent, "start_ns": start, "end_ns": end, "service": service,
            "name": sid, "status": {"code": "error" if error else "unset"}}


def test_tree_orphans_and_cycles_become_roots():
    spans = [_span("c", "b", 5, 6), _span("a", None, 0, 10), _span("b", "a", 1, 8), _span("o", "missing", 2, 3),
             _span("x", "y", 0, 1), _span("y", "x", 0, 1)]
    roots, children = waterfall.build_tree(spans)
    assert [spans[i]["span_id"] for i in roots[:2]] == ["a", "o"]
    assert {spans[i]["span_id"] for i in roots} >= {"a", "o"} and len(roots) == 3  # the x/y cycle cut once
    rows = waterfall.layout(spans)["rows"]
    assert len(rows) == len(spans)
    assert [(r.span["span_id"], r.depth) for r in rows[:3]] == [("a", 0), ("b", 1), ("c", 2)]


def test_critical_path_follows_the_child_that_ends_last():
    spans = [_span("r", None, 0, 100), _span("early", "r", 0, 90), _span("late", "r", 10, 95),
             _span("late.1", "late", 10, 50), _span("late.2", "late", 40, 94), _span("early.1", "early", 0, 89)]
    roots, children = waterfall.build_tree(spans)
    assert [spans[i]["span_id"] for i in waterfall.critical_path(spans, roots, children)] == ["r", "late", "late.2"]
    lay = waterfall.layout(spans)
    assert lay["critical"] == ["r", "late", "late.2"]
    assert {r.span["span_id"] for r in lay["rows"] if r.critical} == {"r", "late", "late.2"}
    late2 = next(r for r in lay["rows"] if r.span["span_id"] == "late.2")
    assert (late2.offset_pct, late2.width_pct) == (40.0, 54.0)


def test_deep_trace_needs_no_recursion():
    spans = [_span(str(i), str(i - 1) if i else None, i, 100_000 - i) for i in range(5000)]
    lay = waterfall.layout(spans)
    assert lay["max_depth"] == 4999 and len(lay["critical"]) == 5000


def test_map_layers_by_call_depth_with_cycles_and_lone_nodes():
    nodes = [{"id": n, "name": n, "kind": "service"} for n in ("gw", "a", "b", "lone")]
    nodes.append({"id": "database:pg", "name": "pg", "kind": "database"})
    edges = [{"source": "gw", "target": "a"}, {"source": "a", "target": "b"}, {"source": "b", "target": "a"},
             {"source": "gw", "target": "b"}, {"source": "b", "target": "database:pg"}]
    layer = servicemap_layout.layers(nodes, edges)
    assert layer["gw"] == 0 and layer["lone"] == 0 and layer["a"] >= 1 and layer["database:pg"] > layer["b"]
    lay = servicemap_layout.layout({"nodes": nodes, "edges": [dict(e, error_rate=0.2) for e in edges]})
    assert len(lay["nodes"]) == 5 and len(lay["edges"]) == 5
    assert all(e["health"] == "critical" and e["path"].startswith("M") for e in lay["edges"])


def test_snapshot_summary_is_defensive():
    body = {"kind": "threads", "threads": [
        {"name": "t1", "stack": [{"file": "f.py", "line": 1, "function": "g"}]},
        {"name": "t2", "stack": [{"file": "f.py", "line": 1, "function": "g"}]},
        {"name": "t3", "stack": ["weird frame"]}, "not a thread"], "extra": {"x": 1}}
    s = snapshots.summarize({"time_ns": 5, "service": "svc", "body": json.dumps(body), "attributes": {}})
    assert s["id"] == "5-svc" and [g["count"] for g in s["groups"]] == [2, 1]
    assert s["hot"][0] == ("g (f.py:1)", 2) and s["other"] == {"extra": {"x": 1}}
    bad = snapshots.summarize({"time_ns": 5, "service": "svc", "body": "{oops", "attributes": {}})
    assert bad["kind"] == "unknown" and bad["error"] and bad["raw"] == "{oops"
    odd = snapshots.summarize({"time_ns": 5, "service": "s", "body": "[1, 2]", "attributes": {}})
    assert odd["kind"] == "unknown" and "1" in odd["raw"]
    assert snapshots.parse_id("12-a-b") == (12, "a-b") and snapshots.parse_id("x-a") is None


def test_sparkline_and_scatter_figures():
    assert figures.sparkline([]) == ""
    pts = figures.sparkline([(0, 0.0), (60, 2.0), (120, 1.0)], width=120, height=28).split()
    assert pts[0] == "0.0,26.0" and pts[1] == "60.0,2.0" and pts[2] == "120.0,14.0"
    fig = figures.trace_scatter([{"trace_id": "t1", "error": True, "start_ns": 0, "duration_ms": 5,
                                  "root_service": "s", "root_operation": "o"}])
    assert fig["data"][1]["customdata"] == ["t1"] and fig["data"][0]["customdata"] == []


def test_user_strings_reach_plotly_as_text_not_markup():
    """Plotly reads a subset of HTML in names, labels, titles and hover text, links included: a
    span or metric name such as ``<a href=…>`` became a clickable link in the charts of the service,
    traces and infrastructure pages. User strings now go as entities (shown as the characters)."""
    evil = '<a href="https://evil.example/">pay here</a> & <b>x</b>'
    now = 1_800_000_000
    figs = [
        figures.operations_figure([{"operation": evil, "p50_ms": 1, "p95_ms": 2, "p99_ms": 3}]),
        figures.metric_figure(evil, {"name": evil, "series": [{"labels": {"instance": evil}, "points": [[now, 1.0]]}]},
                              ("instance",)),
        figures.xy_figure(evil, {evil: [(now, 1.0)]}),
        figures.trace_scatter([{"error": True, "start_ns": now * 10**9, "duration_ms": 5, "trace_id": "ab" * 16,
                                "root_service": evil, "root_operation": evil}]),
    ]
    for fig in figs:
        text = json.dumps(fig)
        assert "<a " not in text and "<b>" not in text, text[:300]
        assert "&lt;a href=" in text
