"""The dashboard's own health: request latency by route as Prometheus metrics (a registry per app, no
global state), ``/metrics`` and ``/readyz``.

``RequestMetrics`` is pure ASGI middleware: after the response it reads the route FastAPI matched
(``scope["route"]``), so the label is the route's template (``/api/traces/{trace_id}``), never
the raw path (bounded cardinality). ``/metrics`` writes the app's own registry, or the process-wide
one the composition passes in (the app's registry is then registered into it). ``/readyz`` answers 503
with the reason when the store is unreachable or a check the composition passed in fails.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

__all__ = ["DashboardMetrics", "ReadyCheck", "RequestMetrics", "install_ops"]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ReadyCheck = Callable[[], "tuple[bool, str]"]
UNTRACED = ("/metrics", "/readyz", "/healthz", "/static/", "/favicon.ico")  # scrapes and probes make no spans


class DashboardMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.seconds = Histogram("tracehouse_dashboard_request_seconds",
                                 "Dashboard and API request latency (mostly storage queries), by route.",
                                 ["route", "method", "code"], registry=self.registry, buckets=BUCKETS)
        self.errors = Counter("tracehouse_dashboard_request_errors",
                              "Requests answered 5xx, by route.", ["route"], registry=self.registry)
        self.signouts_unrecorded = Counter(
            "tracehouse_dashboard_signouts_unrecorded",
            "Sign-outs the store did not take within their wait (written again later).", registry=self.registry)
        self.admission_wait = Histogram(
            "tracehouse_dashboard_admission_wait_seconds",
            "Time store-bound requests waited for their turn (fairness per principal).", registry=self.registry,
            buckets=BUCKETS)
        self.admission_refused = Counter(
            "tracehouse_dashboard_admission_refused",
            "Store-bound requests refused a turn: queue (429, the principal's queue was full), deadline (503, "
            "no turn within the wait), principals (503, too many principals waiting).", ["reason"],
            registry=self.registry)
        self.tracer: Any = None  # set when the server observes itself: a server span per request


class RequestMetrics:
    def __init__(self, app, metrics: DashboardMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        tracer = self.metrics.tracer
        if tracer is not None and scope["path"].startswith(UNTRACED):
            tracer = None
        span = contextlib.nullcontext() if tracer is None else tracer.start_as_current_span(
            f"{scope['method']} {scope['path'][:100]}", kind=SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "url.path": scope["path"][:500]})
        t0 = time.perf_counter()
        with span as current:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                code = status[0]
                self.metrics.seconds.labels(route=route, method=scope["method"], code=str(code)).observe(
                    time.perf_counter() - t0)
                if code >= 500:
                    self.metrics.errors.labels(route=route).inc()
                if current is not None:
                    current.update_name(f"{scope['method']} {route}")
                    current.set_attribute("http.route", route)
                    current.set_attribute("http.response.status_code", code)
                    if code >= 500:
                        current.set_status(Status(StatusCode.ERROR))


def install_ops(app: FastAPI, store, ready_checks: Iterable[ReadyCheck] = (),
                registry: CollectorRegistry | None = None, tracer: Any = None) -> None:
    metrics = DashboardMetrics()
    metrics.tracer = tracer
    app.state.metrics = metrics
    exposed = metrics.registry
    if registry is not None:
        registry.register(metrics.registry)
        exposed = registry
    checks = list(ready_checks)  # more (ok, reason) checks, passed in by the composition

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(exposed), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    @app.get("/readyz", include_in_schema=False)
    def readyz(request: Request) -> PlainTextResponse:
        ok, reason = (True, "ready") if store.ping() else (False, "store unreachable")
        for check in checks if ok else ():
            ok, reason = check()
            if not ok:
                break
        return PlainTextResponse(reason + "\n", status_code=200 if ok else 503)

    app.add_middleware(RequestMetrics, metrics=metrics)
