"""Alert state and history in ClickHouse, so a restarted engine resumes where it stopped.

``alert_state`` is a ReplacingMergeTree keyed by (rule_id, fingerprint): each change writes a new
version and reads take the latest with argMax (never relying on merges having happened). Every
transition is appended to ``alert_history``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import Any

from tracehouse.storage import Store, queries_alerts

from .state import Alert, Transition

_version_lock = threading.Lock()
_last_version = [0]


def _version() -> int:
    """Strictly increasing version for ReplacingMergeTree rows (wall clock, never the test clock)."""
    with _version_lock:
        v = max(time.time_ns(), _last_version[0] + 1)
        _last_version[0] = v
        return v


def save_alerts(store: Store, alerts: Iterable[tuple[Alert, bool]]) -> None:
    """Write (alert, deleted) pairs as the newest versions of their rows."""
    cols = store.columns_for("alert_state")
    for a, deleted in alerts:
        cols["rule_id"].append(a.rule_id)
        cols["fingerprint"].append(a.fingerprint)
        cols["updated_ns"].append(_version())
        cols["state"].append(a.state)
        cols["labels"].append(json.dumps(a.labels, sort_keys=True))
        cols["body"].append(json.dumps(a.body(), sort_keys=True))
        cols["deleted"].append(int(deleted))
    if cols["rule_id"]:
        store.write_small("alert_state", cols)


def load_alerts(store: Store) -> dict[str, dict[str, Alert]]:
    out: dict[str, dict[str, Alert]] = {}
    for rule_id, fp, state, labels, body in queries_alerts.alert_states(store):
        out.setdefault(rule_id, {})[fp] = Alert.from_row(rule_id, fp, state, json.loads(labels), json.loads(body))
    return out


def record_history(store: Store, transitions: list[Transition], now_ns: int) -> None:
    if not transitions:
        return
    cols = store.columns_for("alert_history")
    for t in transitions:
        a = t.alert
        cols["timestamp"].append(now_ns // 1_000_000_000)
        cols["ts_ns"].append(now_ns)
        cols["rule_id"].append(a.rule_id)
        cols["alertname"].append(a.labels.get("alertname", ""))
        cols["fingerprint"].append(a.fingerprint)
        cols["labels"].append(json.dumps(a.labels, sort_keys=True))
        cols["from_state"].append(t.from_state)
        cols["to_state"].append(t.to_state)
        cols["value"].append(float(a.value) if a.value == a.value else 0.0)
        cols["body"].append(json.dumps({"annotations": dict(a.annotations, **a.extra_annotations)}))
    store.write_small("alert_history", cols)


def history(store: Store, rule_id: str = "", limit: int = 200, since_ns: int = 0) -> list[dict[str, Any]]:
    out = []
    for d in queries_alerts.alert_history(store, rule_id, limit, since_ns):
        d["labels"] = json.loads(d["labels"] or "{}")
        d["body"] = json.loads(d["body"] or "{}")
        out.append(d)
    return out
