"""The metrics explorer (``/explore``; ``/metrics`` stays the Prometheus scrape path) and its JSON
twin ``/api/metrics/explore``: a metric by name with its type and unit, filtered and grouped by
labels, aggregated per step and charted. The whole query lives in the URL, so it can be shared."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from tracehouse.storage import (
    InvalidParameter,
    TimeRange,
    attr_filters,
    parse_range,
    parse_step,
)
from tracehouse.storage import queries_metrics as qm
from tracehouse.storage import queries_telemetry as qtel

from . import figures, figures_explore, units
from .render import render, view_from

STEPS = ("", "10s", "30s", "1m", "5m", "15m", "1h")
#: longest label-chip link: longer request heads are refused (h11's limit is 16 KiB, many proxies' 8 KiB)
MAX_LINK = 8000
#: metric names listed on the page (those with the most points): the table and the form's suggestions
PAGE_NAMES = 500


def metric_query(params, tr: TimeRange) -> tuple[qm.MetricQuery, dict[str, Any]]:
    form = {k: (params.get(k) or "").strip() for k in ("metric", "service", "agg", "step")}
    attrs = [a for a in params.getlist("attr") if a.strip()]
    group_by = [g.strip() for g in params.getlist("group_by") if g.strip()]
    step = parse_step(form["step"])
    mq = qm.MetricQuery(form["metric"], tr, service=form["service"] or None,
                        filters=tuple(attr_filters.parse_filters(attrs)), group_by=tuple(group_by),
                        agg=form["agg"] or None, step_s=step)
    form.update(attrs=attrs, group_by=group_by)
    return mq, form


def _table(result: dict[str, Any], u: units.Unit) -> list[dict[str, Any]]:
    """Per series: last, mean and max value, formatted in the chart's unit."""
    rows = []
    for s in result["series"]:
        vals = [p[1] for p in s["points"] if p[1] is not None]
        scaled = [v * u.factor for v in vals]
        rows.append({"labels": s["labels"], "points": len(vals),
                     "last": units.fmt(scaled[-1], u) if scaled else "–",
                     "mean": units.fmt(sum(scaled) / len(scaled), u) if scaled else "–",
                     "max": units.fmt(max(scaled), u) if scaled else "–"})
    return rows


def _chips(view, form: dict[str, Any], labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per label key, its values with the link that filters by exactly that label (the quoted filter
    form when the plain one would mean another); ``href`` None where no link can (a key or value past
    the filter length limit, or a link too long to send), so the chip is shown as text, not a 400."""
    out = []
    for lab in labels:
        values = []
        for v in lab["values"]:
            a = attr_filters.format_filter(lab["key"], "=", v)
            href = None if a is None else "/explore?" + view.qs(
                metric=form["metric"], service=form["service"] or None, attr=form["attrs"] + [a],
                group_by=form["group_by"], agg=form["agg"] or None, step=form["step"] or None)
            values.append({"value": v, "href": href if href and len(href) <= MAX_LINK else None})
        out.append({"key": lab["key"], "values": values})
    return out


def explore_pages_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/explore", response_class=HTMLResponse)
    def explore_page(request: Request):
        view = view_from(request)
        store = request.app.state.store
        mq, form = metric_query(request.query_params, view.tr)
        listed = qtel.metric_listing(store, view.tr, form["service"] or None, PAGE_NAMES)
        ctx: dict[str, Any] = {"names": listed["metrics"], "names_total": listed["total"],
                               "names_truncated": listed["truncated"], "f": form, "steps": STEPS, "result": None}
        if mq.name:
            result = qm.explore(store, mq)
            info = result.pop("info")
            ctx.update(result=result, info=info, aggs=qm.AGGS.get(result["type"], ()))
            if info is not None:
                u = figures_explore.value_unit(result)
                title = f"{result['agg']} of {mq.name}" + (f" by {', '.join(mq.group_by)}" if mq.group_by else "")
                fig = figures_explore.explore_figure(result, title)
                lab = qm.label_listing(store, view.tr, mq.name)
                ctx.update(fig=figures.in_window(fig, view.tr.start_s, view.tr.end_s), rows=_table(result, u),
                           labels=lab["labels"], labels_truncated=lab["truncated"],
                           chips=_chips(view, form, lab["labels"]), unit=u)
        return render(request, "explore.html", view, title="Explore" + (f" · {mq.name}" if mq.name else ""), **ctx)

    return r


def explore_api_router(get_store) -> APIRouter:
    r = APIRouter(prefix="/api/metrics", tags=["query"])

    @r.get("/explore")
    def explore(request: Request, metric: str = Query(..., description="metric name"), since: str | None = None,
                until: str | None = None, service: str | None = None,
                attr: list[str] = Query([], description="label filter, repeatable: key=value, key!=value, key~text, "
                                                        "key>n, key<n, 'key exists'"),
                group_by: list[str] = Query([], description="labels to group by (attributes, resource "
                                                             "attributes, service, instance)"),
                agg: str | None = Query(None, description="gauge: avg|min|max|sum|last|count; sum: rate|increase "
                                                          "and those; histograms and summaries: p50|p90|p95|p99|avg|rate|count"),
                step: str | None = Query(None, description="bucket width, e.g. 30s, 1m (minimum 10s)")) -> dict[str, Any]:
        """One metric aggregated per step, one series per group."""
        mq, _ = metric_query(request.query_params, parse_range(since, until))
        if not mq.name:
            raise InvalidParameter("metric is required")
        return qm.explore(get_store(request), mq)

    @r.get("/labels")
    def labels(request: Request, metric: str = Query(...), since: str | None = None,
               until: str | None = None) -> dict[str, Any]:
        """The metric's label keys (up to 200 of each kind, the ones most points carry; ``truncated``
        says when there are more) and their most frequent values."""
        tr = parse_range(since, until)
        store = get_store(request)
        return {"metric": metric, "info": qm.describe(store, tr, metric), **qm.label_listing(store, tr, metric)}

    return r
