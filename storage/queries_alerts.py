"""The alert engine's own tables: the latest version of every alert's state, the history of
transitions, and what each notification group last sent. Rows are written with ``Store.insert``
(``alert_state``, ``alert_history``, ``notify_state``); these are the reads, which take the newest
version of each row with argMax and never rely on ReplacingMergeTree merges having happened. Bodies
and labels are JSON text, returned as stored: their meaning is the engine's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store

#: rows of alert history one read returns at most
MAX_HISTORY = 5000


def alert_states(store: Store) -> list[tuple[str, str, str, str, str]]:
    """(rule id, fingerprint, state, labels, body) of every alert not deleted."""
    res = store.read_small(
        f"SELECT rule_id, fingerprint, argMax(state, updated_ns), argMax(labels, updated_ns), "
        f"argMax(body, updated_ns), argMax(deleted, updated_ns) AS d FROM {store.t('alert_state')} "
        "GROUP BY rule_id, fingerprint"
    )
    return [(rule_id, fp, state, labels, body) for rule_id, fp, state, labels, body, deleted in res.rows
            if not deleted]


def alert_history(store: Store, rule_id: str = "", limit: int = 200, since_ns: int = 0) -> list[dict[str, Any]]:
    """Transitions since ``since_ns``, newest first (of one rule, when ``rule_id`` is given)."""
    where = ["ts_ns >= {since:UInt64}"]
    params: dict[str, Any] = {"since": int(since_ns), "limit": max(1, min(int(limit), MAX_HISTORY))}
    if rule_id:
        where.append("rule_id = {rule_id:String}")
        params["rule_id"] = rule_id
    res = store.read_small(
        f"SELECT ts_ns, rule_id, alertname, fingerprint, labels, from_state, to_state, value, body "
        f"FROM {store.t('alert_history')} WHERE {' AND '.join(where)} ORDER BY ts_ns DESC LIMIT {{limit:UInt32}}",
        params,
    )
    return res.dicts()


def notify_state(store: Store, key: str) -> str | None:
    """The body last written for notification group ``key``; None when there is none (or it was
    forgotten)."""
    res = store.read_small(
        f"SELECT argMax(body, updated_ns), argMax(deleted, updated_ns) FROM {store.t('notify_state')} "
        "WHERE id = {id:String} GROUP BY id",
        {"id": key},
    )
    if not res.rows or res.rows[0][1]:
        return None
    return str(res.rows[0][0])
