import logging
import subprocess
import sys

import pytest

from tracehouse.agent import config


def test_otel_variables_win_over_tracehouse_ones(monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "otel-svc")
    monkeypatch.setenv("TRACEHOUSE_SERVICE", "th-svc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318/")
    monkeypatch.setenv("TRACEHOUSE_ENDPOINT", "http://th:4318")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    monkeypatch.setenv("TRACEHOUSE_SAMPLE_RATIO", "0.5")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20tok,x-a=b")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=core")
    cfg = config.resolve()
    assert cfg.service == "otel-svc"
    assert cfg.endpoint == "http://otel:4318"
    assert cfg.sample_ratio == 0.25
    assert cfg.headers == {"authorization": "Bearer tok", "x-a": "b"}
    assert cfg.resource_attributes == {"deployment.environment": "prod", "team": "core"}


def test_arguments_win_and_tracehouse_fallbacks(monkeypatch):
    monkeypatch.setenv("TRACEHOUSE_SERVICE", "th-svc")
    monkeypatch.setenv("TRACEHOUSE_SAMPLE_RATIO", "0.5")
    monkeypatch.setenv("TRACEHOUSE_TOKEN", "s3cret")
    monkeypatch.setenv("TRACEHOUSE_METRICS_INTERVAL", "2")
    cfg = config.resolve()
    assert (cfg.service, cfg.sample_ratio, cfg.metrics_interval) == ("th-svc", 0.5, 2.0)
    assert cfg.headers["authorization"] == "Bearer s3cret"
    assert cfg.endpoint == "http://127.0.0.1:4318"
    cfg = config.resolve("arg-svc", "https://c.example:4318", sample_ratio=1.0)
    assert (cfg.service, cfg.endpoint, cfg.sample_ratio) == ("arg-svc", "https://c.example:4318", 1.0)


def test_bad_environment_values_are_logged_and_defaulted(monkeypatch, caplog):
    monkeypatch.setenv("TRACEHOUSE_SAMPLE_RATIO", "lots")
    monkeypatch.setenv("TRACEHOUSE_METRICS_INTERVAL", "-3")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")
    monkeypatch.setenv("TRACEHOUSE_LOG_LEVEL", "chatty")
    with caplog.at_level(logging.WARNING, "tracehouse.agent"):
        cfg = config.resolve()
    assert (cfg.sample_ratio, cfg.metrics_interval, cfg.endpoint, cfg.log_level) == \
        (1.0, 15.0, "http://127.0.0.1:4318", logging.WARNING)
    text = caplog.text
    for name in ("TRACEHOUSE_SAMPLE_RATIO", "TRACEHOUSE_METRICS_INTERVAL", "not a url", "TRACEHOUSE_LOG_LEVEL"):
        assert name in text


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        config.resolve(endpoint="ftp://x")
    with pytest.raises(ValueError):
        config.resolve(sample_ratio=2)


def test_import_is_cheap_and_lazy():
    code = ("import sys, tracehouse.agent as a; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('opentelemetry', 'fastapi', 'chdb', "
            "'clickhouse_driver', 'plotly', 'psutil', 'requests')]; print(bad); print(a.__all__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "[]"
    assert "start" in out and "stats" in out
