"""The dashboard application: JSON API and pages on the HTTP port."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from .api import api_router, install_error_handlers


def create_app(settings: Any, store: Any) -> FastAPI:
    """Build the dashboard app around an open Store (no work at import)."""
    app = FastAPI(title="tracehouse", version="0.1.0", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.store = store
    app.state.settings = settings

    def get_store(request: Request):
        return request.app.state.store

    install_error_handlers(app)
    app.include_router(api_router(get_store))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
