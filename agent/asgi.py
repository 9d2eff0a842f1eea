"""A lean ASGI middleware: one SERVER span and one duration record per HTTP request.

Its cost is the agent's cost per request, so the path is kept short (``bench/agent_overhead.py``
measures it): the headers are read in one pass, the host split is cached, the span is the lean
one of :mod:`.server_span`, and the in-flight entry is built as a plain tuple.
"""

from __future__ import annotations

from asyncio import current_task, get_running_loop
from threading import get_ident
from time import monotonic_ns, time_ns

from tracehouse.agent import errors
from tracehouse.agent import http_server as hs
from tracehouse.agent.metrics_process import LOOP_LAG
from tracehouse.agent.watchdog import INFLIGHT, Inflight
from tracehouse.agent.wsgi import ERROR_KEY, ROUTE_KEY

_MARK = "tracehouse.instrumented"
_tuple = tuple.__new__  # Inflight(...) without the NamedTuple's Python-level __new__


class TracehouseASGIMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _MARK in scope:
            return await self.app(scope, receive, send)
        try:
            inst, span, token, method, start, mono, loop = _begin(scope)
        except Exception as exc:
            errors.swallow("asgi request start", exc)
            return await self.app(scope, receive, send)
        status = 0

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        key = id(scope)
        INFLIGHT[key] = _tuple(Inflight, (mono, span, get_ident(), current_task(loop), method, scope["path"]))
        error = None
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            error = exc
            raise
        finally:
            INFLIGHT.pop(key, None)
            try:
                end = start + (monotonic_ns() - mono)  # a wall clock step is no time taken
                route = scope.get("route")
                if route is not None:
                    route = getattr(route, "path", None)
                    if route is not None and scope.get("root_path"):
                        route = scope["root_path"] + route
                else:  # set by a framework hook (Django), as in a WSGI environ
                    route = scope.get(ROUTE_KEY)
                    error = error or scope.get(ERROR_KEY)
                hs.detach(token)
                inst.active.add(-1, method)
                hs.finish(inst, span, method, route, status or (500 if error is not None else 0), start, end, error)
            except Exception as exc:
                errors.swallow("asgi request end", exc)


def _begin(scope):
    start, mono = time_ns(), monotonic_ns()
    inst = hs.current()
    loop = get_running_loop()
    if LOOP_LAG._loop is not loop:
        LOOP_LAG.ensure(loop)
    headers = scope["headers"]
    host, agent, traceparent, tracestate, baggage = _wanted_headers(headers)
    method = scope["method"]
    if method not in hs.KNOWN_METHODS:
        method = "_OTHER"
    parent = _parent(headers, traceparent, tracestate, baggage)
    attrs = {"http.request.method": method, "url.path": scope["path"], "url.scheme": scope.get("scheme", "http")}
    srv = scope.get("server")
    name, port = hs.host_and_port(host, srv[1] if srv else None)
    if name:
        attrs["server.address"] = name
    if port:
        attrs["server.port"] = port
    client = scope.get("client")
    if client:
        attrs["client.address"] = client[0]
    if agent:
        attrs["user_agent.original"] = agent
    span = inst.spans.start(method, parent, start, attrs)
    token = hs.attach(span, parent)
    scope[_MARK] = True
    inst.active.add(1, method)
    return inst, span, token, method, start, mono, loop


def _wanted_headers(headers):
    """Host, User-Agent, traceparent, tracestate and baggage (None when absent): one pass."""
    traceparent = tracestate = host = agent = baggage = None
    for k, v in headers:
        if k == b"host":
            host = v.decode("latin-1")
        elif k == b"user-agent":
            agent = v.decode("latin-1")
        elif k == b"traceparent":
            traceparent = v.decode("latin-1")
        elif k == b"tracestate":
            tracestate = v.decode("latin-1")
        elif k == b"baggage":
            baggage = v.decode("latin-1")
    return host, agent, traceparent, tracestate, baggage


def _parent(headers, traceparent, tracestate, baggage):
    """The caller's context as the configured propagation reads it (None: a new trace)."""
    prop = hs.PROPAGATION
    if prop.mode == "w3c":
        parent = hs.parent_context(traceparent, tracestate) if traceparent else None
        if baggage and prop.baggage:
            parent = hs.with_baggage(parent, baggage)
        return parent
    if prop.mode == "textmap":
        return hs.extract({k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers})
    return None
