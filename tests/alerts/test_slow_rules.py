"""A rule whose query runs to the rule time limit (a SQL rule an editor wrote, on real chDB) holds
back only its own group: the other groups are evaluated at their intervals meanwhile, as
Prometheus runs each rule group on its own."""

from __future__ import annotations

import time

from tracehouse.alerts import Engine, build_config
from tracehouse.alerts.series import span_columns

#: a query the sandbox accepts (plain SELECT over spans) that computes until the time limit stops it
BURN = ("SELECT count() AS value FROM spans ARRAY JOIN range(3000) AS x ARRAY JOIN range(3000) AS y "
        "WHERE cityHash64(x, y, start_ns) % 7 = 3")


def test_a_rule_at_its_time_limit_does_not_hold_back_the_other_groups(chdb_store):
    """Before, every due group was evaluated one after the other in one loop: while the heavy group's
    rule ran to its limit (4 s here, 10 s by default), the light group (interval 1s) was not
    evaluated at all, and with a few such rules every other rule waited tens of seconds."""
    now = int(time.time())
    chdb_store.insert("spans", span_columns(chdb_store, [{"service": "pay", "every": "1s", "for": "2000s"}],
                                            now - 2100))
    chdb_store.RULE_TIMEOUT_S = 4  # the rule time limit of this store (10 s by default)
    cfg = build_config([("rules.yaml", {"groups": [
        {"name": "heavy", "interval": "1s", "rules": [{"alert": "Burn", "kind": "sql", "query": BURN}]},
        {"name": "light", "interval": "1s", "rules": [
            {"alert": "Spans", "kind": "sql", "query": "SELECT count() AS value FROM spans"}]},
    ]})])
    engine = Engine(chdb_store, cfg)
    heavy, light = engine.rules["heavy/Burn"], engine.rules["light/Spans"]
    engine.start()
    try:
        seen: set[int] = set()
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline and len(seen) < 3:
            if light.last_eval_ns:
                seen.add(light.last_eval_ns)
            time.sleep(0.05)
        assert heavy.last_eval_ns == 0, "the heavy rule's first evaluation ended before its time limit"
        assert len(seen) >= 3, f"the light group was evaluated {len(seen)} times while the heavy rule ran"
        assert light.health == "ok"
        deadline = time.monotonic() + 10
        while heavy.last_eval_ns == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert heavy.health == "err"  # stopped by the time limit
        missed = engine.metrics.registry.get_sample_value("tracehouse_alerts_rule_group_iterations_missed_total",
                                                          {"group": "heavy"})
        assert missed is not None and missed >= 2  # its turns while it ran, counted
    finally:
        engine.stop()
