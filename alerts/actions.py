"""What a rule's ``action`` does when one of its alerts starts firing.

``action: {snapshot: threads|memory}`` queues a snapshot request for the alert's service (the agent
command channel delivers it to every instance of the service that polls within two minutes). The
engine hands the hook a description of the alert (a dict); the request records it as text, so the
snapshot — and whoever reads it — says which alert asked for it.
"""

from __future__ import annotations

from typing import Any

from tracehouse.storage import Store

from .state import SnapshotFunc

__all__ = ["describe", "queue_snapshots"]

REASON_LIMIT = 500  # snapshot_requests.reason, checked by storage


def describe(reason: dict[str, Any]) -> str:
    """``alert InventorySlow (shop/InventorySlow) firing at 412.5: service=inventory, severity=warning``."""
    labels = {k: v for k, v in (reason.get("labels") or {}).items() if k != "alertname"}
    value = reason.get("value")
    shown = "no data" if value is None or value != value else f"{float(value):.6g}"
    text = (f"alert {reason.get('alertname', '')} ({reason.get('rule_id', '')}) firing at {shown}"
            + (": " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) if labels else ""))
    return text[:REASON_LIMIT]


def queue_snapshots(store: Store) -> SnapshotFunc:
    """The engine's ``request_snapshot`` hook over the store's snapshot request queue."""
    from tracehouse.storage.queries_snapshots import queue_request

    def request(service: str, kind: str, reason: dict[str, Any]) -> str:
        return queue_request(store, service, kind, describe(reason),
                             requested_by=f"alert:{reason.get('rule_id', '')}"[:200])

    return request
