"""A rule whose query gives the same label set twice in one evaluation (a SQL rule missing a GROUP BY
key, or a label column the rule's own labels overwrite): which row becomes the alert would be up to
row order, so the evaluation is an error and the alerts stay as they were, as Prometheus's "vector
contains metrics with the same labelset after applying alert labels". Real chDB store."""

from __future__ import annotations

from tracehouse.alerts import Engine, build_config

from .helpers import Clock

DUP = {"alert": "Dup", "kind": "sql", "op": ">", "threshold": 1,
       "query": "SELECT arrayJoin([5, 0]) AS value, 'eu' AS region"}


def _engine(store, clock, rule):
    return Engine(store, build_config([("t.yaml", {"groups": [{"name": "g", "rules": [rule]}]})]), clock=clock)


def test_duplicate_label_sets_are_an_evaluation_error(chdb_store):
    clock = Clock()
    e = _engine(chdb_store, clock, DUP)
    e.run_once()
    ar = e.get_rule("g/Dup")
    assert ar.health == "err" and "same labels" in ar.last_error and "region" in ar.last_error
    assert e.current_alerts() == []


def test_rule_labels_that_merge_two_rows_are_an_evaluation_error(chdb_store):
    clock = Clock()
    rule = dict(DUP, query="SELECT arrayJoin([5, 6]) AS value, toString(value) AS severity", labels={"severity": "page"})
    e = _engine(chdb_store, clock, rule)
    e.run_once()
    assert e.get_rule("g/Dup").health == "err"
    assert e.current_alerts() == []
