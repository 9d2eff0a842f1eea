"""Instrumentors that put the lean middlewares into web frameworks and servers.

* Starlette/FastAPI: ``Starlette.build_middleware_stack`` is wrapped so the app's outermost
  layer is :class:`~tracehouse.agent.asgi.TracehouseASGIMiddleware` (the router fills
  ``scope["route"]``, which names the span). FastAPI's own native telemetry (0.16x) is turned
  off while this is instrumented, so a request has one server span, not two (disable the
  ``starlette`` instrumentation to get FastAPI's back).
* uvicorn: ``Config.load`` wraps any other ASGI app it loads; the agent flushes when a signal
  stopped the server (uvicorn ends the process with that signal, so ``atexit`` does not run).
* gunicorn: ``BaseApplication.wsgi`` wraps the WSGI app it loads (ASGI apps are left alone).
* Flask: ``Flask.wsgi_app`` is wrapped and a ``request_started`` hook names the route.
* uWSGI (``pyuwsgi``): the ``--module`` application is wrapped when it loads (:mod:`.uwsgi_loader`).

A request is traced once whichever layers saw it (the middlewares mark the scope/environ).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from tracehouse.agent.asgi import TracehouseASGIMiddleware
from tracehouse.agent.patching import ORIGINAL
from tracehouse.agent.patching import patch as _patch
from tracehouse.agent.patching import unpatch as _unpatch
from tracehouse.agent.wsgi import ROUTE_KEY, TracehouseWSGIMiddleware


def is_asgi(app) -> bool:
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(app)


class StarletteInstrumentor(BaseInstrumentor):
    """FastAPI and every other Starlette application."""

    def instrumentation_dependencies(self):
        return ("starlette >= 0.13",)

    def _instrument(self, **kwargs):
        from starlette.applications import Starlette

        def make(original):
            @functools.wraps(original)
            def build_middleware_stack(self):
                return TracehouseASGIMiddleware(original(self))
            return build_middleware_stack

        _patch(Starlette, "build_middleware_stack", make)
        # A subclass that builds its own stack without calling Starlette's (FastAPI) is patched too,
        # when it is made: Starlette is often first imported by FastAPI's own import, before the
        # FastAPI class exists; or at once when it exists already.
        self._patched = patched = [Starlette]
        original_hook = Starlette.__dict__.get("__init_subclass__")

        def adopt(cls) -> None:
            if "build_middleware_stack" in cls.__dict__:
                _patch(cls, "build_middleware_stack", make)
                patched.append(cls)
            _no_native_telemetry()

        def __init_subclass__(cls, **kw):
            if original_hook is not None:
                original_hook.__get__(None, cls)(**kw)
            else:
                super(Starlette, cls).__init_subclass__(**kw)
            adopt(cls)

        setattr(__init_subclass__, ORIGINAL, original_hook)
        Starlette.__init_subclass__ = classmethod(__init_subclass__)
        for cls in _subclasses(Starlette):
            adopt(cls)

    def _uninstrument(self, **kwargs):
        from starlette.applications import Starlette

        hook = Starlette.__dict__.get("__init_subclass__")
        if hook is not None and hasattr(hook.__func__, ORIGINAL):
            original = getattr(hook.__func__, ORIGINAL)
            if original is None:
                del Starlette.__init_subclass__
            else:
                Starlette.__init_subclass__ = original
        for cls in getattr(self, "_patched", ()):
            _unpatch(cls, "build_middleware_stack")
        native = sys.modules.get("fastapi.telemetry._asgi")
        if native is not None and hasattr(native, "NativeTelemetry"):
            _unpatch(native.NativeTelemetry, "enabled")


def _subclasses(cls) -> list[type]:
    out, todo = [], list(cls.__subclasses__())
    while todo:
        c = todo.pop()
        if c not in out:
            out.append(c)
            todo.extend(c.__subclasses__())
    return out


def _no_native_telemetry() -> None:
    """FastAPI >= 0.16x traces natively once a provider is set: one server span is enough.

    Its module has run by the time the FastAPI class is made (``fastapi.applications`` imports it)."""
    native = sys.modules.get("fastapi.telemetry._asgi")
    if native is not None and hasattr(native, "NativeTelemetry"):
        _patch(native.NativeTelemetry, "enabled", lambda original: lambda self: False)


class UvicornInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return ("uvicorn >= 0.13",)

    def _instrument(self, **kwargs):
        from uvicorn.config import Config

        def make(original):
            @functools.wraps(original)
            def load(self):
                original(self)
                if not _is_starlette(self.loaded_app):
                    self.loaded_app = TracehouseASGIMiddleware(self.loaded_app)
            return load

        _patch(Config, "load", make)
        from uvicorn.server import Server

        if hasattr(Server, "capture_signals"):
            _patch(Server, "capture_signals", _flush_before_signal)

    def _uninstrument(self, **kwargs):
        from uvicorn.config import Config
        from uvicorn.server import Server

        _unpatch(Config, "load")
        if hasattr(Server, "capture_signals"):
            _unpatch(Server, "capture_signals")


def _flush_before_signal(original):
    """uvicorn (0.29+) raises the SIGTERM or SIGINT it caught again once it has shut down, with the
    handler it found: under the default one (a plain ``uvicorn``, gunicorn's ``UvicornWorker``)
    SIGTERM then ends the process without ``atexit``, so the agent never flushed: a deployment's
    stop lost the last seconds of spans, logs and metrics. Flush when the server is done, before."""

    @functools.wraps(original)
    @contextlib.contextmanager
    def capture_signals(self):
        with original(self):
            try:
                yield
            finally:
                if getattr(self, "_captured_signals", True):  # a signal stopped it (unknown: flush)
                    from tracehouse.agent import pipeline

                    agent = pipeline.current()
                    if agent is not None:
                        agent.force_flush(5.0)
    return capture_signals


def _is_starlette(app) -> bool:
    """Look through uvicorn's own wrappers for a Starlette app (instrumented at its own layer)."""
    seen = 0
    while app is not None and seen < 8:
        if any(c.__module__.startswith(("starlette.", "fastapi.")) for c in type(app).__mro__[:-1]):
            return True
        app = getattr(app, "app", None)
        seen += 1
    return False


class GunicornInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return ("gunicorn >= 19",)

    def _instrument(self, **kwargs):
        from gunicorn.app.base import BaseApplication

        def make(original):
            @functools.wraps(original)
            def wsgi(self):
                app = original(self)
                if isinstance(app, TracehouseWSGIMiddleware) or is_asgi(app):
                    return app
                self.callable = TracehouseWSGIMiddleware(app)
                return self.callable
            return wsgi

        _patch(BaseApplication, "wsgi", make)

    def _uninstrument(self, **kwargs):
        from gunicorn.app.base import BaseApplication

        _unpatch(BaseApplication, "wsgi")


class FlaskInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return ("flask >= 1.0",)

    def _instrument(self, **kwargs):
        import flask

        def make(original):
            @functools.wraps(original)
            def wsgi_app(self, environ, start_response):
                return TracehouseWSGIMiddleware(functools.partial(original, self))(environ, start_response)
            return wsgi_app

        def name_route(sender, **extra):
            rule = getattr(flask.request, "url_rule", None)
            if rule is not None:
                flask.request.environ[ROUTE_KEY] = rule.rule

        flask.request_started.connect(name_route, weak=False)
        self._hook = name_route
        _patch(flask.Flask, "wsgi_app", make)

    def _uninstrument(self, **kwargs):
        import flask

        flask.request_started.disconnect(self._hook)
        _unpatch(flask.Flask, "wsgi_app")


def _django():
    from tracehouse.agent.framework_django import DjangoInstrumentor

    return DjangoInstrumentor()


def _uwsgi():
    from tracehouse.agent.uwsgi_loader import UwsgiInstrumentor

    return UwsgiInstrumentor()


LEAN = {"starlette": StarletteInstrumentor, "uvicorn": UvicornInstrumentor,
        "gunicorn": GunicornInstrumentor, "flask": FlaskInstrumentor, "django": _django, "uwsgi": _uwsgi}
# Stock entry points the lean instrumentors replace (skipped when the lean one loaded).
REPLACES = {"starlette": ("fastapi", "starlette", "asgi"), "uvicorn": ("asgi",),
            "gunicorn": ("wsgi",), "flask": ("flask", "wsgi"), "django": ("django", "wsgi", "asgi"), "uwsgi": ()}
