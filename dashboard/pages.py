"""HTML pages: services overview, service detail, service map, infrastructure (alerts: pages_alerts).
Routes are glue: parse the view, call storage queries, hand results to pure figure/layout code."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from tracehouse import pathtext  # noqa: F401  (registers the {name:text} path convertor)
from tracehouse.storage import InvalidParameter
from tracehouse.storage import queries_infra as qinfra
from tracehouse.storage import queries_map as qmap
from tracehouse.storage import queries_metrics as qm
from tracehouse.storage import queries_requests as qreq
from tracehouse.storage import queries_services as qsvc
from tracehouse.storage import queries_telemetry as qtel
from tracehouse.storage.limits import RAW_MAX_DAYS
from tracehouse.storage.timerange import NS, TimeRange

from . import figures, figures_explore, infra, servicemap_layout, snapshots, units
from .alerts_source import AlertSource
from .pages_alerts import firing_for_service
from .render import render, view_from

RESOURCE_PREFIXES = ("container.cpu.", "container.memory.", "process.")
PROBE_UP, PROBE_DURATION = "tracehouse.probe.up", "tracehouse.probe.duration"
#: services drawn on the map page (the busiest): more make a map nobody can read, and a page of megabytes
MAP_SERVICES = 200
#: nodes (those services, then the most called dependencies) and calls the map page draws: at these
#: caps a page is 0.27-0.42 MB and Chromium loads it in ~1.2 s; 5,000 of each were 4.5 MB and 5-12 s
MAP_NODES, MAP_EDGES = 300, 600


def _store(request: Request):
    return request.app.state.store


#: lines per resource chart: the instances (and attribute sets) with the highest values; a service
#: of hundreds of instances drew hundreds of lines (a chart nobody can read, a page of megabytes)
CHART_SERIES = 20


def _peak(series: dict[str, Any]) -> float:
    return max((p[1] for p in series["points"] if p[1] is not None), default=float("-inf"))


def _resources(store, tr, service: str) -> dict[str, Any]:
    """Resource charts (container and process metrics) and the probe table, from one read."""
    got = qm.service_resources(store, tr, service, RESOURCE_PREFIXES, (PROBE_UP, PROBE_DURATION),
                               qsvc.pick_step(tr, None))
    metrics = got["metrics"]
    figs = []
    for name in sorted(n for n in metrics if n.startswith(RESOURCE_PREFIXES)):
        every = metrics[name]["series"]
        top = sorted(every, key=lambda s: (-_peak(s), sorted(s["labels"].items())))[:CHART_SERIES]
        series = {"name": name, "series": [{"labels": s["labels"], "points": [[p[0], p[1]] for p in s["points"]]}
                                           for s in top]}
        title = name if len(every) <= CHART_SERIES else f"{name} (highest {len(top)} of {len(every)} series)"
        fig = figures.metric_figure(title, series, ("instance",), units.parse(metrics[name]["unit"], name))
        figs.append({"id": f"res-{len(figs)}", "fig": figures.in_window(fig, tr.start_s, tr.end_s)})
    probes: dict[str, dict[str, Any]] = {}
    for metric, key in ((PROBE_UP, "up"), (PROBE_DURATION, "duration")):
        by_target: dict[str, dict[int, tuple[int, float]]] = {}
        for s in metrics.get(metric, {}).get("series", []):
            steps = by_target.setdefault(s["labels"].get("probe.target") or "(unknown)", {})
            for t, _, last, lts in s["points"]:
                if last is not None and (t not in steps or lts > steps[t][0]):
                    steps[t] = (lts, last)  # the newest report of any instance in the step
        for target, steps in by_target.items():
            vals = [steps[t][1] for t in sorted(steps)]
            row = probes.setdefault(target, {"target": target, "up": None, "duration": None, "uptime": None})
            if vals:
                row[key] = vals[-1]
                if key == "up":
                    row["uptime"] = sum(1 for v in vals if v >= 1) / len(vals)
    return {"figs": figs, "probes": sorted(probes.values(), key=lambda p: p["target"]), "step_s": got["step_s"],
            "asked_step_s": got["asked_step_s"], "truncated": got["truncated"]}


def _service_page(request: Request, service: str, alerts: AlertSource | None):
    view = view_from(request)
    store = _store(request)
    tr = view.tr
    summary = qsvc.service_summary(store, service, tr)
    match = (request.query_params.get("q") or "").strip()
    listed = (qsvc.operation_listing(store, service, tr, match=match or None) if summary
              else {"operations": [], "total": 0, "truncated": False})
    ops = listed["operations"]
    series = qsvc.series(store, service, tr, has_entry=summary["has_entry"]) if summary else {"points": []}
    red = {k: figures.in_window(f, tr.start_s, tr.end_s) for k, f in figures.red_figures(series).items()}
    # the rate, error and latency charts read rollups (400 days); what reads raw rows covers their
    # longest range, the last RAW_MAX_DAYS of the window (a longer window answered 400 for the page)
    raw = TimeRange(max(tr.start_ns, tr.end_ns - RAW_MAX_DAYS * 86400 * NS), tr.end_ns)
    res = _resources(store, raw, service)
    # exemplars of the service's latency histograms: points on the latency chart that open their trace
    exemplars = qm.exemplars(store, raw, service, step_s=series.get("step_s") or 60) if summary else []
    figures_explore.with_exemplars(red["latency"], exemplars)
    failing = qreq.failing_requests(store, raw, service, 10) if summary else []
    slowest = qreq.slowest_requests(store, raw, service, 10, summary["p95_ms"]) if summary else []
    snaps = [snapshots.brief(x) for x in qtel.logs(store, raw, service=service, event_name=snapshots.EVENT,
                                                  limit=20)]
    return render(request, "service.html", view, title=service, service=service, summary=summary, ops=ops,
                  ops_total=listed["total"], ops_truncated=listed["truncated"], q=match,
                  firing=firing_for_service(alerts, service),
                  red=red, ops_fig=figures.operations_figure(ops) if ops else None, res=res,
                  failing=failing, slowest=slowest, snaps=snaps, exemplars=exemplars,
                  raw_days=RAW_MAX_DAYS if raw != tr else None)


def pages_router(alerts: AlertSource | None = None) -> APIRouter:
    """Services, service map and infrastructure pages; ``alerts`` gives the service page its firing alerts."""
    r = APIRouter(include_in_schema=False)

    @r.get("/", response_class=HTMLResponse)
    def home(request: Request):
        qs = request.url.query
        return RedirectResponse("/services" + (f"?{qs}" if qs else ""), status_code=307)

    @r.get("/services", response_class=HTMLResponse)
    def services_page(request: Request):
        view = view_from(request)
        store = _store(request)
        match = (request.query_params.get("q") or "").strip()
        got = qsvc.listing(store, view.tr, qsvc.PAGE_SERVICES, match or None)
        sparks = qsvc.sparklines(store, view.tr, limit=qsvc.PAGE_SERVICES, match=match or None)
        for row in got["services"]:
            row["spark"] = figures.sparkline(sparks.get(row["service"], []))
        return render(request, "services.html", view, title="Services", services=got["services"],
                      total=got["total"], truncated=got["truncated"], q=match)

    @r.get("/services/{service:text}", response_class=HTMLResponse)
    def service_page(request: Request, service: str):
        return _service_page(request, service, alerts)

    @r.get("/service", response_class=HTMLResponse)
    def service_page_by_query(request: Request):
        """The same page for any name; links use it where the path form cannot work (``links.service_href``)."""
        name = request.query_params.get("name")
        if name is None:
            raise InvalidParameter("name is required: /service?name=<service>")
        return _service_page(request, name, alerts)

    @r.get("/service-map", response_class=HTMLResponse)
    def service_map_page(request: Request):
        view = view_from(request)
        graph = servicemap_layout.busiest(qmap.service_map(_store(request), view.tr, MAP_SERVICES), MAP_NODES,
                                          MAP_EDGES)
        lay = _with_trace_filters(servicemap_layout.layout(graph), graph)
        return render(request, "service_map.html", view, title="Service map", graph=graph, lay=lay)

    @r.get("/infrastructure", response_class=HTMLResponse)
    def infrastructure_page(request: Request):
        view = view_from(request)
        store = _store(request)
        got = qinfra.infra_latest(store, view.tr)
        latest = got["rows"]
        unit_of = {r["name"]: r["unit"] for r in latest}
        grouped = infra.group_infra(latest)
        figs = _infra_figures(store, view.tr, unit_of) if grouped["hosts"] or grouped["containers"] else []
        return render(request, "infrastructure.html", view, title="Infrastructure", infra=grouped, figs=figs,
                      total=got["total"], truncated=got["truncated"])

    return r


def _with_trace_filters(lay: dict[str, Any], graph: dict[str, Any]) -> dict[str, Any]:
    """Each edge's link to its traces: through the caller; for service → service edges, through the
    callee too."""
    kinds = {n["id"]: n["kind"] for n in graph["nodes"]}
    for e in lay["edges"]:
        e["filters"] = {"service": e["source"]}
        if kinds.get(e["target"]) == "service":
            e["filters"]["calls"] = e["target"]
    return lay


INFRA_CHARTS = ("system.cpu.utilization", "system.memory.usage", "container.cpu.utilization", "container.memory.usage")


def _infra_figures(store: Any, tr: Any, unit_of: dict[str, str]) -> list[dict[str, Any]]:
    """The infrastructure page's charts, those of ``INFRA_CHARTS`` that have lines in the range."""
    step = qsvc.pick_step(tr, None)
    figs: list[dict[str, Any]] = []
    for name in INFRA_CHARTS:
        lines = qinfra.infra_series(store, tr, name, step)
        if lines:
            fig = figures.xy_figure(name, lines, units.parse(unit_of.get(name), name))
            fig = figures.in_window(fig, tr.start_s, tr.end_s)
            figs.append({"id": f"infra-{len(figs)}", "fig": fig})
    return figs
