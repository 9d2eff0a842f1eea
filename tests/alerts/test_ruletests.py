"""The project's own rule tests (tests/alerts/rules/*_test.yaml), through the same code path as
``tracehouse alerts test``; and the command itself, failing with a readable diff."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from tracehouse.alerts.ruletest import run_files

RULES = os.path.join(os.path.dirname(__file__), "rules")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(RULES, "*_test.yaml"))))
def test_project_rule_tests(path, chdb_dir):
    [outcome] = run_files([path], f"chdb://{chdb_dir}")
    assert outcome.ok, "\n".join(outcome.failures)
    assert outcome.checks > 0


def test_cli_reports_a_failing_expectation(tmp_path):
    bad = tmp_path / "bad_test.yaml"
    bad.write_text(f"""
rule_files: [{os.path.join(RULES, 'checkout_rules.yaml')}]
tests:
  - name: wrong expectation
    input_spans: [{{service: payments, name: POST /pay, every: 1s, for: 2m, error_ratio: 0.5}}]
    alert_rule_test:
      - eval_time: 1m
        alertname: PaymentsErrorRate
        exp_alerts:
          - exp_labels: {{service: payments, severity: warning}}
""")
    env = dict(os.environ)
    res = subprocess.run([sys.executable, "-m", "tracehouse.cli", "alerts", "test", str(bad)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAILED" in res.stdout and "wrong expectation" in res.stdout
    assert "'severity': 'warning'" in res.stdout and "'severity': 'critical'" in res.stdout
