"""The dashboard application: JSON API and pages on the HTTP port."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import plotly
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from .alerts_source import AlertSource
from .api import api_router
from .api_snapshots import snapshots_router
from .api_storage import storage_router
from .auth import Auth, require_role
from .auth_routes import install_auth
from .bodylimit import MAX_BODY_BYTES, BodyLimit
from .crosssite import CrossSiteGuard
from .errors import install_error_handlers
from .fairness import FairAdmission, FairGate, running_for
from .ops import ReadyCheck, install_ops
from .pages import pages_router
from .pages_alerts import alerts_pages_router
from .pages_apidocs import api_docs_router
from .pages_explore import explore_api_router, explore_pages_router
from .pages_logs import logs_api_router, logs_pages_router
from .pages_storage import storage_pages_router
from .pages_traces import traces_router
from .security import SecurityHeaders
from .signouts import SignOuts

STATIC = os.path.join(os.path.dirname(__file__), "static")
PLOTLY_JS = os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js")


def create_app(settings: Any, store: Any, *, alerts: AlertSource | None = None,
               routers: Iterable[APIRouter] = (), ready_checks: Iterable[ReadyCheck] = (),
               registry: CollectorRegistry | None = None, tracer: Any = None) -> FastAPI:
    """Build the dashboard app around an open Store (no work at import).

    Collaborators from other components are passed in by the composition (``tracehouse/server.py``):
    ``alerts`` the alert engine the alerts pages read (None: the pages say it is not running here),
    ``routers`` more JSON API routers mounted beside the dashboard's own (the alerts API, guarded
    with :func:`~tracehouse.dashboard.auth.require_role`), ``ready_checks`` more ``() -> (ok, reason)``
    checks of ``/readyz``, ``registry`` the process's Prometheus registry that ``/metrics`` writes
    (the dashboard's own joins it; default: its own only), ``tracer`` an OpenTelemetry tracer for a
    server span per request (the server observing itself)."""
    # the API reference is our own page (pages_apidocs): FastAPI's Swagger and ReDoc pages load
    # from a CDN, which the CSP refuses and an offline deployment cannot reach
    app = FastAPI(title="tracehouse", version="0.1.0", docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.store = store
    app.state.settings = settings

    def get_store(request: Request):
        return request.app.state.store

    install_error_handlers(app)
    app.include_router(api_router(get_store))
    app.include_router(logs_api_router(get_store))
    app.include_router(explore_api_router(get_store))
    app.include_router(storage_router(get_store, require_role))
    app.include_router(snapshots_router(get_store, require_role("editor")))
    for router in routers:
        app.include_router(router)
    app.include_router(pages_router(alerts))
    app.include_router(alerts_pages_router(alerts))
    app.include_router(traces_router())
    app.include_router(logs_pages_router())
    app.include_router(explore_pages_router())
    app.include_router(storage_pages_router())
    app.include_router(api_docs_router())

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        # served from the installed plotly package: no CDN, works offline
        return FileResponse(PLOTLY_JS, media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(os.path.join(STATIC, "favicon.svg"), media_type="image/svg+xml")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    install_ops(app, store, ready_checks, registry, tracer)
    app.state.fairness = fair_gate(settings, store)
    # inside the auth gate (added next, so outside this): a turn is per signed-in principal
    app.add_middleware(FairAdmission, gate=app.state.fairness, metrics=app.state.metrics)
    auth = Auth(settings)
    if auth.enabled and store is not None:
        folder = dashboard_dir(settings)
        auth.shared_signouts = SignOuts(store, on_unrecorded=app.state.metrics.signouts_unrecorded.inc,
                                        path=os.path.join(folder, SIGNOUTS_FILE) if folder else "")
        app.router.on_shutdown.append(auth.shared_signouts.close)  # background retries end with the app
    install_auth(app, auth)
    app.add_middleware(CrossSiteGuard, allowed_hosts=getattr(settings, "allowed_hosts", None))
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, max_bytes=getattr(settings, "dashboard_max_body_bytes", MAX_BODY_BYTES),
                       timeout=getattr(settings, "client_timeout_seconds", 60.0))
    return app


def fair_gate(settings: Any, store: Any) -> FairGate:
    """Turns at the store for the dashboard's requests (``fairness.py``), from the settings."""
    return FairGate(running=running_for(store, settings),
                    per_principal=getattr(settings, "dashboard_running_per_client", 2),
                    queue=getattr(settings, "dashboard_queue_per_client", 16),
                    max_principals=getattr(settings, "dashboard_max_clients", 1000),
                    wait_s=getattr(settings, "dashboard_queue_wait_s", 15.0))


#: the file, in the dashboard's data directory, of the sign-outs the store did not take yet
SIGNOUTS_FILE = "unrecorded-signouts.json"


def dashboard_dir(settings: Any) -> str:
    """The dashboard's data directory (TRACEHOUSE_DASHBOARD_DIR; else next to the chDB directory, or
    ./tracehouse-dashboard; '' without a storage setting): sign-outs the store did not take wait there."""
    from tracehouse.storage.statefile import state_dir

    return state_dir(settings, "dashboard_dir", "dashboard")
