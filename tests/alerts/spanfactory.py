"""Synthetic spans and metric points for alert tests (thin wrapper over the rule-test input code)."""

from __future__ import annotations

from tracehouse.alerts.series import insert_input


def add_spans(store, base_s: int, **spec) -> None:
    insert_input(store, [spec], [], base_s)


def add_series(store, base_s: int, series: str, values: str, interval_s: float = 10.0) -> None:
    insert_input(store, [], [{"series": series, "values": values}], base_s, interval_s)
