"""The Storage page: retention in effect per signal (with a form for admins) and disk use per
table and per day. The form is sent by ``static/app.js`` as JSON to ``PUT /api/storage/retention``
(state changes are JSON only: see ``crosssite.py``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tracehouse.storage import retention

from .api_storage import can_administer, storage_info
from .render import render

SIGNALS = tuple(retention.RETENTION_TABLES)


def storage_pages_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    def page(request: Request, status: int = 200, error: str = "", changed: dict | None = None):
        info = storage_info(request.app.state.store)
        return render(request, "storage.html", None, status_code=status, title="Storage", info=info,
                      signals=SIGNALS, can_change=can_administer(request), error=error, changed=changed,
                      max_days=retention.MAX_DAYS)

    @r.get("/storage", response_class=HTMLResponse)
    def storage_page(request: Request):
        return page(request)

    return r
