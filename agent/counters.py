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


def reset() -> None:
    with _lock:
        _counters.clear()
