"""Figures of the Logs, Explore, flame graph and compare pages, and the exemplar overlay of the
service page's latency chart (pure; plain ``{"data", "layout"}`` dicts like ``figures``)."""

from __future__ import annotations

import zlib
from typing import Any

from . import units
from .figures import base_layout, iso_time, plain, scaled

LEVEL_COLORS = {"unset": "#adb5bd", "trace": "#ced4da", "debug": "#91a7ff", "info": "#4e79a7", "warn": "#f28e2b",
                "error": "#d62728", "fatal": "#7b0d0d"}


def log_volume(vol: dict[str, Any], groups: tuple[str, ...]) -> dict[str, Any]:
    """Stacked bars: records per bucket and severity group."""
    pts = vol.get("points", [])
    x = [iso_time(p["t"] + vol["step_s"] / 2) for p in pts]
    width = vol["step_s"] * 1000 * 0.9
    data = []
    for g in groups:
        ys = [p["counts"].get(g, 0) for p in pts]
        if any(ys):
            data.append({"type": "bar", "name": g, "x": x, "y": ys, "width": width,
                         "marker": {"color": LEVEL_COLORS.get(g, "#888")},
                         "hovertemplate": "%{y} " + g + "<extra></extra>"})
    return {"data": data, "layout": base_layout(f"Records per {_step(vol['step_s'])}", barmode="stack", height=180,
                                            yaxis={"tickformat": "~s"}, margin={"t": 26, "b": 28})}


def _step(s: int) -> str:
    return f"{s // 3600} h" if s >= 3600 and s % 3600 == 0 else f"{s // 60} min" if s >= 60 and s % 60 == 0 else f"{s} s"


def value_unit(result: dict[str, Any]) -> units.Unit:
    """The unit of an explorer result's values: the metric's, or a count, or a rate of either."""
    base = units.parse(result.get("unit"), result.get("name", ""))
    agg, mtype = result["agg"], result["type"]
    hist = mtype in ("histogram", "exponential_histogram", "summary")
    if agg == "count":
        return units.Unit("count", label="observations" if hist else "points")
    if agg == "rate":
        return units.Unit("count", per_second=True) if hist else units.rate_of(base)
    return base


def explore_figure(result: dict[str, Any], title: str) -> dict[str, Any]:
    u = value_unit(result)
    data = []
    for s in result["series"]:
        name = ", ".join(f"{k}={v}" for k, v in s["labels"].items()) or result["name"]
        data.append({"type": "scatter", "mode": "lines", "name": plain(name[:80]), "x": [iso_time(p[0]) for p in s["points"]],
                     "y": scaled([p[1] for p in s["points"]], u.factor),
                     "hovertemplate": units.hover(u) + "<extra>%{fullData.name}</extra>"})
    lay = base_layout(plain(title), height=360, yaxis=units.axis(u), legend={"orientation": "h", "y": -0.15})
    return {"data": data, "layout": lay}


def with_exemplars(latency: dict[str, Any], exemplars: list[dict[str, Any]]) -> dict[str, Any]:
    """Exemplar points on the latency chart; ``customdata`` holds each one's trace id, so a click
    opens the trace (the page's figure script does that for ``clickable`` figures)."""
    if not exemplars:
        return latency
    latency["data"].append({
        "type": "scatter", "mode": "markers", "name": "exemplars",
        "x": [iso_time(e["time_ns"] / 1e9) for e in exemplars], "y": [e["value_ms"] for e in exemplars],
        "customdata": [e["trace_id"] for e in exemplars],
        "text": [plain(e["metric"]) for e in exemplars],
        "marker": {"symbol": "diamond", "size": 8, "color": "#6741d9", "line": {"width": 1, "color": "#fff"}},
        "hovertemplate": "%{y:.1f} ms · %{text}<br>click to open the trace<extra></extra>",
    })
    latency["layout"]["title"]["text"] = "Latency (ms) — ◆ exemplars open their trace"
    latency["layout"]["hovermode"] = "closest"  # a click picks the exemplar under the pointer, not the lines' x
    return latency


def flame_figure(ice: dict[str, Any], title: str) -> dict[str, Any]:
    """An icicle drawn bottom-up: the root at the bottom, callees above their callers."""
    height = max(180, min(1400, 24 * (min(ice["depth"], 60) + 1) + 50))
    data = [{"type": "icicle", "ids": ice["ids"], "labels": [plain(x) for x in ice["labels"]],
             "parents": ice["parents"], "values": ice["values"], "text": ice["text"], "branchvalues": "total", "sort": False,
             "tiling": {"orientation": "v", "flip": "y"}, "textinfo": "label",
             "hovertemplate": "<b>%{label}</b><br>%{text}<extra></extra>",
             "marker": {"colors": [_warm(x) for x in ice["labels"]], "line": {"width": 1, "color": "#fff"}},
             "pathbar": {"visible": True}}]
    lay = base_layout(plain(title), height=height, margin={"l": 4, "r": 4, "t": 30, "b": 4})
    for k in ("xaxis", "yaxis", "legend"):
        lay.pop(k, None)
    return {"data": data, "layout": lay}


def _warm(name: str) -> str:
    """A flame colour per function name (the same function, the same colour, on every page)."""
    h = zlib.crc32(name.encode("utf-8", "replace"))
    return f"hsl({h % 50}, {70 + (h >> 8) % 25}%, {52 + (h >> 16) % 16}%)"


def compare_figure(rows: list[dict[str, Any]], top: int = 15) -> dict[str, Any]:
    """Self time per (service, operation) in both traces, the biggest differences first."""
    rows = rows[:top][::-1]
    names = [plain(f"{r['service']}: {r['operation']}"[:60]) for r in rows]
    data = [{"type": "bar", "orientation": "h", "y": names, "x": [r[k]["self_ms"] for r in rows], "name": label,
             "marker": {"color": color}, "hovertemplate": "%{x:.2f} ms<extra>" + label + "</extra>"}
            for k, label, color in (("a", "A", "#4e79a7"), ("b", "B", "#f28e2b"))]
    return {"data": data, "layout": base_layout("Self time by service and operation (ms)", barmode="group",
                                            height=max(240, 30 * len(rows) + 90), xaxis={"type": "linear"},
                                            yaxis={"automargin": True, "type": "category"}, margin={"l": 10})}
