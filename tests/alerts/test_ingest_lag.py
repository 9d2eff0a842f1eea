"""Data arrives late (agents batch for seconds, the collector buffers, a backlog delays writes): a
rule whose window ends at the evaluation time reads its last seconds as missing. ``query_offset``
(Prometheus's name; per rule, per group, or ``TRACEHOUSE_RULE_QUERY_OFFSET``) ends the window that
much earlier. Real chDB store; spans are written as a late pipeline would have written them."""

from __future__ import annotations

import pytest

from tracehouse.alerts import Engine, RuleError, build_config
from tracehouse.alerts.rules import parse_rule

from .helpers import Clock
from .spanfactory import add_spans

# a traffic-drop rule: fewer than 50 calls a minute (the shop does 60)
LOW = {"alert": "CheckoutTrafficLow", "kind": "sql", "window": "1m", "op": "<", "threshold": 50,
       "query": "SELECT count() AS value FROM spans WHERE service = 'shop' "
                "AND start_ns > {start_ns:UInt64} AND start_ns <= {end_ns:UInt64}"}


def _run(store, rules, lag_s=12, **group):
    """Steady traffic (one span a second); at each evaluation only the spans older than ``lag_s``
    are written. Returns the alert states seen."""
    clock = Clock()
    base = clock.s
    cfg = build_config([("t.yaml", {"groups": [dict({"name": "g", "interval": "10s", "rules": rules}, **group)]})])
    e = Engine(store, cfg, clock=clock)
    written = base - 120
    add_spans(store, written, service="shop", every="1s", **{"for": "120s"})
    written = base
    seen = []
    for step in range(1, 13):
        now = base + 10 * step
        while written + 10 <= now - lag_s:  # the pipeline delivers in batches of 10 s, lag_s late
            add_spans(store, written, service="shop", every="1s", **{"for": "10s"})
            written += 10
        clock.ns = now * 1_000_000_000
        e.run_once()
        seen += [a.state for a in e.current_alerts()]
    return seen


def test_a_late_pipeline_makes_a_rule_without_offset_fire_falsely(chdb_store):
    assert "firing" in _run(chdb_store, [LOW])  # the failure mode query_offset exists for


def test_query_offset_reads_only_windows_that_are_written(chdb_store):
    assert _run(chdb_store, [dict(LOW, query_offset="30s")]) == []


def test_group_query_offset_and_engine_default(chdb_store):
    assert _run(chdb_store, [LOW], query_offset="30s") == []
    assert parse_rule(dict(LOW, query_offset="15s")).query_offset_s == 15
    assert parse_rule(LOW).query_offset_s is None
    with pytest.raises(RuleError, match="query_offset"):
        parse_rule(dict(LOW, query_offset="2h"))
    e = Engine(chdb_store, build_config([("t.yaml", {"groups": [{"name": "g", "rules": [LOW]}]})]),
               query_offset_s=30)
    assert e.get_rule("g/CheckoutTrafficLow").query_offset_s == 30
