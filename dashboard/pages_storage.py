"""The Storage page: retention in effect per signal (with a form for admins) and disk use per
table and per day. The form posts to ``/storage/retention`` (CSRF field checked by the auth gate)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from tracehouse.storage import InvalidParameter, retention

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

    @r.post("/storage/retention", response_class=HTMLResponse)
    async def change_retention(request: Request):
        if not can_administer(request):
            return page(request, 403, "Changing retention needs the admin role.")
        form = await request.form()
        current = request.app.state.store.retention()
        wanted = {s: str(form.get(s, "")).strip() for s in SIGNALS if str(form.get(s, "")).strip()}
        changes = {s: v for s, v in wanted.items() if v != str(current.get(s))}
        if not changes:
            return RedirectResponse("/storage", status_code=303)
        try:
            retention.set_days(request.app.state.store, changes)
        except InvalidParameter as e:
            return page(request, 400, str(e))
        return RedirectResponse("/storage?changed=" + ",".join(sorted(changes)), status_code=303)

    return r
