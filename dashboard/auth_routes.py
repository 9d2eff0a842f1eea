"""Login, logout and the gate in front of pages and the API (installed only when auth is on)."""

from __future__ import annotations

import hmac
import os
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from .auth import COOKIE, LOGIN_CSRF_COOKIE, OPEN_PATHS, SESSION_S, Auth, _b64, has_role
from .render import render

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def _safe_next(v: str | None) -> str:
    return v if v and v.startswith("/") and not v.startswith("//") and "\\" not in v else "/services"


def install_auth(app: FastAPI, auth: Auth) -> None:
    app.state.auth = auth
    app.include_router(_router(auth))

    @app.middleware("http")
    async def gate(request: Request, call_next):
        path = request.url.path
        request.state.user = None
        if path.startswith(OPEN_PATHS):
            return await call_next(request)
        session = auth.session(request.cookies.get(COOKIE))
        is_api = path.startswith("/api")
        if is_api and auth.token_ok(request.headers.get("authorization")):
            request.state.user = {"u": "token", "r": "editor"}
            return await call_next(request)
        if session is None:
            if is_api or not auth.users:
                # pages stay open when only API tokens are configured (no one could log in)
                if not is_api:
                    return await call_next(request)
                return JSONResponse({"error": "authentication required"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            qs = f"?{request.url.query}" if request.url.query else ""
            return RedirectResponse(f"/login?next={quote(path + qs, safe='')}", status_code=303)
        if request.method in UNSAFE:
            sent = request.headers.get("x-csrf-token")
            if sent is None and request.headers.get("content-type", "").startswith(
                    ("application/x-www-form-urlencoded", "multipart/form-data")):
                await request.body()  # cached, so the route can still read the form after the gate
                sent = (await request.form()).get("csrf")
            if not sent or not hmac.compare_digest(str(sent), session["csrf"]):
                return JSONResponse({"error": "CSRF token missing or wrong"}, status_code=403)
            if not has_role(session, "editor"):
                return JSONResponse({"error": "viewers cannot change anything"}, status_code=403)
        request.state.user = session
        return await call_next(request)


def _router(auth: Auth) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    def form_page(request: Request, error: str = "", status: int = 200):
        token = _b64(os.urandom(18))
        resp = render(request, "login.html", None, status_code=status, title="Sign in", csrf=token, error=error,
                      next=_safe_next(request.query_params.get("next")), enabled=bool(auth.users))
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login")
        return resp

    @r.get("/login")
    def login_form(request: Request):
        return form_page(request)

    @r.post("/login")
    async def login(request: Request):
        form = await request.form()
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
        if not cookie or not hmac.compare_digest(str(form.get("csrf", "")), cookie):
            return form_page(request, "Your sign-in form expired; try again.", 403)
        session = auth.login(str(form.get("username", "")), str(form.get("password", "")))
        if session is None:
            return form_page(request, "Unknown user or wrong password.", 401)
        resp = RedirectResponse(_safe_next(str(form.get("next", ""))), status_code=303)
        resp.set_cookie(COOKIE, auth.sign(session), max_age=SESSION_S, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return resp

    @r.post("/logout")
    async def logout(request: Request):
        session = auth.session(request.cookies.get(COOKIE))
        form = await request.form()
        if session and not hmac.compare_digest(str(form.get("csrf", "")), session["csrf"]):
            return JSONResponse({"error": "CSRF token missing or wrong"}, status_code=403)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    return r
