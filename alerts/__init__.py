"""tracehouse.alerts: alert rules over the stored telemetry, their lifecycle, and notifications.

``build_engine(settings, store)`` gives the server its background objects. The composition
(``tracehouse/server.py``) passes the engine to the dashboard, which reads it through its own
``AlertSource`` interface (rules, alerts, history, silences and ``VOCABULARY``, the choices of each
rule field), and mounts ``alerts_router(engine)`` (answering 503 when ``engine`` is None: a dashboard
running without the engine in its process).
"""

from __future__ import annotations

from typing import Any

from tracehouse.storage import Store

from .config import AlertConfig, build_config, load_files
from .engine import Engine
from .errors import (
    ActionTimeout,
    AlertsConfigError,
    AlertsError,
    DestinationRefused,
    EvaluationError,
    NotifyError,
    ReadOnlyRule,
    RuleError,
    UnsafeQuery,
)
from .notifiers import EmailNotifier, Notifier, SlackNotifier, WebhookNotifier
from .rules import VOCABULARY, Rule, parse_rule
from .ssrf import check_url
from .state import Alert, AlertingRule

__all__ = [
    "Alert",
    "AlertConfig",
    "AlertingRule",
    "ActionTimeout",
    "AlertsConfigError",
    "AlertsError",
    "DestinationRefused",
    "EmailNotifier",
    "Engine",
    "EvaluationError",
    "Notifier",
    "NotifyError",
    "ReadOnlyRule",
    "Rule",
    "RuleError",
    "SlackNotifier",
    "UnsafeQuery",
    "VOCABULARY",
    "WebhookNotifier",
    "alerts_router",
    "build_config",
    "build_engine",
    "check_url",
    "load_files",
    "parse_rule",
]


def alerts_router(engine: Engine | None, require_role: Any = None, previews_per_minute: float = 20):
    from .api import alerts_router as _router

    return _router(engine, require_role, previews_per_minute)


def lease_for(settings: Any, store: Store):
    """The lease the engine evaluates under: on a cluster, a ZooKeeper lease shared by every engine
    of that database (one evaluates, the others wait); elsewhere none (always held)."""
    cluster = getattr(getattr(store, "url", None), "cluster", "")
    if not cluster:
        return None
    hosts = str(getattr(settings, "zookeeper", "") or "")
    if not hosts:
        raise AlertsConfigError(f"alerts on cluster {cluster!r} need a lease so that one evaluator runs at a time: "
                          "set TRACEHOUSE_ZOOKEEPER=host:port (the cluster's ZooKeeper)")
    from .lease import ZooKeeperLease

    return ZooKeeperLease(hosts, f"/tracehouse/{store.db}/alerts-lease", ttl=float(getattr(settings, "lease_ttl", 10.0)))


def alerts_dir(settings: Any) -> str:
    """The engine's data directory (TRACEHOUSE_ALERTS_DIR; else next to the chDB directory, or
    ./tracehouse-alerts): the changes of alert state the store did not take wait there too."""
    from tracehouse.storage.statefile import state_dir

    return state_dir(settings, "alerts_dir", "alerts")


def rule_query_offset(settings: Any) -> float:
    """``TRACEHOUSE_RULE_QUERY_OFFSET``: seconds, 0 to 3600."""
    from .rules import MAX_QUERY_OFFSET_S

    v = float(getattr(settings, "rule_query_offset", 0.0) or 0.0)
    if not 0 <= v <= MAX_QUERY_OFFSET_S:
        raise AlertsConfigError(f"TRACEHOUSE_RULE_QUERY_OFFSET must be 0 to {MAX_QUERY_OFFSET_S:.0f} seconds, not {v}")
    return v


def build_engine(settings: Any, store: Store, request_snapshot: Any = None) -> list[Engine]:
    """The alert engine for the server: rules from ``settings.rules``, dashboard links to the HTTP port,
    snapshot actions queued in the store (``request_snapshot`` replaces that)."""
    config = load_files(list(getattr(settings, "rules", []) or []))
    host = getattr(settings, "host", "127.0.0.1")
    url = str(getattr(settings, "external_url", "") or f"http://{host}:{getattr(settings, 'http_port', 8080)}")
    if request_snapshot is None:
        from .actions import queue_snapshots

        request_snapshot = queue_snapshots(store)
    engine = Engine(store, config, dashboard_url=url, request_snapshot=request_snapshot,
                    lease=lease_for(settings, store), query_offset_s=rule_query_offset(settings),
                    state_dir=alerts_dir(settings))
    return [engine]
