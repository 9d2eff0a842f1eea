"""The Logs page (``/logs``) and its JSON twins (``/api/logs/search``, ``/api/logs/volume``): search
by service, severity, body text and attributes over the page's range, newest first, a page at a
time, with the volume over time by severity. The whole query lives in the URL."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from tracehouse.storage import InvalidParameter, TimeRange, attr_filters, is_digits, parse_range, parse_step
from tracehouse.storage import queries_logs as qlogs

from . import figures, figures_explore, snapshots
from .render import render, view_from

FIELDS = ("service", "severity", "q", "trace_id", "span_id", "event_name")
LEVELS = ("trace", "debug", "info", "warn", "error", "fatal")
PAGE = 100


def log_query(params, tr: TimeRange) -> tuple[qlogs.LogQuery, dict[str, Any]]:
    """The query of a request's parameters, and the form's values to write back."""
    form = {k: (params.get(k) or "").strip() for k in FIELDS}
    attrs = [a for a in params.getlist("attr") if a.strip()]
    q = qlogs.LogQuery(tr, service=form["service"] or None, severity=form["severity"] or None, q=form["q"] or None,
                       filters=tuple(attr_filters.parse_filters(attrs)), trace_id=form["trace_id"] or None,
                       span_id=form["span_id"] or None, event_name=form["event_name"] or None)
    form["attrs"] = attrs
    return q, form


def _limit(v: str | None) -> int:
    if not v:
        return PAGE
    if not is_digits(v):
        raise InvalidParameter("limit must be an integer")
    return int(v)


def logs_pages_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/logs", response_class=HTMLResponse)
    def logs_page(request: Request):
        view = view_from(request)
        store = request.app.state.store
        q, form = log_query(request.query_params, view.tr)
        cursor = request.query_params.get("cursor") or None
        page = qlogs.search(store, q, _limit(request.query_params.get("limit")), cursor)
        vol = qlogs.volume(store, q)
        fig = figures.in_window(figures_explore.log_volume(vol, qlogs.GROUPS), view.tr.start_s, view.tr.end_s)
        for rec in page["logs"]:
            if rec["event_name"] == snapshots.EVENT:
                rec["snapshot_id"] = snapshots.snapshot_id(rec)
        keep = {k: v for k, v in form.items() if k != "attrs" and v}
        keep["limit"] = request.query_params.get("limit") or None
        return render(request, "logs.html", view, title="Logs", f=form, logs=page["logs"], vol=vol, fig=fig,
                      services=qlogs.services(store, view.tr), levels=LEVELS,
                      older=view.qs(**keep, attr=form["attrs"], cursor=page["next"]) if page["next"] else None,
                      newest=view.qs(**keep, attr=form["attrs"]) if cursor else None)

    return r


def logs_api_router(get_store) -> APIRouter:
    r = APIRouter(prefix="/api/logs", tags=["query"])
    since_q = Query(None, description="RFC 3339 time or relative (15m, 2h, 7d, now); default 1h ago")

    @r.get("/search")
    def search(request: Request, since: str | None = since_q, until: str | None = None,
               service: str | None = None, severity: str | None = Query(None, description="at least: " + ", ".join(LEVELS)),
               q: str | None = Query(None, description="body contains (case-insensitive)"),
               attr: list[str] = Query([], description="attribute filter, repeatable: key=value, key!=value, "
                                                       "key~text, key>n, key<n, 'key exists'"),
               trace_id: str | None = None, span_id: str | None = None, event_name: str | None = None,
               cursor: str | None = Query(None, description="the 'next' of the previous page"),
               limit: str | None = None) -> dict[str, Any]:
        """Log records, newest first, one page at a time (follow ``next``)."""
        tr = parse_range(since, until, default="1h")
        query, _ = log_query(request.query_params, tr)
        return qlogs.search(get_store(request), query, _limit(limit), cursor)

    @r.get("/volume")
    def volume(request: Request, since: str | None = since_q, until: str | None = None,
               service: str | None = None, severity: str | None = None, q: str | None = None,
               attr: list[str] = Query([]), trace_id: str | None = None, span_id: str | None = None,
               event_name: str | None = None, step: str | None = Query(None, description="bucket seconds")) -> dict[str, Any]:
        """Matching records per time bucket and severity group."""
        tr = parse_range(since, until, default="1h")
        query, _ = log_query(request.query_params, tr)
        return qlogs.volume(get_store(request), query, parse_step(step))

    return r
