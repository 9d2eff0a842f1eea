"""Snapshot requests over the JSON API: queue one, list them, read one back with its snapshots.

``POST /api/snapshots`` ``{"service", "instance"?, "kind": "threads"|"memory", "reason"?}`` → 201
``{"id", "status": "pending", ...}``; 400 on bad input. ``GET /api/snapshots[?service=&limit=]``
lists requests with their status (pending → taken by N instances, or expired);
``GET /api/snapshots/{id}`` adds the captured snapshots (the ``tracehouse.snapshot`` log records
whose ``snapshot.request_id`` is the id), bodies parsed.

Requesting is an editor action: pass ``require_role`` (a FastAPI dependency) to guard the POST
once dashboard users exist; the default leaves it open, like the rest of the API on loopback.
Who asked is recorded as ``requested_by``: the principal's name (``request.state.user["u"]``: a
user name or ``token:<name>``) when an auth layer sets it, else ``api@<client address>``.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from tracehouse.storage import InvalidParameter, json_body
from tracehouse.storage import queries_snapshots as qsnap

__all__ = ["snapshots_router"]


def _who(request: Request) -> str:
    user = getattr(request.state, "user", None)
    if isinstance(user, dict) and user.get("u"):
        return str(user["u"])[:200]  # the name only: never the session (its CSRF token) itself
    client = request.client.host if request.client else "unknown"
    return f"api@{client}"


def _parsed(rec: dict[str, Any]) -> dict[str, Any]:
    """The record with its body parsed, or as sent when the answer cannot carry it parsed. Any
    ingest client writes these bodies: read strictly (``storage.json_body``, orjson), and kept as
    text when not JSON, when holding a lone surrogate or a number past a double, or when nested too
    deep to be written back in the answer (orjson's 255 levels; FastAPI's encoder ran out of stack
    before that). The standard library's parser let each of these through to answer 500."""
    try:
        body = json_body.parse(rec["body"])
        orjson.dumps({"snapshots": [{"body": body}]})  # as deep as it sits in the answer
    except (json_body.BodyError, orjson.JSONEncodeError, TypeError):
        body = None
    return dict(rec, body=body if body is not None else rec["body"])


def snapshots_router(get_store, require_role: Any = None) -> APIRouter:
    r = APIRouter(prefix="/api/snapshots", tags=["snapshots"])
    guard = [Depends(require_role)] if require_role is not None else []

    @r.post("", status_code=201, dependencies=guard)
    async def create(request: Request) -> JSONResponse:
        data = json_body.parse(await request.body(), request.headers.get("content-type"))
        if not isinstance(data, dict):
            raise InvalidParameter("body must be a JSON object")
        unknown = set(data) - {"service", "instance", "kind", "reason"}
        if unknown:
            raise InvalidParameter(f"unknown fields {sorted(unknown)}")
        for k in ("service", "instance", "kind", "reason"):
            if data.get(k) is not None and not isinstance(data[k], str):
                raise InvalidParameter(f"{k} must be a string")
        store = get_store(request)
        rid = uuid.uuid4().hex
        row = qsnap.create_request(store, rid, data.get("service") or "", data.get("kind") or "",
                                   instance=data.get("instance") or "", reason=data.get("reason") or "",
                                   requested_by=_who(request))
        return JSONResponse({"id": rid, "status": "pending", "service": row["service"],
                             "instance": row["instance"] or None, "kind": row["kind"],
                             "requested_by": row["requested_by"], "requested_ns": row["requested_ns"]},
                            status_code=201)

    @r.get("")
    def list_all(request: Request, service: str | None = None, limit: int = 50) -> dict[str, Any]:
        return {"requests": qsnap.list_requests(get_store(request), service or None, limit)}

    @r.get("/{request_id}")
    def get_one(request: Request, request_id: str) -> Response:
        store = get_store(request)
        req = qsnap.get_request(store, request_id)
        snaps = [_parsed(s) for s in qsnap.snapshots_for(store, request_id, req["requested_ns"])]
        if snaps:
            req["status"] = "captured"
        # written by orjson, which _parsed checked can write every body: FastAPI's encoder recurses
        # per level and ran out of stack on a body some 200 levels deep
        return Response(orjson.dumps(dict(req, snapshots=snaps)), media_type="application/json")

    return r
