"""Calls into code the engine does not control (a rule's snapshot action), each batch bounded by one
deadline and run on a worker thread outside the engine's lock.

A call that does not return by the deadline is given up on (its result is an error): the worker
thread goes on waiting for it, but it is a daemon and runs nothing else of the batch. While
``max_stuck`` workers are still waiting for a call, a new batch is refused at once instead of
starting one more thread: a hung target holds at most that many threads, and never the evaluation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .errors import ActionTimeout

__all__ = ["BoundedCalls"]


class BoundedCalls:
    def __init__(self, timeout_s: float = 5.0, max_stuck: int = 2, name: str = "tracehouse-alerts-action",
                 on_failure: Callable[[], None] | None = None):
        self.timeout_s, self.max_stuck, self.name = timeout_s, max_stuck, name
        self.on_failure = on_failure  # called once per call that raised, timed out or was not started
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def run(self, calls: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """Run ``calls`` in order within ``timeout_s`` in all; per call ``(True, result)``, or
        ``(False, exception)`` for one that raised, timed out or was not started in time."""
        if not calls:
            return []
        with self._lock:
            self._workers = [t for t in self._workers if t.is_alive()]
            if len(self._workers) >= self.max_stuck:
                refused = ActionTimeout(f"{len(self._workers)} earlier requests have not returned yet")
                return self._counted([(False, refused)] * len(calls))
            results: list[tuple[bool, Any] | None] = [None] * len(calls)
            done, given_up = threading.Event(), threading.Event()

            def work() -> None:
                for i, fn in enumerate(calls):
                    if given_up.is_set():
                        return
                    try:
                        results[i] = (True, fn())
                    except Exception as e:
                        results[i] = (False, e)
                done.set()

            worker = threading.Thread(target=work, name=self.name, daemon=True)
            self._workers.append(worker)
        worker.start()
        if not done.wait(self.timeout_s):
            given_up.set()
        late = ActionTimeout(f"no answer within {self.timeout_s:g} s")
        return self._counted([r if r is not None else (False, late) for r in list(results)])

    def _counted(self, results: list[tuple[bool, Any]]) -> list[tuple[bool, Any]]:
        if self.on_failure is not None:
            for ok, _ in results:
                if not ok:
                    self.on_failure()
        return results
