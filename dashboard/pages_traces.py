"""HTML pages: trace search, the trace waterfall, snapshots."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from tracehouse import pathtext  # noqa: F401  (registers the {name:text} path convertor)
from tracehouse.storage import InvalidParameter, NotFound, TimeRange, attr_filters
from tracehouse.storage import queries_logs as qlogs
from tracehouse.storage import queries_snapshots as qsnap
from tracehouse.storage import queries_telemetry as qtel
from tracehouse.storage import queries_traces as qtr
from tracehouse.storage.limits import RAW_MAX_DAYS

from . import compare, figures, figures_explore, flamegraph, snapshots, waterfall
from .render import render, view_from

_NS = 1_000_000_000
FLAME_SNAPSHOTS = 300
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


def _float(name: str, v: str | None) -> float | None:
    if v is None or v.strip() == "":
        return None
    try:
        return float(v)
    except ValueError:
        raise InvalidParameter(f"{name} must be a number") from None


def traces_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/traces", response_class=HTMLResponse)
    def traces_page(request: Request):
        view = view_from(request)
        q = request.query_params
        f = {k: (q.get(k) or "").strip() for k in ("service", "operation", "min_ms", "max_ms", "status", "calls")}
        attrs = [a for a in q.getlist("attr") if a.strip()]
        limit = 50
        results = qtr.search(
            request.app.state.store, view.tr, service=f["service"] or None, operation=f["operation"] or None,
            min_duration_ms=_float("min_ms", f["min_ms"]), max_duration_ms=_float("max_ms", f["max_ms"]),
            status=f["status"] or None, attrs=attr_filters.parse_filters(attrs), limit=400 if f["calls"] else limit)
        if f["calls"]:  # an edge of the service map: traces through both services
            results = [t for t in results if f["calls"] in t["services"]][:limit]
        longest = max((t["duration_ms"] for t in results), default=0) or 1
        for t in results:
            t["bar_pct"] = max(0.5, round(100 * t["duration_ms"] / longest, 2))
        services = sorted({s for t in results for s in t["services"]})
        return render(request, "traces.html", view, title="Traces", f=f, attrs=attrs, results=results,
                      fig=figures.trace_scatter(results), services=services)

    @r.get("/traces/{trace_id}", response_class=HTMLResponse)
    def trace_page(request: Request, trace_id: str):
        view = view_from(request)
        store = request.app.state.store
        t = qtr.outline(store, trace_id)
        wf = waterfall.compact(t.pop("spans"))
        # logs of the trace: around its own time, not the page's range, and at most as long as a
        # query over raw logs may be (a span that ends 40 days after its trace began made the page
        # answer 400)
        start = t["start_ns"] - 60 * _NS
        end = t["start_ns"] + int(t["duration_ms"] * 1e6) + 600 * _NS
        tr = TimeRange(start, min(end, start + RAW_MAX_DAYS * 86400 * _NS))
        logs = qtel.logs(store, tr, trace_id=t["trace_id"], limit=500)
        snaps = [snapshots.brief(x) for x in logs if x["event_name"] == snapshots.EVENT]
        logs = [x for x in logs if x["event_name"] != snapshots.EVENT]
        return render(request, "trace.html", view, title=f"Trace {t['trace_id'][:12]}", t=t, wf=wf,
                      colors=dict(zip(wf["services"], wf["colors"])), ticks=waterfall.ticks(wf["total_ns"]),
                      logs=logs, snaps=snaps, logs_range=(tr.start_ns, tr.end_ns))

    @r.get("/compare", response_class=HTMLResponse)
    def compare_page(request: Request):
        """Two traces aligned by service and operation. ``a`` and ``b`` (or two ``t``) name them;
        with one, traces of the same root operation are offered."""
        view = view_from(request)
        q = request.query_params
        ids = [x.strip() for x in [q.get("a") or "", q.get("b") or ""] + q.getlist("t") if x and x.strip()]
        ctx = _compare_context(request.app.state.store, view.tr, ids)
        return render(request, "compare.html", view, title="Compare traces", **ctx)

    return _snapshot_routes(r)


def _snapshot_routes(r: APIRouter) -> APIRouter:
    @r.get("/snapshots", response_class=HTMLResponse)
    def snapshots_page(request: Request):
        view = view_from(request, default="24h")
        service = (request.query_params.get("service") or "").strip()
        recs = qtel.logs(request.app.state.store, view.tr, service=service or None, event_name=snapshots.EVENT,
                         limit=200)
        return render(request, "snapshots.html", view, title="Snapshots", service=service,
                      snaps=[snapshots.brief(x) for x in recs])

    @r.get("/snapshots/{sid:text}", response_class=HTMLResponse)
    def snapshot_page(request: Request, sid: str):
        view = view_from(request, default="24h")
        if _REQUEST_ID.match(sid):  # a snapshot request (an alert's snapshot_id): its snapshot, once taken
            return _requested(request, sid)
        parsed = snapshots.parse_id(sid)
        if parsed is None:
            raise InvalidParameter("snapshot id must be <ts_ns>-<service> or a snapshot request id")
        ts, service = parsed
        recs = qtel.logs(request.app.state.store, TimeRange(ts, ts + 1), service=service,
                         event_name=snapshots.EVENT, limit=1000)
        rec = next((x for x in recs if x["time_ns"] == ts), None)
        if rec is None:
            raise NotFound(f"snapshot {sid} not found")
        snap: dict[str, Any] = snapshots.summarize(rec)
        flame = None
        body, _ = snapshots.parse_body(rec.get("body", ""))
        stacks = flamegraph.thread_stacks(body)
        if stacks:
            root = flamegraph.merge(stacks)
            flame = figures_explore.flame_figure(flamegraph.icicle(root), f"Flame graph of {len(stacks)} threads")
        return render(request, "snapshot.html", view, title=f"Snapshot {service}", snap=snap, flame=flame)

    @r.get("/flamegraph", response_class=HTMLResponse)
    def flamegraph_page(request: Request):
        """Every thread of every thread snapshot of a service over the range, merged."""
        view = view_from(request)
        service = (request.query_params.get("service") or "").strip()
        ctx: dict[str, Any] = {"service": service, "fig": None, "top": [], "snapshots": 0, "samples": 0,
                               "services": []}
        store = request.app.state.store
        if service:
            recs = qlogs.thread_snapshots(store, view.tr, service, FLAME_SNAPSHOTS)
            stacks = []
            for rec in recs:
                body, _ = snapshots.parse_body(rec["body"])
                got = flamegraph.thread_stacks(body)
                ctx["snapshots"] += 1 if got else 0
                stacks.extend(got)
            if stacks:
                root = flamegraph.merge(stacks)
                ice = flamegraph.icicle(root)
                ctx.update(fig=figures_explore.flame_figure(ice, f"{service}: {len(stacks)} thread samples"),
                           top=flamegraph.top_self(root), truncated=ice["truncated"])
            ctx.update(samples=len(stacks), capped=len(recs) >= FLAME_SNAPSHOTS)
        else:
            ctx["services"] = qlogs.snapshot_services(store, view.tr)
        return render(request, "flamegraph.html", view, title="Flame graph" + (f" · {service}" if service else ""),
                      **ctx)

    return r


def _compare_context(store: Any, tr: TimeRange, ids: list[str]) -> dict[str, Any]:
    """What the compare page shows for one or two trace ids: both outlines and their alignment, or
    the first and traces of its root operation to pick from."""
    if len(ids) > 2:
        raise InvalidParameter("compare two traces: a and b")
    ctx: dict[str, Any] = {"a": None, "b": None, "cmp": None, "candidates": [], "ids": ids}
    if ids:
        ctx["a"] = qtr.outline(store, ids[0])
    if len(ids) == 2:
        ctx["b"] = qtr.outline(store, ids[1])
        cmp = compare.compare(ctx["a"], ctx["b"])
        ctx.update(cmp=cmp, fig=figures_explore.compare_figure(cmp["rows"]))
    elif ctx["a"] is not None:
        root = compare.root(ctx["a"])
        if root:
            found = qtr.search(store, tr, service=root[0], operation=root[1], limit=30)
            ctx["candidates"] = [t for t in found if t["trace_id"] != ctx["a"]["trace_id"]
                                 and (t["root_service"], t["root_operation"]) == root][:20]
        ctx["root"] = root
    for k in ("a", "b"):
        if ctx[k] is not None:
            ctx[k] = {key: v for key, v in ctx[k].items() if key != "spans"}
    return ctx


def _requested(request: Request, request_id: str):
    store = request.app.state.store
    req = qsnap.get_request(store, request_id)
    taken = qsnap.snapshots_for(store, request_id, req["requested_ns"])
    if taken:
        first = min(taken, key=lambda x: x["time_ns"])
        return RedirectResponse(f"/snapshots/{quote(snapshots.snapshot_id(first), safe='')}", status_code=303)
    return render(request, "error.html", None, title="Snapshot requested",
                  message=f"{req['kind']} snapshot of {req['service']} requested by {req['requested_by']} "
                          f"({req['reason']}): {req['status']}, nothing captured yet.")
