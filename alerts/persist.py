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

from .state import Alert, Transition

_version_lock = threading.Lock()
_last_version = [0]


def _version() -> int:
    """Strictly increasing version for ReplacingMergeTree rows (wall clock, never the test clock)."""
    with _version_lock:
        v = max(time.time_ns(), _last_version[0] + 1)
        _last_version[0] = v
        return v


def save_alerts(store: Any, alerts: Iterable[tuple[Alert, bool]]) -> None:
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
        store.insert("alert_state", cols)


def load_alerts(store: Any) -> dict[str, dict[str, Alert]]:
    res = store.query(
        f"SELECT rule_id, fingerprint, argMax(state, updated_ns), argMax(labels, updated_ns), "
        f"argMax(body, updated_ns), argMax(deleted, updated_ns) AS d FROM {store.t('alert_state')} "
        "GROUP BY rule_id, fingerprint"
    )
    out: dict[str, dict[str, Alert]] = {}
    for rule_id, fp, state, labels, body, deleted in res.rows:
        if deleted:
            continue
        out.setdefault(rule_id, {})[fp] = Alert.from_row(rule_id, fp, state, json.loads(labels), json.loads(body))
    return out


def record_history(store: Any, transitions: list[Transition], now_ns: int) -> None:
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
    store.insert("alert_history", cols)


def history(store: Any, rule_id: str = "", limit: int = 200, since_ns: int = 0) -> list[dict[str, Any]]:
    where, params = ["ts_ns >= {since:UInt64}"], {"since": int(since_ns), "limit": max(1, min(int(limit), 5000))}
    if rule_id:
        where.append("rule_id = {rule_id:String}")
        params["rule_id"] = rule_id
    res = store.query(
        f"SELECT ts_ns, rule_id, alertname, fingerprint, labels, from_state, to_state, value, body "
        f"FROM {store.t('alert_history')} WHERE {' AND '.join(where)} ORDER BY ts_ns DESC LIMIT {{limit:UInt32}}",
        params,
    )
    out = []
    for d in res.dicts():
        d["labels"] = json.loads(d["labels"] or "{}")
        d["body"] = json.loads(d["body"] or "{}")
        out.append(d)
    return out
