"""Run something when the host first imports a module, or at once when it has already.

Built on wrapt's post-import hooks (a finder on ``sys.meta_path`` that calls the hook right after
the module's code has run, before the importing statement gets it), the mechanism the
instrumentations already depend on. The agent uses it so that it neither imports libraries the
host never uses nor pays their import time at start-up.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

import wrapt
import wrapt.importer

from tracehouse.agent import errors

_PENDING, _STARTED, _CANCELLED = 0, 1, 2


def _renew_wrapt_lock() -> None:
    """wrapt's finder takes one module-level lock for every import the process makes once a hook is
    registered. A fork while another thread holds it (an export thread importing lazily while
    gunicorn forks a worker) would leave the child's first import waiting for ever: the child gets
    a new one, as :mod:`.forklocks` does for the agent's own locks."""
    if isinstance(getattr(wrapt.importer, "_post_import_hooks_lock", None), type(threading.RLock())):
        wrapt.importer._post_import_hooks_lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_wrapt_lock)


class Deferred:
    """Call ``fn()`` once: when any of ``modules`` is first imported, or now when one already is.

    ``fn`` runs in the importing thread, outside any lock of ours (it may import other modules);
    an exception in it is swallowed, never raised into the host's import. ``cancel()`` stops a
    call that has not started.
    """

    def __init__(self, modules: Iterable[str], fn: Callable[[], object], what: str):
        self._fn, self._what = fn, what
        self._lock = threading.Lock()
        self._state = _PENDING
        for name in modules:
            wrapt.register_post_import_hook(self._fire, name)
            if self._state != _PENDING:
                break

    @property
    def pending(self) -> bool:
        return self._state == _PENDING

    def cancel(self) -> None:
        with self._lock:
            if self._state == _PENDING:
                self._state = _CANCELLED

    def _fire(self, module) -> None:
        with self._lock:
            if self._state != _PENDING:
                return
            self._state = _STARTED
        try:
            self._fn()
        except Exception as exc:  # an import of the host's must never fail because of the agent
            errors.swallow(self._what, exc)
