"""The alert engine's Prometheus metrics, in a registry of its own (no global state): rule
evaluations (duration, count, failures) per rule group, notifications sent and failed per receiver
and integration, snapshot actions that failed, and the current alerts by state."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily

__all__ = ["AlertMetrics"]

EVAL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _AlertsByState:
    def __init__(self, alerts: Callable[[], list[Any]]):
        self.alerts = alerts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("tracehouse_alerts", "Current alerts by state.", labels=["state"])
        counts = {"pending": 0, "firing": 0, "resolved": 0}
        for a in self.alerts():
            counts[a.state] = counts.get(a.state, 0) + 1
        for state, n in sorted(counts.items()):
            g.add_metric([state], n)
        yield g


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.eval_seconds = Histogram("tracehouse_alerts_rule_evaluation_seconds",
                                      "Time to evaluate one rule, by rule group.", ["group"], registry=r,
                                      buckets=EVAL_BUCKETS)
        self.eval_failures = Counter("tracehouse_alerts_rule_evaluation_failures",
                                     "Rule evaluations that failed (query error or persistence), by rule group.",
                                     ["group"], registry=r)
        self.missed = Counter("tracehouse_alerts_rule_group_iterations_missed",
                              "Evaluations of a rule group skipped because its previous one still ran, by group.",
                              ["group"], registry=r)
        self.notifications = Counter("tracehouse_alerts_notifications", "Notifications sent, by receiver and integration.",
                                     ["receiver", "integration"], registry=r)
        self.notifications_failed = Counter("tracehouse_alerts_notifications_failed",
                                            "Notification attempts that failed, by receiver and integration.",
                                            ["receiver", "integration"], registry=r)
        self.action_failures = Counter("tracehouse_alerts_action_failures",
                                       "Rule actions (snapshot requests) that failed.", ["action"], registry=r)

    def watch(self, alerts: Callable[[], list[Any]]) -> None:
        """Expose the current alerts by state, read at scrape time."""
        self.registry.register(_AlertsByState(alerts))

    def evaluated(self, group: str, seconds: float, failed: bool) -> None:
        self.eval_seconds.labels(group=group).observe(seconds)
        if failed:
            self.eval_failures.labels(group=group).inc()

    def notification(self, outcome: str, receiver: str, integration: str) -> None:
        c = self.notifications if outcome == "sent" else self.notifications_failed
        c.labels(receiver=receiver, integration=integration).inc()
