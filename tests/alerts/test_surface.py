"""Public surface, the server's build_engine, and the snapshot action on firing."""

from __future__ import annotations

import ast
import os

import pytest

import tracehouse.alerts as alerts
from tests.support.surface import own_exceptions
from tracehouse.alerts import (
    VOCABULARY,
    Engine,
    RuleError,
    build_config,
    build_engine,
    load_files,
    parse_rule,
)
from tracehouse.config import Settings

from .helpers import Clock
from .spanfactory import add_spans


def test_public_names_exist():
    assert sorted(alerts.__all__) == sorted(set(alerts.__all__))
    for name in alerts.__all__:
        assert hasattr(alerts, name), name


def test_one_exception_family():
    from tracehouse.storage import ConfigError, InvalidParameter

    found = own_exceptions(alerts)
    assert {c.__name__ for c in found} >= {"RuleError", "NotifyError", "DestinationRefused", "UnsafeQuery"}
    for cls in found:
        assert issubclass(cls, alerts.AlertsError), cls
        assert cls.__name__ in alerts.__all__, cls
    # what callers caught before still catches them (the API's 400 and 403, the CLI's exit status 2)
    assert issubclass(alerts.RuleError, InvalidParameter) and issubclass(alerts.UnsafeQuery, ValueError)
    assert issubclass(alerts.ReadOnlyRule, PermissionError) and issubclass(alerts.EvaluationError, ValueError)
    assert issubclass(alerts.AlertsConfigError, ConfigError)


def _imports(path: str) -> list[str]:
    """Every module a file imports (``from tracehouse import x`` counts as ``tracehouse.x``)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out += [f"{node.module}.{a.name}" for a in node.names] if node.module == "tracehouse" else [node.module or ""]
    return out


def test_the_alerts_package_imports_no_part_of_the_server():
    """Composition (server, CLI, ops endpoints) lives in tracehouse/; alerts depends on storage and
    on ``tracehouse.pathtext``, a leaf (URL paths of names) that imports nothing of ours."""
    here = os.path.join(os.path.dirname(__file__), "..", "..")
    leaves = (["pathtext"],)
    for leaf in leaves:
        assert not [m for m in _imports(os.path.join(here, "tracehouse", f"{leaf[0]}.py")) if m.startswith("tracehouse")]
    root = os.path.join(here, "alerts")
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py"):
            continue
        for m in _imports(os.path.join(root, name)):
            top = m.split(".")[:2]
            assert top[0] != "tracehouse" or top[1:] in ([], ["alerts"], ["storage"], *leaves), (name, m)


def test_the_vocabulary_is_what_the_rule_model_accepts():
    def rule(**over):
        return parse_rule({"alert": "A", "kind": "red", "signal": "rate", "service": "s", **over})

    needs = {"metric": {"metric": "m"}, "sql": {"query": "SELECT 1 AS value"}, "absence": {"signal": "any"}}
    assert [rule(kind=k, **needs.get(k, {})).kind for k in VOCABULARY["kinds"]] == list(VOCABULARY["kinds"])
    for field, values, extra in (("signal", VOCABULARY["signals"], {}),
                                 ("signal", VOCABULARY["absence_signals"], {"kind": "absence"}),
                                 ("aggregation", VOCABULARY["aggregations"], {"kind": "metric", "metric": "m"}),
                                 ("op", VOCABULARY["ops"], {}),
                                 ("nodata_state", VOCABULARY["nodata_states"], {})):
        for v in values:
            assert getattr(rule(**extra, **{field: v}), field) == v
        with pytest.raises(RuleError):
            rule(**extra, **{field: "bogus"})
    for v in VOCABULARY["snapshot_kinds"]:
        assert rule(action={"snapshot": v}).action == {"snapshot": v}


def test_build_engine_from_settings(chdb_store, tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("groups: [{name: g, rules: [{alert: A, kind: red, signal: rate, threshold: 1}]}]\n"
                 "receivers: [{name: ops, slack: {url: 'https://hooks.example.com/x'}}]\nroute: {receiver: ops}\n")
    [engine] = build_engine(Settings(rules=[str(f)], host="0.0.0.0", http_port=9999), chdb_store)
    assert engine.dashboard_url == "http://0.0.0.0:9999"
    assert list(engine.rules) == ["g/A"]
    engine.start()
    engine.stop()


@pytest.mark.parametrize("doc, reason", [
    ({"groups": [{"name": "g", "rules": [{"alert": "A", "kind": "red"}]}]}, "signal"),
    ({"groups": [{"name": "g", "rules": [{"alert": "A", "kind": "red", "signal": "rate", "for": "soon"}]}]}, "for"),
    ({"groups": [{"name": "g", "rules": [{"alert": "A", "kind": "metric"}]}]}, "metric"),
    ({"groups": [{"name": "g", "rules": [{"alert": "A", "kind": "red", "signal": "rate", "bogus": 1}]}]}, "bogus"),
    ({"route": {"receiver": "nobody"}}, "unknown receiver"),
    ({"receivers": [{"name": "x", "webhook": {"url": "ftp://x"}}]}, "http"),
    ({"groups": [{"name": "g", "rules": [{"alert": "A", "kind": "red", "signal": "rate",
                                          "annotations": {"s": "{{ value "}}]}]}, "template"),
    # the wrong shape anywhere is a clear error, not a traceback nor a text read letter by letter
    ({"notifications": ["allow_private_destinations"]}, "notifications must be a mapping"),
    ({"notifications": "yes"}, "notifications must be a mapping"),
    ({"groups": {"g": {"rules": []}}}, "groups must be a list"),
    ({"groups": [{"name": ["g"], "rules": []}]}, "every group needs a name"),
    ({"groups": [{"name": True, "rules": []}]}, "every group needs a name"),
    ({"groups": [{"name": "g", "rules": {"alert": "A", "kind": "red", "signal": "rate"}}]}, "rules must be a list"),
    ({"receivers": {"name": "x"}}, "receivers must be a list"),
    # "²".isdigit() is true, and int() refused it: a ValueError traceback at start
    ({"receivers": [{"name": "m", "email_configs": [{"to": "a@example.com", "from": "b@example.com",
                                                     "smarthost": "mail:²"}]}]}, "smarthost"),
    ({"receivers": [{"name": "m", "email_configs": [{"to": "a@example.com", "from": "b@example.com",
                                                     "smarthost": "mail:99999"}]}]}, "smarthost"),
])
def test_bad_rule_files_refused_with_reason(doc, reason):
    with pytest.raises(RuleError) as e:
        build_config([("f.yaml", doc)])
    assert reason in str(e.value)


def test_missing_file_is_a_rule_error(tmp_path):
    with pytest.raises(RuleError):
        load_files([str(tmp_path / "nope.yaml")])


def test_snapshot_action_on_firing(chdb_store):
    calls = []

    def request_snapshot(service, kind, reason):
        calls.append((service, kind, reason["alertname"]))
        return "snap-123"

    clock = Clock()
    add_spans(chdb_store, clock.s, service="payments", every="1s", **{"for": "2m"}, error_ratio=1.0)
    rule = {"alert": "E", "kind": "red", "service": "payments", "signal": "error_rate", "threshold": 0.5,
            "for": "20s", "action": {"snapshot": "threads"}}
    e = Engine(chdb_store, build_config([("f", {"groups": [{"name": "g", "rules": [rule]}]})]), clock=clock,
               request_snapshot=request_snapshot)
    clock.advance(60)
    e.run_once()
    assert calls == []  # pending: no snapshot yet
    clock.advance(20)
    e.run_once()
    assert calls == [("payments", "threads", "E")]
    [a] = e.alerts()
    assert a["annotations"]["snapshot_id"] == "snap-123"
    assert Engine(chdb_store, e.config, clock=clock).alerts()[0]["annotations"]["snapshot_id"] == "snap-123"
    with pytest.raises(RuleError):
        parse_rule(dict(rule, action={"snapshot": "heap"}))


def test_a_hung_snapshot_target_holds_neither_the_alerts_api_nor_the_other_rules(store, monkeypatch):
    """The snapshot action runs outside the engine's lock and within a time limit: a target that
    never answers (an agent command path that hangs) leaves the alerts API answering, the other rules
    of the group evaluated, and the alert firing with the reason it has no snapshot."""
    import threading
    import time

    from tests.support.waiting import wait_for

    release, calls = threading.Event(), []

    def hung_target(service, kind, reason):
        calls.append((service, kind, reason["alertname"]))
        release.wait(60)
        return "late"

    rules = [{"alert": "Hot", "kind": "sql", "query": "SELECT 1 AS value, 'payments' AS service", "op": ">",
              "threshold": 0, "action": {"snapshot": "threads"}},
             {"alert": "Other", "kind": "sql", "query": "SELECT 1 AS value", "op": ">", "threshold": 0}]
    cfg = build_config([("f", {"groups": [{"name": "g", "rules": rules}]})])
    monkeypatch.setattr("tracehouse.alerts.engine.SNAPSHOT_TIMEOUT_S", 1.0, raising=False)
    e = Engine(store, cfg, request_snapshot=hung_target)
    try:
        evaluation = threading.Thread(target=e.run_once, kwargs={"force": True}, daemon=True)
        t0 = time.monotonic()
        evaluation.start()
        wait_for(lambda: calls, 10, every=0.05, what="the snapshot request")
        answers: list = []
        reader = threading.Thread(target=lambda: answers.append(e.alerts()), daemon=True)
        reader.start()
        reader.join(0.5)
        assert answers, "the alerts API waits for the hung snapshot target"
        evaluation.join(15)
        assert not evaluation.is_alive(), "the evaluation still waits for the hung snapshot target"
        assert time.monotonic() - t0 < 10
        states = {a.labels["alertname"]: a for a in e.current_alerts()}
        assert {n: a.state for n, a in states.items()} == {"Hot": "firing", "Other": "firing"}
        assert "no answer within 1 s" in states["Hot"].extra_annotations["snapshot_error"]
        assert calls == [("payments", "threads", "Hot")]
        assert e.metrics.action_failures.labels(action="snapshot")._value.get() == 1
        # the alert was written with the reason: a restarted engine shows it
        [hot] = [a for a in Engine(store, cfg).alerts() if a["labels"]["alertname"] == "Hot"]
        assert "snapshot_error" in hot["annotations"]
    finally:
        release.set()


def test_a_group_named_by_a_number_keeps_working():
    rule = {"alert": "A", "kind": "red", "signal": "rate"}
    assert [r.id for r in build_config([("f.yaml", {"groups": [{"name": 2024, "rules": [rule]}]})]).rules] == ["2024/A"]
