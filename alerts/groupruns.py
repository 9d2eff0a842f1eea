"""Rule groups evaluated each on a thread of its own by the engine's background loop, as Prometheus
runs each rule group on its own: a group whose rule runs to the rule time limit (10 s) holds back
only itself, never the other groups' evaluations. The rules of one group stay one after the other.

At most :data:`MAX_RUNNING` groups are evaluated at once (a due group waits for a free turn); a
group still running when it is due again misses that evaluation, which the engine counts
(``tracehouse_alerts_rule_group_iterations_missed``) and logs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

log = logging.getLogger("tracehouse.alerts")

#: groups evaluated at the same time at most
MAX_RUNNING = 4


class GroupRuns:
    def __init__(self, max_running: int = MAX_RUNNING):
        self.max_running = max_running
        self._lock = threading.Lock()
        self._running: dict[Hashable, threading.Thread] = {}

    def running(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._running

    def start(self, key: Hashable, run: Callable[[], None]) -> bool:
        """Run ``run()`` on a thread of its own unless ``key`` runs already or every turn is taken."""
        with self._lock:
            if key in self._running or len(self._running) >= self.max_running:
                return False
            t = threading.Thread(target=self._run, args=(key, run), name=f"tracehouse-alerts-group-{key}",
                                 daemon=True)
            self._running[key] = t
        t.start()
        return True

    def _run(self, key: Hashable, run: Callable[[], None]) -> None:
        try:
            run()
        except Exception:
            log.exception("evaluating rule group %s", key)
        finally:
            with self._lock:
                self._running.pop(key, None)

    def join(self, timeout_s: float) -> None:
        """Wait for the running evaluations, ``timeout_s`` in all."""
        end = time.monotonic() + timeout_s
        with self._lock:
            threads = list(self._running.values())
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
