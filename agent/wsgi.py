"""A lean WSGI middleware: one SERVER span and one duration record per HTTP request.

The span ends when the server closes the response iterable (PEP 3333), so streamed bodies
count in the duration. ``environ["tracehouse.route"]`` may be set by a framework hook (the
Flask and Django instrumentors do) to name the route, and ``environ["tracehouse.error"]`` to the
exception a framework answered with a 500 itself (Django), which no middleware sees raised.
"""

from __future__ import annotations

from threading import get_ident
from time import monotonic_ns, time_ns

from tracehouse.agent import errors
from tracehouse.agent import http_server as hs
from tracehouse.agent.watchdog import INFLIGHT, Inflight

ROUTE_KEY = "tracehouse.route"
ERROR_KEY = "tracehouse.error"
_tuple = tuple.__new__  # Inflight(...) without the NamedTuple's Python-level __new__
_MARK = "tracehouse.instrumented"


class TracehouseWSGIMiddleware:
    def __init__(self, app):
        self.app = app
        self.wrapped_app = app

    def __call__(self, environ, start_response):
        if _MARK in environ:
            return self.app(environ, start_response)
        try:
            req = _Request(environ, start_response)
        except Exception as exc:
            errors.swallow("wsgi request start", exc)
            return self.app(environ, start_response)
        try:
            result = self.app(environ, req.start_response)
        except BaseException as exc:
            req.end(exc)
            raise
        return _Body(result, req)


class _Request:
    __slots__ = ("inst", "span", "token", "method", "start", "mono", "status", "environ", "_start_response",
                 "done", "key")

    def __init__(self, environ, start_response):
        self.start = time_ns()
        self.mono = monotonic_ns()  # the duration's clock: a wall clock step is no time taken
        self.inst = inst = hs.current()
        self.environ = environ
        self._start_response = start_response
        self.status = 0
        self.done = False
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in hs.KNOWN_METHODS:
            method = "_OTHER"
        self.method = method
        parent = None
        prop = hs.PROPAGATION
        if prop.mode == "w3c":
            tp = environ.get("HTTP_TRACEPARENT")
            if tp:
                parent = hs.parent_context(tp, environ.get("HTTP_TRACESTATE"))
            if prop.baggage and environ.get("HTTP_BAGGAGE"):
                parent = hs.with_baggage(parent, environ["HTTP_BAGGAGE"])
        elif prop.mode == "textmap":
            parent = hs.extract({k[5:].lower().replace("_", "-"): v for k, v in environ.items()
                                 if k.startswith("HTTP_") and isinstance(v, str)})
        attrs = {"http.request.method": method, "url.path": environ.get("PATH_INFO", "") or "/",
                 "url.scheme": environ.get("wsgi.url_scheme", "http")}
        try:
            default_port = int(environ.get("SERVER_PORT") or 0) or None
        except ValueError:
            default_port = None
        name, port = hs.host_and_port(environ.get("HTTP_HOST") or environ.get("SERVER_NAME"), default_port)
        if name:
            attrs["server.address"] = name
        if port:
            attrs["server.port"] = port
        if environ.get("REMOTE_ADDR"):
            attrs["client.address"] = environ["REMOTE_ADDR"]
        if environ.get("HTTP_USER_AGENT"):
            attrs["user_agent.original"] = environ["HTTP_USER_AGENT"]
        self.span = inst.spans.start(method, parent, self.start, attrs)
        self.token = hs.attach(self.span, parent)
        environ[_MARK] = True
        inst.active.add(1, method)
        self.key = key = get_ident()
        INFLIGHT[key] = _tuple(Inflight, (self.mono, self.span, key, None, method, attrs["url.path"]))

    def start_response(self, status, headers, exc_info=None):
        try:
            self.status = int(status[:3])
        except (ValueError, TypeError):
            self.status = 0
        return self._start_response(status, headers, exc_info) if exc_info else \
            self._start_response(status, headers)

    def end(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        INFLIGHT.pop(self.key, None)
        try:
            end = self.start + (monotonic_ns() - self.mono)
            if error is None:
                error = self.environ.get(ERROR_KEY)
            status = self.status or (500 if error is not None else 0)
            try:
                hs.detach(self.token)
            except Exception:  # noqa: S110 - closed from another context (streamed body): harmless
                pass
            self.inst.active.add(-1, self.method)
            hs.finish(self.inst, self.span, self.method, self.environ.get(ROUTE_KEY), status, self.start, end,
                      error)
        except Exception as exc:
            errors.swallow("wsgi request end", exc)


class _Body:
    """Wraps the response iterable; ends the request span on ``close()``."""

    __slots__ = ("_it", "_req")

    def __init__(self, it, req: _Request):
        self._it = it
        self._req = req

    def __iter__(self):
        try:
            yield from self._it
        except BaseException as exc:
            self._req.end(exc)
            raise

    def close(self):
        try:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
        finally:
            self._req.end()
