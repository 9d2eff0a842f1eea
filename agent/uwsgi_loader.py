"""The WSGI application uWSGI loads, wrapped in the lean WSGI middleware.

uWSGI imports the module named by ``--module``/``--wsgi``/``-w`` (``module:callable``, the
callable ``--callable`` or ``application`` by default) from C, so no framework hook sees a bare
WSGI callable. Under the ``pyuwsgi`` wheel the agent starts in the Python process that runs
uWSGI, before any module loads, with uWSGI's command line in ``sys.argv``: this instrumentor reads
the target there and puts an import hook on ``sys.meta_path`` that wraps the callable right after
its module runs (in the master, or in each worker with ``--lazy-apps``). A request is traced once
even when a framework hook (Flask) wraps the same application too. Not covered: applications
named in an ``--ini``/``--yaml`` file, ``--wsgi-file``/``--mount`` loads, and uWSGI binaries
that embed Python (their ``sys.argv`` is not uWSGI's command line).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from tracehouse.agent.wsgi import TracehouseWSGIMiddleware

__all__ = ["UwsgiInstrumentor", "target"]

_MODULE_FLAGS = ("--module", "--wsgi", "-w")
_UWSGI_NAMES = ("uwsgi", "pyuwsgi")


def target(argv: list[str]) -> tuple[str, str] | None:
    """``(module, callable)`` uWSGI will load, from its command line, or ``None``."""
    if not argv or os.path.basename(argv[0]) not in _UWSGI_NAMES:
        return None
    module = callable_name = None
    it = iter(argv[1:])
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in _MODULE_FLAGS or name == "--callable":
            if not eq:
                value = next(it, "")
            if name == "--callable":
                callable_name = value
            else:
                module = value
    if not module:
        return None
    module, _, attr = module.partition(":")
    return (module, attr or callable_name or "application") if module else None


def _wrap(module, attr: str) -> None:
    app = getattr(module, attr, None)
    if app is None or isinstance(app, TracehouseWSGIMiddleware) or not callable(app):
        return
    from tracehouse.agent.frameworks import is_asgi

    if not is_asgi(app):
        setattr(module, attr, TracehouseWSGIMiddleware(app))


class _WrapAfterImport:
    """A ``sys.meta_path`` finder for one module: the real spec, with the callable wrapped after
    the module's code ran."""

    def __init__(self, module: str, attr: str):
        self.module, self.attr = module, attr
        self._local = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.module or getattr(self._local, "busy", False):
            return None
        self._local.busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._local.busy = False
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return None
        run = loader.exec_module

        def exec_module(module, run=run):
            run(module)
            _wrap(module, self.attr)

        loader.exec_module = exec_module
        return spec

    def invalidate_caches(self):
        pass


class UwsgiInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return ()

    def _instrument(self, **kwargs):
        found = target(sys.argv)
        if found is None:
            return
        module, attr = found
        if module in sys.modules:
            _wrap(sys.modules[module], attr)
            return
        self._finder = _WrapAfterImport(module, attr)
        sys.meta_path.insert(0, self._finder)

    def _uninstrument(self, **kwargs):
        finder = getattr(self, "_finder", None)
        if finder is not None and finder in sys.meta_path:
            sys.meta_path.remove(finder)
        self._finder = None
