"""The alerts JSON API: a FastAPI router over an :class:`Engine`. Thin glue; the engine does the work.

``alerts_router(engine, require_role)``: ``engine`` is an Engine, or None (every route answers 503:
a dashboard running without the engine in its process). ``require_role(role)`` returns a FastAPI
dependency; reads need ``viewer``, changes ``editor``. Default: open.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from tracehouse import pathtext  # noqa: F401  (registers the {name:text} path convertor)
from tracehouse.storage import QueryLimitExceeded, QueryTimeout, StorageError, StorageUnavailable, json_body

from .errors import ReadOnlyRule, RuleError

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("tracehouse.alerts")


async def json_object(request: Request) -> dict[str, Any]:
    """A route's body: a JSON object, read strictly (``storage.json_body``): 400 otherwise, 415
    when sent as another type."""
    try:
        data = json_body.parse(await request.body(), request.headers.get("content-type"))
    except json_body.BodyError as e:
        raise HTTPException(415 if isinstance(e, json_body.NotJsonType) else 400, str(e)) from None
    if not isinstance(data, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return data


class RateLimiter:
    """A token bucket per key (``per_minute`` a minute, bursts of up to ``burst``), keys bounded."""

    def __init__(self, per_minute: float, burst: int = 5, max_keys: int = 10_000, clock=time.monotonic):
        self.rate, self.burst, self.max_keys, self.clock = per_minute / 60.0, max(1, burst), max_keys, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if allowed now, else the seconds to wait."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                if len(self._buckets) >= self.max_keys and key not in self._buckets:
                    self._buckets.clear()
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate if self.rate > 0 else 60.0


@contextmanager
def _rule_errors() -> Iterator[None]:
    """A rule or silence the engine refuses: 400 with its reason; a rule from a read-only file: 403."""
    try:
        yield
    except ReadOnlyRule as x:
        raise HTTPException(403, str(x)) from None
    except (RuleError, ValueError) as x:
        raise HTTPException(400, str(x)) from None


def _principal(request: Request) -> str:
    """Whom a rate budget is kept for: the signed-in user's or token's name, else the address. Not
    the session: it (its CSRF token and expiry are in it) made each sign-in a fresh budget."""
    user = getattr(request.state, "user", None)
    if isinstance(user, dict) and user.get("u"):
        return f"principal:{user.get('u')}"
    return f"address:{request.client.host if request.client else ''}"


def _preview_failed(x: StorageError) -> HTTPException:
    """A rule preview's storage failure as an answer: the database's text goes to the log only,
    with an id the caller gets; the store's own unavailability is 503 (try again later)."""
    error_id = uuid.uuid4().hex[:16]
    if isinstance(x, StorageUnavailable):
        log.warning("rule preview: store unavailable (error id %s): %s", error_id, x)
        return HTTPException(503, f"storage unavailable (error id {error_id})", headers={"Retry-After": "5"})
    log.warning("rule preview failed (error id %s): %s", error_id, x)
    what = ("timed out" if isinstance(x, QueryTimeout) else
            "read more than allowed" if isinstance(x, QueryLimitExceeded) else "failed")
    return HTTPException(400, f"the query {what} (error id {error_id})")


def _open(role: str) -> Callable[[], None]:
    def dep() -> None:
        return None

    return dep


def alerts_router(engine: Engine | None, require_role: Callable[[str], Any] | None = None,
                  previews_per_minute: float = 20) -> APIRouter:
    role = require_role or _open
    previews = RateLimiter(previews_per_minute)
    view, edit = [Depends(role("viewer"))], [Depends(role("editor"))]
    r = APIRouter(prefix="/api/alerts", tags=["alerts"])

    def eng() -> Engine:
        if engine is None:
            raise HTTPException(503, "the alert engine is not running")
        return engine

    _rule_routes(r, eng, view, edit, previews)
    _state_routes(r, eng, view, edit)
    return r


def _rule_routes(r: APIRouter, eng: Callable[[], Engine], view: list, edit: list, previews: RateLimiter) -> None:
    """Rules: list, create, preview (rate-limited per principal), read, replace, delete."""

    @r.get("/rules", dependencies=view)
    def list_rules() -> dict[str, Any]:
        return {"rules": eng().list_rules()}

    @r.post("/rules", dependencies=edit, status_code=201)
    def create_rule(body: dict[str, Any] = Depends(json_object)) -> dict[str, Any]:
        e = eng()
        if body.get("id") and e.get_rule(str(body["id"])) is not None:
            raise HTTPException(409, f"rule {body['id']} exists; PUT /api/alerts/rules/{body['id']} replaces it")
        with _rule_errors():
            return e.put_rule(body).to_dict()

    @r.post("/rules/preview", dependencies=edit)  # runs rule SQL: for those who may write rules (the gate says so too)
    def preview(request: Request, body: dict[str, Any] = Depends(json_object)) -> dict[str, Any]:
        wait = previews.take(_principal(request))
        if wait:
            raise HTTPException(429, "too many rule previews; try again shortly",
                                headers={"Retry-After": str(max(1, round(wait)))})
        try:
            with _rule_errors():
                return eng().preview(body)
        except StorageError as x:
            raise _preview_failed(x) from None

    @r.get("/rules/{rule_id:text}", dependencies=view)
    def get_rule(rule_id: str) -> dict[str, Any]:
        ar = eng().get_rule(rule_id)
        if ar is None:
            raise HTTPException(404, f"no rule {rule_id}")
        return ar.to_dict()

    @r.put("/rules/{rule_id:text}", dependencies=edit)
    def put_rule(rule_id: str, body: dict[str, Any] = Depends(json_object)) -> dict[str, Any]:
        with _rule_errors():
            return eng().put_rule(body, rule_id).to_dict()

    @r.delete("/rules/{rule_id:text}", dependencies=edit)
    def delete_rule(rule_id: str) -> dict[str, Any]:
        with _rule_errors():
            deleted = eng().delete_rule(rule_id)
        if not deleted:
            raise HTTPException(404, f"no rule {rule_id}")
        return {"deleted": rule_id}


def _state_routes(r: APIRouter, eng: Callable[[], Engine], view: list, edit: list) -> None:
    """What the engine holds: alerts, their history, silences, notification groups."""

    @r.get("", dependencies=view)
    def list_alerts() -> dict[str, Any]:
        return {"alerts": eng().alerts()}

    @r.get("/history", dependencies=view)
    def history(rule_id: str = "", limit: int = Query(200, ge=1, le=5000)) -> dict[str, Any]:
        return {"history": eng().history(rule_id, limit)}

    @r.get("/silences", dependencies=view)
    def silences() -> dict[str, Any]:
        return {"silences": eng().silences()}

    @r.post("/silences", dependencies=edit, status_code=201)
    def add_silence(request: Request, body: dict[str, Any] = Depends(json_object)) -> dict[str, Any]:
        user = getattr(request.state, "user", None)
        if isinstance(user, dict) and user.get("u"):
            # signed in (a user or a token): who made the silence is who is signed in, not what the
            # body says (an editor could otherwise record it as made by anyone)
            body = dict(body, createdBy=str(user["u"])[:200])
        with _rule_errors():
            return eng().add_silence(body)

    @r.delete("/silences/{silence_id}", dependencies=edit)
    def delete_silence(silence_id: str) -> dict[str, Any]:
        if not eng().delete_silence(silence_id):
            raise HTTPException(404, f"no silence {silence_id}")
        return {"deleted": silence_id}

    @r.get("/notifications", dependencies=view)
    def notifications() -> dict[str, Any]:
        return {"groups": eng().dispatcher.status()}
