"""``/api/docs``: the JSON API's reference, rendered here from the app's own OpenAPI document.

FastAPI's Swagger page loads its script and styles from a CDN, which the dashboard's CSP refuses
(``script-src 'self'``) and an offline deployment cannot reach: the page stayed blank. This page
is server-rendered, needs no script, and lists every operation with its parameters; the document
itself stays at ``/api/openapi.json`` for client generators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from .render import render

_METHODS = ("get", "post", "put", "patch", "delete")


def _type(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"] if s.get("type") != "null")
    if schema.get("type") == "array":
        return f"list of {_type(schema.get('items') or {})}"
    return str(schema.get("type") or schema.get("$ref", "").rsplit("/", 1)[-1] or "any")


def operations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every operation of ``spec``: method, path, summary, description and parameters."""
    out = []
    for path, item in sorted(spec.get("paths", {}).items()):
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            params = [{"name": p.get("name", ""), "in": p.get("in", ""), "required": bool(p.get("required")),
                       "type": _type(p.get("schema") or {}), "default": (p.get("schema") or {}).get("default")}
                      for p in op.get("parameters", [])]
            out.append({"method": method.upper(), "path": path, "summary": op.get("summary", ""),
                        "description": (op.get("description") or "").strip(), "params": params,
                        "body": "requestBody" in op, "anchor": f"{method}-{path}".replace("/", "-").strip("-")})
    return out


def api_docs_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/api/docs", response_class=HTMLResponse)
    def api_docs(request: Request):
        return render(request, "api_docs.html", None, title="API reference",
                      ops=operations(request.app.openapi()), version=request.app.version)

    return r
