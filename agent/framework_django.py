"""Django under any server: its own ``runserver``, a WSGI server (gunicorn, uWSGI, mod_wsgi) or an
ASGI one (uvicorn, daphne, hypercorn).

- ``WSGIHandler.__call__`` and ``ASGIHandler.__call__`` go through the lean middlewares, so every
  request gets one SERVER span and one duration record however the handler is served (a server
  layer that wrapped the app already marked the request: it is traced once).
- ``BaseHandler.resolve_request`` names the route: the matched URL pattern, ``/items/<int:pk>``.
- A view's exception never reaches a middleware (Django answers it with a 500 page), so the
  ``got_request_exception`` signal hands it to the span: the exception event, the ``error.type``
  and the span status come from it, as they do for the other frameworks.

Each class is patched when its module has run (at once when it has already): Django's handler
modules import one another, so one of them may still be running when another is done.
"""

from __future__ import annotations

import functools
import sys

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from tracehouse.agent.asgi import TracehouseASGIMiddleware
from tracehouse.agent.on_import import Deferred
from tracehouse.agent.patching import patch as _patch
from tracehouse.agent.patching import unpatch as _unpatch
from tracehouse.agent.wsgi import ERROR_KEY, ROUTE_KEY, TracehouseWSGIMiddleware


def _carrier(request) -> dict | None:
    """Where the middleware looks: the WSGI environ, or the ASGI scope."""
    scope = getattr(request, "scope", None)
    return scope if isinstance(scope, dict) else getattr(request, "environ", None)


def _wsgi() -> None:
    from django.core.handlers.wsgi import WSGIHandler

    def make(original):
        @functools.wraps(original)
        def __call__(self, environ, start_response):
            return TracehouseWSGIMiddleware(functools.partial(original, self))(environ, start_response)
        return __call__

    _patch(WSGIHandler, "__call__", make)


def _asgi() -> None:
    from django.core.handlers.asgi import ASGIHandler

    def make(original):
        @functools.wraps(original)
        async def __call__(self, scope, receive, send):
            await TracehouseASGIMiddleware(functools.partial(original, self))(scope, receive, send)
        return __call__

    _patch(ASGIHandler, "__call__", make)


def _resolve() -> None:
    from django.core.handlers.base import BaseHandler

    def make(original):
        @functools.wraps(original)
        def resolve_request(self, request):
            match = original(self, request)
            route = getattr(match, "route", None)
            carrier = _carrier(request)
            if isinstance(route, str) and carrier is not None:
                carrier[ROUTE_KEY] = route if route.startswith(("/", "^")) else "/" + route
            return match
        return resolve_request

    _patch(BaseHandler, "resolve_request", make)


def _on_exception(sender=None, request=None, **kwargs) -> None:
    error = sys.exc_info()[1]
    carrier = _carrier(request)
    if error is not None and carrier is not None:
        carrier[ERROR_KEY] = error


class DjangoInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return ("django >= 3.2",)

    def _instrument(self, **kwargs):
        def signal() -> None:
            from django.core.signals import got_request_exception

            got_request_exception.connect(_on_exception, weak=False, dispatch_uid="tracehouse")

        self._later = [Deferred(("django.core.handlers.wsgi",), _wsgi, "instrument Django WSGI"),
                       Deferred(("django.core.handlers.asgi",), _asgi, "instrument Django ASGI"),
                       Deferred(("django.core.handlers.base",), _resolve, "instrument Django routes"),
                       Deferred(("django.core.signals",), signal, "instrument Django errors")]

    def _uninstrument(self, **kwargs):
        for later in getattr(self, "_later", ()):
            later.cancel()
        for module, owner, name in (("django.core.handlers.wsgi", "WSGIHandler", "__call__"),
                                    ("django.core.handlers.asgi", "ASGIHandler", "__call__"),
                                    ("django.core.handlers.base", "BaseHandler", "resolve_request")):
            if module in sys.modules:
                _unpatch(getattr(sys.modules[module], owner), name)
        if "django.core.signals" in sys.modules:
            sys.modules["django.core.signals"].got_request_exception.disconnect(dispatch_uid="tracehouse")
