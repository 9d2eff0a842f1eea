"""What each notification group last sent, kept in ClickHouse (``notify_state``), so that neither a
restarted engine nor another engine process taking over evaluation sends it a second time.

One small document per group key (receiver and group labels): the fingerprints of the firing
alerts last notified and when. The dispatcher reads a group's record when it creates the group and
again just before it sends (another process may have sent since), and writes it after every send.
Delivery stays at least once: a crash between a receiver's answer and the write sends again.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from tracehouse.storage import Store, queries_alerts

__all__ = ["Sent", "NotifyLog"]

TABLE = "notify_state"

_version_lock = threading.Lock()
_last = [0]


def _version() -> int:
    """Strictly increasing in this process (ReplacingMergeTree keeps the highest)."""
    with _version_lock:
        _last[0] = max(time.time_ns(), _last[0] + 1)
        return _last[0]


@dataclass
class Sent:
    notified_firing: set[str]
    last_sent_ns: int


class NotifyLog:
    def __init__(self, store: Store):
        self.store = store

    def load(self, key: str) -> Sent | None:
        text = queries_alerts.notify_state(self.store, key)
        if text is None:
            return None
        try:
            body = json.loads(text)
            return Sent(set(map(str, body.get("notified_firing", []))), int(body.get("last_sent_ns", 0)))
        except (ValueError, TypeError, AttributeError):
            return None

    def save(self, key: str, sent: Sent) -> None:
        body = {"notified_firing": sorted(sent.notified_firing), "last_sent_ns": int(sent.last_sent_ns)}
        self._write(key, body, deleted=False)

    def forget(self, key: str) -> None:
        self._write(key, {}, deleted=True)

    def _write(self, key: str, body: dict[str, Any], deleted: bool) -> None:
        self.store.write_small(TABLE, {"id": [key], "updated_ns": [_version()], "deleted": [int(deleted)],
                                  "body": [json.dumps(body, separators=(",", ":"))]})
