"""Run something when the host first imports a module, or at once when it has already.

Built on wrapt's post-import hooks (a finder on ``sys.meta_path`` that calls the hook right after
the module's code has run, before the importing statement gets it), the mechanism the
instrumentations already depend on. The agent uses it so that it neither imports libraries the
host never uses nor pays their import time at start-up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import wrapt

from tracehouse.agent import errors

_PENDING, _STARTED, _CANCELLED = 0, 1, 2


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
