"""Alerts pages: active alerts, rules with their state and health, a history timeline, silences,
and the rule editor; plus the firing-alerts banner of the service page.

The dashboard never imports ``tracehouse.alerts``: the composition passes the engine in
(``create_app(..., alerts=engine)``) and these pages read it through :class:`AlertSource`
(``alerts_source.py``); every change goes from the browser through the JSON API under ``/api/alerts``
(see ``static/app.js``). Only storage errors are caught (the page renders with the reason); anything
else is a bug and answers 500.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tracehouse import pathtext  # noqa: F401  (registers the {name:text} path convertor)
from tracehouse.storage import NotFound, StorageError

from .alerts_source import AlertSource
from .figures import base_layout, iso_time, plain
from .render import fmt_num as fmt_value
from .render import render, view_from

log = logging.getLogger("tracehouse.dashboard")

NS = 1_000_000_000
STATE_ORDER = {"firing": 0, "pending": 1, "resolved": 2}
STATE_COLORS = {"firing": "#d62728", "pending": "#e8590c", "error": "#7048e8", "resolved": "#2f9e44",
                "inactive": "#868e96", "ok": "#2f9e44", "deleted": "#adb5bd"}
# the rule editor's choices of the enumerated fields come from the engine (AlertSource.vocabulary);
# these two are presentation only: common severity labels, and the unit of each red signal
SEVERITIES = ("", "critical", "warning", "info")
SIGNAL_UNITS = {"rate": "calls/s", "error_rate": "fraction 0–1", "p50": "ms", "p95": "ms", "p99": "ms"}


def firing_for_service(engine: AlertSource | None, service: str) -> list[dict[str, Any]]:
    """Firing alerts whose ``service`` label is ``service`` (empty without an engine or on a storage error)."""
    if engine is None:
        return []
    try:
        alerts = list(engine.alerts())
    except StorageError as e:  # the page still renders; the banner is left out
        log.warning("cannot read firing alerts for %s: %s", service, e)
        return []
    out = [a for a in alerts if a.get("state") == "firing" and (a.get("labels") or {}).get("service") == service]
    return sorted(out, key=lambda a: -(a.get("fired_at_ns") or 0))


# -- pure helpers ------------------------------------------------------------------------------
def fmt_age(ns: Any, now_ns: int) -> str:
    """'3m 20s' since ``ns``."""
    if not ns:
        return "–"
    s = max(0, int((now_ns - int(ns)) / NS))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def summary(annotations: dict[str, Any] | None) -> str:
    """The annotation a person reads first: summary, description, or any other."""
    ann = annotations or {}
    for k in ("summary", "description", "message"):
        if ann.get(k):
            return str(ann[k])
    rest = [f"{k}: {v}" for k, v in ann.items() if k not in ("dashboard", "snapshot_id") and v]
    return "; ".join(rest)


def expression(rule: dict[str, Any]) -> str:
    """A one-line reading of a rule's condition, e.g. ``p95 of payments / POST /pay over 1m > 200``."""
    kind = rule.get("kind", "red")
    default_op, default_thr = ("==", 0) if kind in ("middleware", "absence") else (">", 0)
    op = str(rule.get("op") or default_op)
    thr = rule.get("threshold") if rule.get("threshold") not in (None, "") else default_thr
    window = rule.get("window", "1m")
    cond = f" {op} {fmt_value(thr)}"
    svc = str(rule.get("service") or "")
    if kind == "red":
        where = (svc or "every service") + (f" / {rule['operation']}" if rule.get("operation") else "")
        return f"{rule.get('signal', '?')} of {where} over {window}{cond}"
    if kind == "metric":
        filters = dict(rule.get("filters") or {})
        if svc:
            filters.setdefault("service", svc)
        sel = ", ".join(f"{k}={v}" for k, v in filters.items())
        return f"{rule.get('aggregation', 'avg')}({rule.get('metric', '?')}{{{sel}}}) over {window}{cond}"
    if kind == "absence":
        return f"no {rule.get('signal', 'any') if rule.get('signal', 'any') != 'any' else 'telemetry'} " \
               f"from {svc or '?'} for {window}"
    if kind == "middleware":
        target = rule.get("target") or "any target"
        return f"probe of {target}{' (' + svc + ')' if svc else ''} up{cond}"
    if kind == "sql":
        q = " ".join(str(rule.get("query") or "").split())
        return (q[:90] + "…" if len(q) > 90 else q) + f"  → value{cond}"
    return kind


def matcher_text(m: Any) -> str:
    if isinstance(m, str):
        return m
    op = ("=~" if m.get("isEqual", True) else "!~") if m.get("isRegex") else ("=" if m.get("isEqual", True) else "!=")
    return f"{m.get('name', '')}{op}{m.get('value', '')}"


def label_pairs(labels: dict[str, Any] | None, skip: tuple[str, ...] = ("alertname",)) -> list[tuple[str, str]]:
    return [(str(k), str(v)) for k, v in sorted((labels or {}).items()) if k not in skip]


def _intervals(history: list[dict[str, Any]], start_ns: int, end_ns: int,
               now_ns: int) -> list[tuple[str, str, int, int, dict[str, Any]]]:
    """(rule_id, state, from, to, transition) spans of pending/firing/error time per alert series."""
    series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for h in history:
        series[(h.get("rule_id", ""), h.get("fingerprint", ""))].append(h)
    out = []
    shown = ("pending", "firing", "error")
    for (rule_id, _), items in series.items():
        items.sort(key=lambda h: h.get("ts_ns") or 0)
        first = items[0]
        if first.get("from_state") in shown and (first.get("ts_ns") or 0) > start_ns:
            out.append((rule_id, first["from_state"], start_ns, first["ts_ns"], first))  # began before the history
        for i, h in enumerate(items):
            state = h.get("to_state", "")
            if state not in shown:
                continue
            t0 = h.get("ts_ns") or 0
            t1 = items[i + 1].get("ts_ns") if i + 1 < len(items) else min(now_ns, end_ns)
            t0, t1 = max(t0, start_ns), min(t1 or t0, end_ns)
            if t1 >= t0:
                out.append((rule_id, state, t0, t1, h))
    return out


def timeline_figure(history: list[dict[str, Any]], names: dict[str, str], start_ns: int, end_ns: int,
                    now_ns: int) -> dict[str, Any] | None:
    """Pending/firing/error time per rule as thick horizontal strips, with a marker per transition."""
    history = [h for h in history if start_ns <= (h.get("ts_ns") or 0) <= end_ns]
    if not history:
        return None
    # plotly reads markup in category labels and hover text: rule names and alert labels (values
    # from telemetry) go through plain()
    rows = sorted({plain(names.get(h.get("rule_id", ""), h.get("alertname") or h.get("rule_id", ""))) for h in history})
    data = []
    for state in ("pending", "firing", "error"):
        x: list[Any] = []
        y: list[Any] = []
        text: list[Any] = []
        for rule_id, st, t0, t1, h in _intervals(history, start_ns, end_ns, now_ns):
            if st != state:
                continue
            shown = names.get(rule_id, h.get("alertname") or rule_id)
            name = plain(shown)
            desc = plain(", ".join(f"{k}={v}" for k, v in label_pairs(h.get("labels"))) or shown)
            t1 = max(t1, t0 + NS)  # a zero-length span still shows
            x += [iso_time(t0 / NS), iso_time(t1 / NS), None]
            y += [name, name, None]
            text += [f"{state}: {desc}", f"{state}: {desc}", None]
        if x:
            data.append({"type": "scatter", "mode": "lines", "name": state, "x": x, "y": y, "text": text,
                         "hoverinfo": "x+text", "connectgaps": False,
                         "line": {"color": STATE_COLORS[state], "width": 14}})
    marks = sorted(history, key=lambda h: h.get("ts_ns") or 0)
    data.append({"type": "scatter", "mode": "markers", "name": "transition", "showlegend": False,
                 "x": [iso_time((h.get("ts_ns") or 0) / NS) for h in marks],
                 "y": [plain(names.get(h.get("rule_id", ""), h.get("alertname") or h.get("rule_id", ""))) for h in marks],
                 "text": [f"{h.get('from_state')} → {h.get('to_state')} (value {fmt_value(h.get('value'))})"
                          for h in marks], "hoverinfo": "x+text",
                 "marker": {"size": 7, "symbol": "line-ns-open", "line": {"width": 2},
                            "color": [STATE_COLORS.get(h.get("to_state", ""), "#868e96") for h in marks]}})
    return {"data": data, "layout": base_layout(
        "State over time", height=90 + 30 * len(rows), margin={"l": 10, "t": 30, "b": 30},
        xaxis={"range": [iso_time(start_ns / NS), iso_time(end_ns / NS)]},
        yaxis={"type": "category", "automargin": True, "categoryorder": "array", "categoryarray": rows[::-1],
               "rangemode": "normal", "showgrid": False},
        legend={"orientation": "h", "y": 1.12, "x": 1, "xanchor": "right"}, hovermode="closest")}


def rule_form(rule: dict[str, Any] | None) -> dict[str, Any]:
    """Editor field values from a rule mapping (``None``: a new red rule)."""
    r = dict(rule or {"kind": "red", "signal": "error_rate", "op": ">", "threshold": 0.05, "window": "5m",
                      "for": "1m", "group": "api"})
    labels = dict(r.get("labels") or {})
    severity = str(labels.pop("severity", ""))

    def lines(d: Any) -> str:
        return "\n".join(f"{k}={v}" for k, v in (d or {}).items())

    return {
        "alert": r.get("alert", ""), "kind": r.get("kind", "red"), "group": r.get("group", "api"),
        "interval": r.get("interval", ""), "enabled": r.get("enabled", True) is not False,
        "service": r.get("service", ""), "operation": r.get("operation", ""), "signal": r.get("signal", ""),
        "window": r.get("window", ""), "metric": r.get("metric", ""), "filters": lines(r.get("filters")),
        "aggregation": r.get("aggregation", "avg"), "group_by": ", ".join(r.get("group_by") or []),
        "target": r.get("target", ""), "query": r.get("query", ""), "op": r.get("op", ""),
        "threshold": "" if r.get("threshold") is None else r.get("threshold", ""),
        "for": r.get("for", ""), "keep_firing_for": r.get("keep_firing_for", ""), "severity": severity,
        "labels": lines(labels), "annotations": lines(r.get("annotations")),
        "nodata_state": r.get("nodata_state", "ok"), "snapshot": (r.get("action") or {}).get("snapshot", ""),
        "limit": "" if r.get("limit") is None else r.get("limit", ""),
    }


def rule_yaml(rule: dict[str, Any]) -> str:
    raw = {k: v for k, v in rule.items() if k not in (
        "id", "source", "read_only", "state", "health", "last_error", "last_eval_ns", "last_duration_s", "alerts")}
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, default_flow_style=False)


def source_label(source: str) -> str:
    return os.path.basename(source[5:]) if source.startswith("file:") else (source or "api")


# -- routes ------------------------------------------------------------------------------------
def _ctx() -> dict[str, Any]:
    return {"fmt_value": fmt_value, "fmt_age": fmt_age, "summary": summary, "expression": expression,
            "matcher_text": matcher_text, "label_pairs": label_pairs, "source_label": source_label,
            "now_ns": time.time_ns()}


def alerts_pages_router(engine: AlertSource | None) -> APIRouter:
    """The pages over ``engine`` (None: a dashboard without the engine in its process; the pages say so)."""
    r = APIRouter(include_in_schema=False)

    @r.get("/alerts", response_class=HTMLResponse)
    def alerts_page(request: Request):
        view = view_from(request)
        ctx = _ctx()
        info: dict[str, Any] = {"alerts": [], "rules": [], "history": [], "silences": [], "timeline": None,
                                "error": None}
        if engine is not None:
            try:
                info.update(_overview(engine, view.tr.start_ns, view.tr.end_ns, ctx["now_ns"]))
            except StorageError as e:
                info["error"] = f"{type(e).__name__}: {e}"
        return render(request, "alerts.html", view, title="Alerts", engine=engine, info=info, **ctx)

    @r.get("/alerts/rules/new", response_class=HTMLResponse)
    def new_rule_page(request: Request):
        return _editor(request, engine, None)

    @r.get("/alerts/rules/{rule_id:text}", response_class=HTMLResponse)
    def rule_page(request: Request, rule_id: str):
        return _editor(request, engine, rule_id)

    return r


def _overview(engine: AlertSource, start_ns: int, end_ns: int, now_ns: int) -> dict[str, Any]:
    rules = sorted(engine.list_rules(), key=lambda x: (x.get("group", ""), x.get("alert", "")))
    names = {x.get("id", ""): x.get("alert", "") for x in rules}
    alerts = sorted(engine.alerts(), key=lambda a: (STATE_ORDER.get(a.get("state", ""), 9),
                                                    -(a.get("fired_at_ns") or a.get("active_at_ns") or 0)))
    for a in alerts:
        a["alertname"] = (a.get("labels") or {}).get("alertname") or names.get(a.get("rule_id", ""), "")
    history = [h for h in engine.history("", 1000) if start_ns <= (h.get("ts_ns") or 0) <= end_ns]
    silences = sorted(engine.silences(), key=lambda s: ({"active": 0, "pending": 1}.get(s.get("status", ""), 2),
                                                        -(s.get("ends_ns") or 0)))
    return {"alerts": alerts, "rules": rules, "history": history[:100], "silences": silences,
            "timeline": timeline_figure(history, names, start_ns, end_ns, now_ns),
            "counts": {"firing": sum(a.get("state") == "firing" for a in alerts),
                       "pending": sum(a.get("state") == "pending" for a in alerts),
                       "errors": sum(x.get("health") == "err" for x in rules),
                       "silences": sum(s.get("status") == "active" for s in silences)}}


def _editor(request: Request, engine: AlertSource | None, rule_id: str | None):
    view = view_from(request)
    view.refresh = "off"  # an auto-refresh would throw away the edits
    ctx = _ctx()
    rule, history, error = None, [], None
    if engine is not None and rule_id is not None:
        try:
            rule = next((x for x in engine.list_rules() if x.get("id") == rule_id), None)
            if rule is not None:
                history = engine.history(rule_id, 50)
        except StorageError as e:
            error = f"{type(e).__name__}: {e}"
        if rule is None and error is None:
            raise NotFound(f"no alert rule {rule_id}")
    title = "New rule" if rule_id is None else (rule or {}).get("alert") or rule_id
    form = rule_form(rule)
    return render(request, "rule_edit.html", view, title=f"{title} · Alerts", engine=engine, rule=rule,
                  rule_id=rule_id, form=form, history=history, error=error,
                  yaml_text=rule_yaml(rule) if rule and rule.get("read_only") else "",
                  choices={**(engine.vocabulary if engine is not None else {}),
                           "severities": SEVERITIES + ((form["severity"],) if form["severity"] not in SEVERITIES
                                                       else ()),
                           "units": SIGNAL_UNITS}, **ctx)
