"""Module-level locks a forked child gets anew.

A lock that another thread of the parent held at the moment of a fork stays held for ever in the
child, where that thread does not exist: the child's first use of it waits for ever (a gunicorn
or uWSGI worker that hangs in the agent's after-fork hook, or never exports again). The agent's
threads take these locks in the master too (exports count, errors are recorded), so a fork can
land inside one. The standard library's ``logging`` renews its handlers' locks the same way.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

__all__ = ["renew_in_child"]


def renew_in_child(namespace: dict, *names: str, then: Callable[[], None] | None = None) -> None:
    """After a fork, bind ``names`` in ``namespace`` (a module's ``globals()``) to new, unlocked
    locks in the child, then run ``then`` (state the lock guarded that the child must reset)."""
    if not hasattr(os, "register_at_fork"):
        return

    def renew() -> None:
        for name in names:
            namespace[name] = threading.Lock()
        if then is not None:
            then()

    os.register_at_fork(after_in_child=renew)
