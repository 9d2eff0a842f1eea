"""A lean ASGI middleware: one SERVER span and one duration record per HTTP request."""

from __future__ import annotations

from asyncio import current_task, get_running_loop
from threading import get_ident
from time import time_ns

from tracehouse.agent import errors
from tracehouse.agent import http_server as hs
from tracehouse.agent.metrics_process import LOOP_LAG
from tracehouse.agent.watchdog import INFLIGHT, Inflight

_MARK = "tracehouse.instrumented"


class TracehouseASGIMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _MARK in scope:
            return await self.app(scope, receive, send)
        try:
            inst, span, token, method, start, status_box, send_wrapper = _begin(scope, send)
        except Exception as exc:
            errors.swallow("asgi request start", exc)
            return await self.app(scope, receive, send)
        key = id(scope)
        INFLIGHT[key] = Inflight(start, span, get_ident(), current_task(), method, scope["path"])
        error = None
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            error = exc
            raise
        finally:
            INFLIGHT.pop(key, None)
            try:
                end = time_ns()
                route = scope.get("route")
                route = getattr(route, "path", None) if route is not None else None
                if route is not None and scope.get("root_path"):
                    route = scope["root_path"] + route
                status = status_box[0] or (500 if error is not None else 0)
                hs.detach(token)
                inst.active.add(-1, method)
                hs.finish(inst, span, method, route, status, start, end, error)
            except Exception as exc:
                errors.swallow("asgi request end", exc)


def _begin(scope, send):
    start = time_ns()
    inst = hs.current()
    LOOP_LAG.ensure(get_running_loop())
    traceparent = tracestate = host = agent = baggage = None
    headers = scope["headers"]
    for k, v in headers:
        if k == b"traceparent":
            traceparent = v.decode("latin-1")
        elif k == b"host":
            host = v.decode("latin-1")
        elif k == b"user-agent":
            agent = v.decode("latin-1")
        elif k == b"tracestate":
            tracestate = v.decode("latin-1")
        elif k == b"baggage":
            baggage = v.decode("latin-1")
    method = hs.method_of(scope["method"])
    prop = hs.PROPAGATION
    if prop.mode == "w3c":
        parent = hs.parent_context(traceparent, tracestate) if traceparent else None
        if baggage and prop.baggage:
            parent = hs.with_baggage(parent, baggage)
    elif prop.mode == "textmap":
        parent = hs.extract({k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers})
    else:
        parent = None
    attrs = {"http.request.method": method, "url.path": scope["path"],
             "url.scheme": scope.get("scheme", "http")}
    srv = scope.get("server")
    name, port = hs.split_host(host, srv[1] if srv else None)
    if name:
        attrs["server.address"] = name
    if port:
        attrs["server.port"] = port
    client = scope.get("client")
    if client:
        attrs["client.address"] = client[0]
    if agent:
        attrs["user_agent.original"] = agent
    span = inst.tracer.start_span(method, context=parent, kind=hs.SERVER, start_time=start)
    hs.set_attributes(span, attrs)
    token = hs.attach(span, parent)
    scope[_MARK] = True
    inst.active.add(1, method)
    status_box = [0]

    async def send_wrapper(message):
        if message["type"] == "http.response.start":
            status_box[0] = message["status"]
        await send(message)

    return inst, span, token, method, start, status_box, send_wrapper
