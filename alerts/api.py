"""The alerts JSON API: a FastAPI router over an :class:`Engine`. Thin glue; the engine does the work.

``alerts_router(engine, require_role)``: ``engine`` is an Engine or a callable returning one (or
None → 503, for a dashboard built before the engine). ``require_role(role)`` returns a FastAPI
dependency; reads need ``viewer``, changes ``editor``. Default: open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query

from tracehouse.storage import StorageError

from .rules import RuleError


def _open(role: str) -> Callable[[], None]:
    def dep() -> None:
        return None

    return dep


def alerts_router(engine: Any, require_role: Callable[[str], Any] | None = None) -> APIRouter:
    role = require_role or _open
    view, edit = [Depends(role("viewer"))], [Depends(role("editor"))]
    r = APIRouter(prefix="/api/alerts", tags=["alerts"])

    def eng():
        e = engine() if callable(engine) and not hasattr(engine, "run_once") else engine
        if e is None:
            raise HTTPException(503, "the alert engine is not running")
        return e

    def bad(e: Exception) -> HTTPException:
        return HTTPException(400, str(e))

    @r.get("", dependencies=view)
    def list_alerts() -> dict[str, Any]:
        return {"alerts": eng().alerts()}

    @r.get("/rules", dependencies=view)
    def list_rules() -> dict[str, Any]:
        return {"rules": eng().list_rules()}

    @r.post("/rules", dependencies=edit, status_code=201)
    def create_rule(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        e = eng()
        if body.get("id") and e.get_rule(str(body["id"])) is not None:
            raise HTTPException(409, f"rule {body['id']} exists; PUT /api/alerts/rules/{body['id']} replaces it")
        try:
            return e.put_rule(body).to_dict()
        except (RuleError, ValueError) as x:
            raise bad(x) from None

    @r.post("/rules/preview", dependencies=view)
    def preview(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        try:
            return eng().preview(body)
        except (RuleError, ValueError) as x:
            raise bad(x) from None
        except StorageError as x:
            raise HTTPException(400, f"query failed: {x}") from None

    @r.get("/rules/{rule_id:path}", dependencies=view)
    def get_rule(rule_id: str) -> dict[str, Any]:
        ar = eng().get_rule(rule_id)
        if ar is None:
            raise HTTPException(404, f"no rule {rule_id}")
        return ar.to_dict()

    @r.put("/rules/{rule_id:path}", dependencies=edit)
    def put_rule(rule_id: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        try:
            return eng().put_rule(body, rule_id).to_dict()
        except PermissionError as x:
            raise HTTPException(403, str(x)) from None
        except (RuleError, ValueError) as x:
            raise bad(x) from None

    @r.delete("/rules/{rule_id:path}", dependencies=edit)
    def delete_rule(rule_id: str) -> dict[str, Any]:
        try:
            if not eng().delete_rule(rule_id):
                raise HTTPException(404, f"no rule {rule_id}")
        except PermissionError as x:
            raise HTTPException(403, str(x)) from None
        return {"deleted": rule_id}

    @r.get("/history", dependencies=view)
    def history(rule_id: str = "", limit: int = Query(200, ge=1, le=5000)) -> dict[str, Any]:
        return {"history": eng().history(rule_id, limit)}

    @r.get("/silences", dependencies=view)
    def silences() -> dict[str, Any]:
        return {"silences": eng().silences()}

    @r.post("/silences", dependencies=edit, status_code=201)
    def add_silence(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        try:
            return eng().add_silence(body)
        except (RuleError, ValueError) as x:
            raise bad(x) from None

    @r.delete("/silences/{silence_id}", dependencies=edit)
    def delete_silence(silence_id: str) -> dict[str, Any]:
        if not eng().delete_silence(silence_id):
            raise HTTPException(404, f"no silence {silence_id}")
        return {"deleted": silence_id}

    @r.get("/notifications", dependencies=view)
    def notifications() -> dict[str, Any]:
        return {"groups": eng().dispatcher.status()}

    return r
