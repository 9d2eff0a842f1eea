"""Counters of what the agent sent and dropped, with a reason, for ``tracehouse.agent.stats()``."""

from __future__ import annotations

import threading
from collections import Counter

from tracehouse.agent.forklocks import renew_in_child

_lock = threading.Lock()
renew_in_child(globals(), "_lock")
_counters: Counter[str] = Counter()


def add(name: str, n: int = 1) -> None:
    with _lock:
        _counters[name] += n


def snapshot() -> dict[str, int]:
    from tracehouse.agent import errors

    with _lock:
        out = dict(_counters)
    out["errors"] = sum(errors.counts().values())
    return out


#: counters of state that a forked child inherits with the process (its loaded instrumentations)
INHERITED = ("instrumentations.",)


def reset() -> None:
    """Forget what was sent and dropped (a forked child starts afresh), not what it inherited."""
    with _lock:
        for name in [n for n in _counters if not n.startswith(INHERITED)]:
            del _counters[name]
