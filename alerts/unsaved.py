"""Changes of alert state that could not be written to the store yet (it was down or hung when the
alert changed), kept and written on the next evaluation, so that a restarted engine, or another
taking the lease over, starts from what this one last decided and neither fires nor resolves (and
notifies) the same alert a second time.

Alerts are kept by (rule, fingerprint), the latest decision only, and written as they are at the
time of the write; history rows in order, at most :data:`MAX_HISTORY` of them (the oldest are
dropped and counted past that).
"""

from __future__ import annotations

import logging
import threading

from tracehouse.storage import Store

from . import persist
from .state import Alert, Transition

__all__ = ["Unsaved", "MAX_HISTORY"]

log = logging.getLogger("tracehouse.alerts")

#: history rows kept while the store cannot take them
MAX_HISTORY = 10_000


class Unsaved:
    def __init__(self, max_history: int = MAX_HISTORY):
        self._alerts: dict[tuple[str, str], tuple[Alert, bool]] = {}
        self._history: list[tuple[list[Transition], int]] = []
        self._rows = 0
        self.max_history = max_history
        self.dropped_history = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._alerts) + self._rows

    def add(self, transitions: list[Transition], now_ns: int) -> None:
        with self._lock:
            for t in transitions:
                self._alerts[(t.alert.rule_id, t.alert.fingerprint)] = (t.alert, t.to_state in ("inactive", "deleted"))
            self._history.append((list(transitions), now_ns))
            self._rows += len(transitions)
            while self._rows > self.max_history and len(self._history) > 1:
                gone, _ = self._history.pop(0)
                self._rows -= len(gone)
                self.dropped_history += len(gone)
                log.error("alert history: %d transitions dropped, the store took none of them", len(gone))

    def touch(self, alerts: list[Alert]) -> None:
        """Alerts to write as they are, without a history row (a pending alert's last evaluation,
        see ``AlertingRule.touched``); a change of state kept for one already stays."""
        with self._lock:
            for a in alerts:
                self._alerts.setdefault((a.rule_id, a.fingerprint), (a, False))

    def clear(self) -> None:
        with self._lock:
            self._alerts.clear()
            self._history.clear()
            self._rows = 0

    def write(self, store: Store) -> None:
        """Write everything kept; raises the store's error, keeping what was not written."""
        with self._lock:
            alerts = dict(self._alerts)
            history = list(self._history)
        if alerts:
            persist.save_alerts(store, list(alerts.values()))
            with self._lock:
                for key, value in alerts.items():
                    if self._alerts.get(key) is value:
                        del self._alerts[key]
        for batch in history:
            persist.record_history(store, batch[0], batch[1])
            with self._lock:
                if self._history and self._history[0] is batch:
                    self._history.pop(0)
                    self._rows -= len(batch[0])
