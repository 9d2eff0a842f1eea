"""Storage over the JSON API: ``GET /api/storage`` (backend, versions, retention in effect as the
tables report it, disk use per table and per day) and ``PUT /api/storage/retention`` (admin only:
new days per signal, applied at once).

Changing retention drops data, so it needs the ``admin`` role whenever users or API tokens are
configured. ``require_role(role)`` (a FastAPI dependency factory, as ``alerts_router`` takes) can
be passed in; without it :func:`admin_required` checks the session the auth gate put on
``request.state.user`` with ``auth.has_role``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request

from tracehouse.storage import json_body, queries_usage, retention

from .auth import has_role

__all__ = ["storage_router", "storage_info", "admin_required", "can_administer"]


def can_administer(request: Request) -> bool:
    """Open servers (no users, no tokens: loopback) let anyone; otherwise the admin role."""
    auth = getattr(request.app.state, "auth", None)
    if auth is None or not auth.enabled:
        return True
    return has_role(getattr(request.state, "user", None), "admin")


def admin_required(request: Request) -> None:
    if not can_administer(request):
        raise HTTPException(403, "changing retention needs the admin role")


def storage_info(store) -> dict[str, Any]:
    parts = queries_usage.partitions(store)
    eff = retention.in_effect(store, parts=parts)
    return {"backend": store.backend.kind, "url": store.url.redacted(), "server_version": store.caps.version_string,
            "schema_version": store.schema_version(), "ttl_supported": store.caps.ttl,
            "retention_days": {sig: r["days"] for sig, r in eff.items()}, "retention": eff,
            "disk": queries_usage.disk_usage(store, parts)}


def storage_router(get_store, require_role: Callable[[str], Any] | None = None) -> APIRouter:
    r = APIRouter(prefix="/api/storage", tags=["storage"])
    admin = [Depends(require_role("admin"))] if require_role is not None else [Depends(admin_required)]

    @r.get("")
    def get_storage(request: Request) -> dict[str, Any]:
        return storage_info(get_store(request))

    @r.put("/retention", dependencies=admin)
    async def put_retention(request: Request) -> dict[str, Any]:
        body = json_body.parse(await request.body(), request.headers.get("content-type"))
        store = get_store(request)
        report = retention.set_days(store, body)
        return {"applied": report.to_dict(), "retention": retention.in_effect(store)}

    return r
