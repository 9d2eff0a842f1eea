"""The agent's one error boundary: count, log at most once a minute per place, never raise.

Tests install a hook (``set_hook``) that turns every swallowed error into a test failure, the
way sentry's test-suite re-raises what its SDK swallowed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from tracehouse.agent.forklocks import renew_in_child

_log = logging.getLogger("tracehouse.agent")
_lock = threading.Lock()
renew_in_child(globals(), "_lock")
_last_logged: dict[str, float] = {}
_counts: Counter[str] = Counter()
_hook: Callable[[str, BaseException], None] | None = None
LOG_EVERY = 60.0


def set_hook(hook: Callable[[str, BaseException], None] | None) -> None:
    """Call ``hook(where, exc)`` for every swallowed error (tests use it)."""
    global _hook
    _hook = hook


def swallow(where: str, exc: BaseException) -> None:
    """Record an error the agent absorbed so that its host never sees it."""
    now = time.monotonic()
    with _lock:
        _counts[where] += 1
        last = _last_logged.get(where)
        should_log = last is None or now - last >= LOG_EVERY
        if should_log:
            _last_logged[where] = now
    if should_log:
        try:
            _log.warning("tracehouse agent: %s failed: %r (further errors here are counted, "
                         "logged at most once a minute)", where, exc)
        except Exception:  # noqa: S110 - logging itself must not break the host
            pass
    hook = _hook
    if hook is not None:
        hook(where, exc)


def counts() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def reset() -> None:
    with _lock:
        _counts.clear()
        _last_logged.clear()
