"""Changes of alert state that could not be written to the store yet (it was down or hung when the
alert changed), kept and written on the next evaluation, so that a restarted engine, or another
taking the lease over, starts from what this one last decided and neither fires nor resolves (and
notifies) the same alert a second time.

Alerts are kept by (rule, fingerprint), the latest decision only, and written as they are at the
time of the write; history rows in order, at most :data:`MAX_HISTORY` of them (the oldest are
dropped and counted past that).

With a ``path`` (a file in the engine's data directory), what is kept is also on local disk
(:meth:`Unsaved.sync_file`: replaced atomically, at most :data:`MAX_FILE_BYTES`, removed once the
store took everything), so a restart during a store outage starts from it (:meth:`Unsaved.load_file`)
instead of firing or resolving again what was decided before it. A file that cannot be read is
ignored, with a log line.
"""

from __future__ import annotations

import json
import logging
import os
import threading

from tracehouse.storage import Store
from tracehouse.storage.statefile import remove, write_bytes

from . import persist
from .state import Alert, Transition

__all__ = ["Unsaved", "MAX_HISTORY", "MAX_FILE_BYTES"]

log = logging.getLogger("tracehouse.alerts")

#: history rows kept while the store cannot take them
MAX_HISTORY = 10_000
#: the file of what is kept: history rows are left out of it (oldest first) past this size
MAX_FILE_BYTES = 8 << 20
_FORMAT = 1


class Unsaved:
    def __init__(self, max_history: int = MAX_HISTORY, path: str = "", max_file_bytes: int = MAX_FILE_BYTES):
        self.path, self.max_file_bytes = path, max_file_bytes
        self._changes = 0  # counts every change of what is kept, so the file is written only after one
        self._synced = 0
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
            self._changes += 1
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
            self._changes += 1

    def clear(self) -> None:
        with self._lock:
            self._alerts.clear()
            self._history.clear()
            self._rows = 0
            self._changes += 1

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
                self._changes += 1
        for batch in history:
            persist.record_history(store, batch[0], batch[1])
            with self._lock:
                if self._history and self._history[0] is batch:
                    self._history.pop(0)
                    self._rows -= len(batch[0])
                    self._changes += 1

    def alerts(self) -> list[tuple[Alert, bool]]:
        """The alerts kept, with whether each is deleted (for a reload: they are newer than the store's)."""
        with self._lock:
            return list(self._alerts.values())

    # -- the file ---------------------------------------------------------------------------------
    def sync_file(self) -> None:
        """Make the file say what is kept now (nothing: no file). Errors are logged, never raised:
        the file only narrows what a restart during an outage would lose."""
        if not self.path:
            return
        with self._lock:
            if self._changes == self._synced:
                return
            changes = self._changes
            alerts = [_alert_row(a, deleted) for a, deleted in self._alerts.values()]
            history = [[[[_alert_row(t.alert, False), t.from_state, t.to_state] for t in batch], now]
                       for batch, now in self._history]
        try:
            if not alerts and not history:
                remove(self.path)
            else:
                self._write_file(alerts, history)
        except (OSError, ValueError) as e:
            log.error("alert changes the store did not take: could not write %s: %s", self.path, e)
            try:  # an older file would be taken at a restart as newer than the store: none at all
                remove(self.path)
            except OSError as gone:
                log.error("alert changes the store did not take: could not remove %s: %s", self.path, gone)
            return
        with self._lock:
            self._synced = max(self._synced, changes)

    def _write_file(self, alerts: list, history: list) -> None:
        data = b""
        while True:
            data = json.dumps({"format": _FORMAT, "alerts": alerts, "history": history}).encode()
            if len(data) <= self.max_file_bytes or not history:
                break
            history = history[max(1, len(history) // 10):]  # the oldest rows go first
        if len(data) > self.max_file_bytes:
            raise ValueError(f"{len(alerts)} alerts take {len(data):,} bytes, over {self.max_file_bytes:,}")
        write_bytes(self.path, data)

    def load_file(self) -> int:
        """Take what the file kept (written by an engine that stopped before the store took it), to be
        written to the store like any change not yet taken. Returns the number of alerts and rows
        read; a file that cannot be read is ignored, with a log line, and left for inspection."""
        if not self.path or not os.path.exists(self.path):
            return 0
        try:
            if os.path.getsize(self.path) > self.max_file_bytes:
                raise ValueError(f"larger than {self.max_file_bytes:,} bytes")
            with open(self.path, "rb") as f:
                doc = json.loads(f.read())
            if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
                raise ValueError("not a file of alert changes this version writes")
            alerts = [_from_row(row) for row in doc["alerts"]]
            history = [([Transition(_from_row(a)[0], str(f), str(t)) for a, f, t in batch], int(now))
                       for batch, now in doc["history"]]
            if not all(batch for batch, _ in history):
                raise ValueError("an empty history batch")
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("alert changes the store did not take: %s is unreadable and ignored: %s", self.path, e)
            return 0
        with self._lock:
            for a, deleted in alerts:  # older than anything decided since the start: never replaces it
                self._alerts.setdefault((a.rule_id, a.fingerprint), (a, deleted))
            self._history[:0] = history
            self._rows += sum(len(b) for b, _ in history)
            self._changes += 1
        return len(alerts) + sum(len(b) for b, _ in history)

    def drop_file(self, path: str = "") -> None:
        """Remove the file (``path``, else the one this writes)."""
        path = path or self.path
        if path:
            try:
                remove(path)
            except OSError as e:
                log.error("alert changes the store did not take: could not remove %s: %s", path, e)


def _alert_row(a: Alert, deleted: bool) -> list:
    return [a.rule_id, a.fingerprint, a.state, a.labels, a.body(), deleted]


def _from_row(row: list) -> tuple[Alert, bool]:
    rule_id, fp, state, labels, body, deleted = row
    if not (isinstance(rule_id, str) and isinstance(fp, str) and isinstance(state, str)
            and isinstance(labels, dict) and isinstance(body, dict) and isinstance(deleted, bool)):
        raise ValueError("an alert row of the wrong shape")
    return Alert.from_row(rule_id, fp, state, labels, body), deleted

