"""Rule unit tests in the manner of ``promtool test rules``.

A test file names ``rule_files`` (relative to itself) and lists ``tests``; each test writes its
input (``input_series`` in promtool's notation, ``input_spans`` as compact span streams) into a
fresh embedded chDB database, evaluates the rules with an injected clock every
``evaluation_interval`` from the start, and at each ``eval_time`` compares the *firing* alerts of
``alertname`` with ``exp_alerts``: labels must be equal; annotations listed must be equal
(annotations not listed, like the automatic ``dashboard`` link, are not compared).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import yaml

from .config import load_files
from .engine import Engine
from .rules import RuleError, duration
from .series import insert_input

NS = 1_000_000_000


@dataclass
class Outcome:
    file: str
    failures: list[str] = field(default_factory=list)
    checks: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures


def _base_s() -> int:
    # a whole hour two hours back: inside every retention window, minute-aligned for red_1m
    return (int(time.time()) // 3600 - 2) * 3600


def run_file(path: str, storage_base: str) -> Outcome:
    """Run one test file; ``storage_base`` is ``chdb:///dir`` (each test gets its own database)."""
    out = Outcome(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        here = os.path.dirname(os.path.abspath(path))
        files = [os.path.join(here, p) for p in doc.get("rule_files") or []]
        config = load_files(files)
    except (OSError, yaml.YAMLError, RuleError) as e:
        out.failures.append(f"{path}: {e}")
        return out
    config.route, config.receivers = None, {}  # unit tests never send
    default_step = duration(doc.get("evaluation_interval", 0), "evaluation_interval") or \
        min((r.interval for r in config.rules), default=10.0)
    for i, test in enumerate(doc.get("tests") or []):
        name = str(test.get("name") or f"test {i + 1}")
        try:
            _run_test(test, name, config, default_step, storage_base, out)
        except (RuleError, ValueError, KeyError) as e:
            out.failures.append(f"{name}: bad test: {e}")
    return out


def _run_test(test: dict[str, Any], name: str, config: Any, step: float, storage_base: str, out: Outcome) -> None:
    from tracehouse.storage import Store

    db = "ruletest_" + uuid.uuid4().hex[:12]
    sep = "&" if "?" in storage_base else "?"
    store = Store.open(f"{storage_base}{sep}database={db}" if storage_base.startswith("chdb") else f"{storage_base}/{db}")
    try:
        store.migrate()
        base = _base_s()
        insert_input(store, test.get("input_spans") or [], test.get("input_series") or [], base,
                     duration(test.get("interval", "1m"), "interval"))
        clock = [base * NS]
        engine = Engine(store, config, clock=lambda: clock[0], dashboard_url=str(test.get("dashboard_url", "")))
        cases = sorted(test.get("alert_rule_test") or [], key=lambda c: duration(c["eval_time"], "eval_time"))
        t = 0.0
        for case in cases:
            at = duration(case["eval_time"], "eval_time")
            while t <= at:
                clock[0] = int((base + t) * NS)
                engine.run_once()
                t += step
            _compare(engine, case, name, at, out)
    finally:
        try:
            store.drop_database()
        finally:
            store.close()


def _compare(engine: Engine, case: dict[str, Any], name: str, at: float, out: Outcome) -> None:
    alertname = str(case.get("alertname", ""))
    got = [a for a in engine.current_alerts() if a.state == "firing" and a.labels.get("alertname") == alertname]
    want = case.get("exp_alerts") or []
    out.checks += 1
    got_labels = sorted((dict(a.labels) for a in got), key=lambda d: sorted(d.items()))
    want_labels = sorted(({**{str(k): str(v) for k, v in (w.get("exp_labels") or {}).items()}, "alertname": alertname}
                          for w in want), key=lambda d: sorted(d.items()))
    problems = []
    if got_labels != want_labels:
        problems.append(f"  expected labels: {want_labels}\n  got labels:      {got_labels}")
    else:
        by_labels = {tuple(sorted(a.labels.items())): a for a in got}
        for w in want:
            labels = {**{str(k): str(v) for k, v in (w.get("exp_labels") or {}).items()}, "alertname": alertname}
            a = by_labels[tuple(sorted(labels.items()))]
            ann = dict(a.annotations, **a.extra_annotations)
            for k, v in (w.get("exp_annotations") or {}).items():
                if ann.get(str(k)) != str(v):
                    problems.append(f"  {labels}: annotation {k}: expected {str(v)!r}, got {ann.get(str(k))!r}")
    if problems:
        out.failures.append(f"{name}: alertname={alertname} at eval_time={case['eval_time']}:\n" + "\n".join(problems))


def run_files(paths: list[str], storage_base: str | None = None) -> list[Outcome]:
    if storage_base is None:
        import tempfile

        storage_base = "chdb://" + tempfile.mkdtemp(prefix="tracehouse-ruletest-")
    return [run_file(p, storage_base) for p in paths]
