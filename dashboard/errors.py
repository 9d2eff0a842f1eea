"""Every error answer of the dashboard's app in one shape: ``{"error": reason}`` (plus ``error_id``
where the server log has more) under ``/api``, an HTML error page with the same status elsewhere.

That covers our own exceptions (``api.HANDLED``), the ``HTTPException`` some routers raise (the alerts
API, role checks), unknown routes and methods (404, 405) and parameters FastAPI could not read,
which answer 400 with the parameter named, as the README promises for bad parameters (FastAPI's
own answers were ``{"detail": ...}``, and 422 with a list for a bad parameter type).

A path with one trailing slash too many is sent to the route without it by a relative redirect.
Starlette's own built an absolute URL from the request's ``Host`` header (``Host: evil.example``
→ ``Location: http://evil.example/...``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match

from tracehouse.storage import InvalidParameter, NotFound

from .api import HANDLED, clip_reason, error_response
from .links import current_path

__all__ = ["install_error_handlers"]


def install_error_handlers(app: FastAPI) -> None:
    app.router.redirect_slashes = False  # see _slash_redirect
    for exc in HANDLED:
        app.add_exception_handler(exc, _error_page)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _bad_parameter)
    _document(app)


ERROR_SCHEMA = {"type": "object", "required": ["error"], "title": "Error",
                "properties": {"error": {"type": "string", "description": "the reason"},
                               "error_id": {"type": "string", "description": "where the server log has more"}}}


def _document(app: FastAPI) -> None:
    """The OpenAPI document says what a bad parameter answers: 400 ``{"error"}``, not FastAPI's 422
    ``HTTPValidationError`` that it adds to every operation with parameters."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        error = {"description": "Bad parameter", "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/Error"}}}}
        for item in schema.get("paths", {}).values():
            for op in item.values():
                responses = op.get("responses") if isinstance(op, dict) else None
                if isinstance(responses, dict) and responses.pop("422", None) is not None:
                    responses.setdefault("400", error)
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        schemas["Error"] = ERROR_SCHEMA
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api")


def _answer(request: Request, resp: JSONResponse, message: str) -> Response:
    """``resp`` under /api, else an HTML page of the same status saying ``message``."""
    if _is_api(request):
        return resp
    from .render import render

    page = render(request, "error.html", None, status_code=resp.status_code, title=f"Error {resp.status_code}",
                  message=message)
    for name in ("connection", "allow", "retry-after", "www-authenticate"):
        if name in resp.headers:
            page.headers[name] = resp.headers[name]
    return page


def _error_page(request: Request, exc: Exception) -> Response:
    """JSON for /api, an HTML page (same status) for everything else."""
    resp = error_response(exc)
    return _answer(request, resp,
                   clip_reason(str(exc)) if isinstance(exc, (InvalidParameter, NotFound)) else resp.body.decode())


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404 and request.method in ("GET", "HEAD"):
        moved = _slash_redirect(request)
        if moved is not None:
            return moved
    message = clip_reason(exc.detail if isinstance(exc.detail, str) else str(exc.detail))
    if exc.status_code in (204, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=exc.headers)
    return _answer(request, JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers),
                   message)


def _bad_parameter(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    reasons = []
    for e in exc.errors()[:5]:
        loc = [str(x) for x in e.get("loc", ())]
        where = f"{loc[-1]} ({loc[0]})" if len(loc) > 1 else ".".join(loc)
        reasons.append(f"{where}: {e.get('msg', 'invalid')}"[:300])
    message = "; ".join(reasons) or "bad parameter"
    return _answer(request, JSONResponse({"error": message}, status_code=400), message)


def _slash_redirect(request: Request) -> Response | None:
    """A relative redirect to the path without its trailing slash when a route takes that path
    (as Starlette's ``redirect_slashes`` did, but never naming a host: a path that would start with
    ``//`` is a host to a browser, so it stays a 404)."""
    path, raw = request.url.path, current_path(request)
    if len(path) < 2 or not path.endswith("/") or not raw.endswith("/"):
        return None
    target = raw[:-1]
    if target.startswith("//") or not target.startswith("/"):
        return None
    scope: dict[str, Any] = dict(request.scope, path=path[:-1])
    if not any(route.matches(scope)[0] != Match.NONE for route in request.app.router.routes):
        return None
    query = request.url.query
    return RedirectResponse(target + (f"?{query}" if query else ""), status_code=307)
