"""What the dashboard reads from an alert engine: the seam between the dashboard and ``tracehouse.alerts``.

The dashboard never imports the alerts package. The composition (``tracehouse/server.py``) passes the
engine in (``create_app(settings, store, alerts=engine)``); ``tracehouse.alerts.Engine`` satisfies
:class:`AlertSource` (``tests/dashboard/test_alerts_pages.py`` checks it). Its reads touch storage
(history, persisted states), so the pages catch :class:`~tracehouse.storage.StorageError` and nothing
else: any other exception is a bug and must surface. Every change goes from the browser through the
alerts JSON API (``/api/alerts``), never through this interface.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["AlertSource"]


@runtime_checkable
class AlertSource(Protocol):
    @property
    def vocabulary(self) -> Mapping[str, tuple[str, ...]]:
        """The choices of each enumerated rule field: ``kinds``, ``signals`` (red), ``absence_signals``,
        ``aggregations``, ``ops`` (the rule model's own tuples, so the editor offers what it accepts)."""
        ...

    def list_rules(self) -> list[dict[str, Any]]:
        """Every rule as a mapping: its fields, ``id``, ``source``, ``read_only``, state and health."""
        ...

    def alerts(self) -> list[dict[str, Any]]:
        """Current alerts (pending, firing, recently resolved) with labels, annotations and ``muted``."""
        ...

    def history(self, rule_id: str = "", limit: int = 200) -> list[dict[str, Any]]:
        """State transitions, newest first (of one rule, or of all with ``rule_id=""``)."""
        ...

    def silences(self) -> list[dict[str, Any]]:
        """Silences with their ``status`` (active, pending, expired)."""
        ...
