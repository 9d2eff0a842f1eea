"""Login, logout and the gate in front of pages, the API and /metrics (see ``auth.py`` for the rules)."""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from .auth import COOKIE, LOGIN_CSRF_COOKIE, OPEN_PATHS, ROLES, SESSION_S, Auth, _b64, has_role, require_role
from .auth import same as same_secret
from .links import current_path
from .render import render

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

log = logging.getLogger("tracehouse.dashboard")


def _safe_next(v: str | None) -> str:
    """``next=`` when it is a path of this site, else ``/services``. Browsers drop tabs and line
    breaks from a URL and treat ``\\`` as ``/``, so ``/<TAB>/evil.example`` would become
    ``//evil.example``: whitespace, control characters and backslashes are refused outright, not
    left to the encoding of the Location header."""
    if (v and v.startswith("/") and not v.startswith("//") and "\\" not in v and v.isprintable()
            and not any(c.isspace() for c in v) and len(v) <= 2000):
        return v
    return "/services"


def _is_metrics(path: str) -> bool:
    return path == "/metrics" or path.startswith("/metrics/")


def _unauthorized() -> JSONResponse:
    return JSONResponse({"error": "authentication required"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def install_auth(app: FastAPI, auth: Auth) -> None:
    """The gate (when any credential is configured) and, with users or API tokens, the login routes."""
    app.state.auth = auth
    if auth.enabled:
        app.include_router(_router(auth))
        app.include_router(_api_router(auth))
    if not auth.protects_metrics:
        return

    @app.middleware("http")
    async def gate(request: Request, call_next):
        path = request.url.path
        request.state.user = None
        if path.startswith(OPEN_PATHS):
            return await call_next(request)
        header = request.headers.get("authorization")
        cookie = request.cookies.get(COOKIE)
        if cookie and auth.shared_signouts is not None:
            await auth.shared_signouts.refresh_if_due()
        if _is_metrics(path):  # scraped with an API or ingest token, like the collector's /metrics
            if auth.metrics_ok(header) or auth.session(cookie) is not None:
                return await call_next(request)
            return _unauthorized()
        if not auth.enabled:
            return await call_next(request)
        principal = _principal(auth, request, header, cookie)
        if not isinstance(principal, dict):  # the answer refusing the request
            return principal
        request.state.user = principal
        return await call_next(request)


def _principal(auth: Auth, request: Request, header: str | None, cookie: str | None) -> dict[str, Any] | Response:
    """Who makes a request for a page or the API (a bearer token's principal on the API, else the
    session's), or the answer refusing it: 401 on the API and a redirect to sign in for a page
    without either, 403 for a change with a session but without its CSRF token, or by a viewer."""
    is_api = request.url.path.startswith("/api")
    principal = auth.bearer(header) if is_api else None
    if principal is None:
        principal = auth.session(cookie)
        if principal is None:
            if is_api:
                return _unauthorized()
            qs = f"?{request.url.query}" if request.url.query else ""
            return RedirectResponse(f"/login?next={quote(current_path(request) + qs, safe='')}", status_code=303)
        if request.method in UNSAFE and not same_secret(request.headers.get("x-csrf-token") or "", principal["csrf"]):
            return JSONResponse({"error": "CSRF token missing or wrong"}, status_code=403)
    if request.method in UNSAFE and not has_role(principal, "editor"):
        return JSONResponse({"error": "viewers cannot change anything"}, status_code=403)
    return principal


def _form_page(auth: Auth, request: Request, error: str, status: int, headers: dict[str, str] | None):
    """The sign-in form, with a fresh CSRF token in it and in a cookie for /login only."""
    token = _b64(os.urandom(18))
    resp = render(request, "login.html", None, status_code=status, title="Sign in", csrf=token, error=error,
                  next=_safe_next(request.query_params.get("next")), users=bool(auth.users),
                  tokens=bool(auth.tokens))
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login",
                    secure=_secure(request, auth))
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _router(auth: Auth) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    def form_page(request: Request, error: str = "", status: int = 200, headers: dict[str, str] | None = None):
        return _form_page(auth, request, error, status, headers)

    @r.get("/login")
    def login_form(request: Request):
        return form_page(request)

    @r.post("/login")
    async def login(request: Request):
        form = await request.form()
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
        if not cookie or not same_secret(str(form.get("csrf", "")), cookie):
            return form_page(request, "Your sign-in form expired; try again.", 403)
        token = str(form.get("token", "") or "")
        name = "" if token else str(form.get("username", ""))
        wait = auth.limiter.attempt(name, request.client.host if request.client else "", name in auth.users)
        if wait > 0:
            return form_page(request, "Too many sign-in attempts; try again later.", 429,
                             {"Retry-After": str(int(wait) + 1)})
        if token:
            session = auth.token_login(token)
        else:  # scrypt is slow on purpose: keep it off the event loop
            session = await run_in_threadpool(auth.login, name, str(form.get("password", "")))
        if session is None:
            return form_page(request, "Unknown user or wrong password." if not token else "Unknown token.", 401)
        auth.limiter.succeeded(name)
        resp = RedirectResponse(_safe_next(str(form.get("next", ""))), status_code=303)
        resp.set_cookie(COOKIE, auth.sign(session), max_age=SESSION_S, httponly=True, samesite="strict",
                        secure=_secure(request, auth))
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return resp

    @r.post("/logout")
    async def logout(request: Request):
        session = auth.session(request.cookies.get(COOKIE))
        form = await request.form()
        if session and not same_secret(str(form.get("csrf", "")), session["csrf"]):
            return JSONResponse({"error": "CSRF token missing or wrong"}, status_code=403)
        if session:
            auth.end(session)
            # signed out here at once; other replicas once the store has it: waited for a few seconds,
            # then counted, logged and written again later (signouts.py); the cookie is cleared anyway
            if auth.shared_signouts is not None:
                await auth.shared_signouts.record_within(session["csrf"], session["exp"])
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    return r


def _api_router(auth: Auth) -> APIRouter:
    r = APIRouter(prefix="/api/auth", tags=["auth"])

    @r.get("/me")
    def me(request: Request) -> dict[str, Any]:
        """Who this request is, and its role."""
        user = request.state.user or {}
        return {"name": user.get("u"), "role": user.get("r")}

    @r.get("/principals", dependencies=[Depends(require_role("admin"))])
    def principals() -> dict[str, Any]:
        """Admin only: the configured users and API tokens with their roles (never a secret)."""
        return {"roles": list(ROLES),
                "users": [{"name": n, "role": (u or {}).get("role", "viewer")} for n, u in sorted(auth.users.items())],
                "tokens": [{"name": t.name, "role": t.role} for t in auth.tokens]}

    return r


def _secure(request: Request, auth: Auth) -> bool:
    """Secure cookies over HTTPS (the scheme is the proxy's only when the proxy is trusted) and
    whenever the operator declared a trusted TLS proxy."""
    return auth.secure_cookies or request.url.scheme == "https"
