"""Plotly figures as plain ``{"data", "layout"}`` dicts, built from query results (pure).

Plain dicts rather than ``plotly.graph_objects``: the browser's plotly.js renders them the same,
and building them costs microseconds instead of milliseconds of validation per page.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from . import units
from .units import plain

ERROR = "#d62728"
OK = "#4e79a7"
_BASE = {
    "margin": {"l": 50, "r": 12, "t": 30, "b": 36},
    "height": 220,
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "font": {"size": 11, "family": "system-ui, sans-serif"},
    "legend": {"orientation": "h", "y": -0.25},
    "xaxis": {"type": "date", "gridcolor": "#eee"},
    # SI prefixes: plotly's default writes 3e9 as "3B" (billions), which reads as bytes
    "yaxis": {"gridcolor": "#eee", "rangemode": "tozero", "exponentformat": "SI"},
}


def iso_time(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def base_layout(title: str, **over: Any) -> dict[str, Any]:
    lay = {k: (dict(v) if isinstance(v, dict) else v) for k, v in _BASE.items()}
    lay["title"] = {"text": title, "x": 0, "font": {"size": 13}}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(lay.get(k), dict):
            lay[k].update(v)
        else:
            lay[k] = v
    return lay


def red_figures(series: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rate, errors and latency-quantile figures from ``queries_services.series``."""
    pts = series.get("points", [])
    x = [iso_time(p["t"]) for p in pts]
    rate = {"data": [{"type": "scatter", "mode": "lines", "x": x, "y": [p["rate"] for p in pts], "name": "req/s",
                      "line": {"color": OK}, "fill": "tozeroy"}],
            "layout": base_layout("Requests per second")}
    width_ms = float(series.get("step_s") or 60) * 1000 * 0.8  # bars one bucket wide on the date axis
    errors = {"data": [{"type": "bar", "x": x, "y": [p["errors"] for p in pts], "name": "errors",
                        "marker": {"color": ERROR}, "width": width_ms},
                       {"type": "scatter", "mode": "lines", "x": x, "y": [p["error_rate"] * 100 for p in pts],
                        "name": "error %", "yaxis": "y2", "line": {"color": "#ff7f0e"}}],
              "layout": base_layout("Errors", yaxis2={"overlaying": "y", "side": "right", "title": "%",
                                                   "rangemode": "tozero", "showgrid": False})}
    latency = {"data": [{"type": "scatter", "mode": "lines", "x": x, "y": [p[k] for p in pts], "name": k[:-3]}
                        for k in ("p50_ms", "p95_ms", "p99_ms")],
               "layout": base_layout("Latency (ms)")}
    return {"rate": rate, "errors": errors, "latency": latency}


def operations_figure(ops: list[dict[str, Any]], top: int = 15) -> dict[str, Any]:
    """p50/p95/p99 per operation as grouped horizontal bars, slowest p95 first."""
    ops = sorted(ops, key=lambda o: o.get("p95_ms") or 0, reverse=True)[:top][::-1]
    names = [plain(o["operation"]) for o in ops]
    data = [{"type": "bar", "orientation": "h", "y": names, "x": [o[k] for o in ops], "name": k[:-3]}
            for k in ("p50_ms", "p95_ms", "p99_ms")]
    return {"data": data, "layout": base_layout("Latency by operation (ms)", height=max(220, 28 * len(ops) + 80),
                                            xaxis={"type": "linear"}, yaxis={"automargin": True, "type": "category"},
                                            barmode="group", margin={"l": 10})}


#: the largest magnitude a line is drawn through: past ~1e305 plotly.js computes NaN coordinates (a
#: console error per trace, and no line) when the axis also spans small values
DRAWABLE = 1e300


def scaled(values: list, factor: float) -> list:
    """``values`` times ``factor``, for a chart: a value past ``DRAWABLE`` (or NaN) is a gap, as a
    missing one is (tables show the values themselves)."""
    out = values if factor == 1 else [None if v is None else v * factor for v in values]
    if all(v is None or abs(v) <= DRAWABLE for v in out):
        return out
    return [v if v is not None and abs(v) <= DRAWABLE else None for v in out]


def metric_figure(title: str, series: dict[str, Any], label_keys: tuple[str, ...] = (),
                  unit: units.Unit | None = None) -> dict[str, Any]:
    """One line per series of ``queries_telemetry.metric_series``; values in ``unit``'s base unit
    on an axis that says so (bytes as "3GB", not "3B")."""
    u = unit or units.Unit("count")
    data = []
    for s in series.get("series", []):
        lbl = s["labels"]
        keys = label_keys or tuple(k for k in lbl if k not in ("service",))
        name = ", ".join(f"{lbl[k]}" for k in keys if lbl.get(k)) or series.get("name", "")
        data.append({"type": "scatter", "mode": "lines", "name": plain(name[:60]),
                     "x": [iso_time(p[0]) for p in s["points"]], "y": scaled([p[1] for p in s["points"]], u.factor),
                     "hovertemplate": units.hover(u) + "<extra>%{fullData.name}</extra>"})
    return {"data": data, "layout": base_layout(plain(title), yaxis=units.axis(u))}


def xy_figure(title: str, lines: dict[str, list[tuple[int, float]]], unit: units.Unit | None = None) -> dict[str, Any]:
    u = unit or units.Unit("count")
    data = [{"type": "scatter", "mode": "lines", "name": plain(name[:60]), "x": [iso_time(t) for t, _ in pts],
             "y": scaled([v for _, v in pts], u.factor), "hovertemplate": units.hover(u) + "<extra>%{fullData.name}</extra>"}
            for name, pts in lines.items()]
    return {"data": data, "layout": base_layout(plain(title), yaxis=units.axis(u))}


def trace_scatter(traces: list[dict[str, Any]]) -> dict[str, Any]:
    """Duration over time, one point per trace; ``customdata`` holds the trace id for click-through."""
    data = []
    for err, name, color in ((False, "ok", OK), (True, "error", ERROR)):
        sel = [t for t in traces if t["error"] == err]
        data.append({
            "type": "scatter", "mode": "markers", "name": name, "marker": {"color": color, "size": 8, "opacity": 0.8},
            "x": [iso_time(t["start_ns"] / 1e9) for t in sel], "y": [t["duration_ms"] for t in sel],
            "customdata": [t["trace_id"] for t in sel],
            "text": [plain(f"{t['root_service']}: {t['root_operation']}") for t in sel],
            "hovertemplate": "%{text}<br>%{y} ms<extra></extra>",
        })
    return {"data": data, "layout": base_layout("Trace duration (ms) — click a point to open the trace",
                                            height=260, yaxis={"rangemode": "tozero"})}


def sparkline(points: list[tuple[int, float]], width: int = 120, height: int = 28) -> str:
    """SVG polyline ``points`` attribute for a small inline sparkline."""
    if not points:
        return ""
    if len(points) == 1:
        points = [points[0], (points[0][0] + 1, points[0][1])]
    ts = [p[0] for p in points]
    vs = [p[1] for p in points]
    t0, t1 = min(ts), max(ts)
    hi = max(vs) or 1.0
    span = (t1 - t0) or 1
    return " ".join(f"{(t - t0) * width / span:.1f},{height - 2 - (v / hi) * (height - 4):.1f}" for t, v in points)


def in_window(fig: dict[str, Any], start_s: float, end_s: float) -> dict[str, Any]:
    """Pin a time-series figure's x axis to the page's time range, and show markers on sparse
    series (one or a few buckets draw no visible line on their own)."""
    lay = fig.setdefault("layout", {})
    lay.setdefault("xaxis", {})["range"] = [iso_time(start_s), iso_time(end_s)]
    for trace in fig.get("data", []):
        if trace.get("type") == "scatter" and trace.get("mode") == "lines" and len(trace.get("x") or ()) <= 30:
            trace["mode"] = "lines+markers"
            trace.setdefault("marker", {"size": 5})
    return fig
