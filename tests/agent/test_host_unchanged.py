"""The host's own behaviour with the agent in it: its logging output and levels, its tracebacks,
its flushes, its warnings filter, other Pythons it starts. Each case was found by running real
programs with and without ``tracehouse-agent run`` and comparing what they did."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.agent.otlp_sink import HangingServer, Sink

AGENT_RUN = os.path.join(os.path.dirname(sys.executable), "tracehouse-agent")


def _py(code: str, *args: str, env: dict | None = None, agent: str | None = None, timeout: float = 60):
    """Run ``code`` in a new Python, under ``tracehouse-agent run`` sending to ``agent`` if given."""
    cmd = [sys.executable, *args, "-c", code]
    if agent is not None:
        cmd = [AGENT_RUN, "run", "--service", "host", "--endpoint", agent, "--", *cmd]
    e = dict(os.environ, **(env or {}))
    e.pop("PYTHONPATH", None) if agent is None else None
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)


LOGGING = """
import logging, sys
logging.getLogger("app").warning("unconfigured warning")   # Python's last resort prints it
logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
logging.getLogger("app").info("configured info")
print("root", logging.getLogger().level, [type(h).__name__ for h in logging.getLogger().handlers])
"""


def test_the_hosts_logging_output_is_what_it_is_without_the_agent():
    """The agent's handler on the root logger made ``basicConfig`` a no-op and silenced Python's
    last-resort output: the host's log lines vanished. Its records are still exported."""
    sink = Sink()
    try:
        plain, agent = _py(LOGGING), _py(LOGGING, agent=sink.url)
        assert agent.returncode == plain.returncode == 0
        assert (agent.stdout, agent.stderr) == (plain.stdout, plain.stderr)
        assert "unconfigured warning" in plain.stderr and "INFO:app:configured info" in plain.stderr
        assert sink.wait(lambda s: s.logs())
        assert "unconfigured warning" in [r.body.string_value for _, r in sink.logs()]
    finally:
        sink.close()


LEVEL = """
import logging, sys
logging.getLogger().setLevel(logging.ERROR)
app = logging.getLogger("app")
app.addHandler(logging.StreamHandler(sys.stdout))
import tracehouse.agent as a
a.start(service="host", endpoint=sys.argv[1], instrument=False, metrics=False)
app.warning("a warning the host filters out")
app.error("an error it shows")
print("root level", logging.getLogger().level)
"""


def test_the_agent_leaves_the_hosts_levels_alone():
    """Starting the agent lowered the root level to its export level: a handler the host put on its
    own logger printed warnings the host had filtered out."""
    sink = Sink()
    try:
        out = subprocess.run([sys.executable, "-c", LEVEL, sink.url], capture_output=True, text=True, timeout=60)
        assert out.stdout.splitlines() == ["an error it shows", f"root level {40}"], out.stderr
    finally:
        sink.close()


def test_an_uncaught_exception_is_printed_at_once_and_exit_stays_bounded():
    """The agent's excepthook flushed logs before the host's traceback: against a hung collector the
    traceback came after the export timeout (3.5 s; 10.6 s with TRACEHOUSE_EXPORT_TIMEOUT=10), and
    exit after twice that (66 s with 60)."""
    hang = HangingServer()
    code = "import sys, time; print(time.time(), flush=True); raise ValueError('boom')"
    try:
        t0 = time.time()
        proc = subprocess.Popen([AGENT_RUN, "run", "--service", "host", "--endpoint", hang.url, "--", sys.executable,
                                 "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, TRACEHOUSE_EXPORT_TIMEOUT="10"))
        started = float(proc.stdout.readline())
        first = proc.stderr.readline()
        printed = time.time()
        rest = proc.stderr.read()
        rc = proc.wait(60)
        ended = time.time()
    finally:
        hang.close()
    assert first.startswith("Traceback") and "ValueError: boom" in rest and rc == 1
    assert printed - started < 1.0, printed - started
    assert ended - t0 < 8.0, ended - t0  # start-up, then shutdown within its 5 s


def test_force_flush_returns_within_its_timeout_against_a_hung_collector():
    """Spans, metrics and logs were flushed one after another, and the SDK's log and metric
    processors wait for an export in flight: ``force_flush(1.0)`` took 4 s."""
    hang = HangingServer()
    code = """
import logging, sys, time
import tracehouse.agent as a
from opentelemetry import trace
h = a.start(service="host", endpoint=sys.argv[1], instrument=False, metrics_interval=0.2)
for _ in range(100):
    with trace.get_tracer("t").start_as_current_span("s"):
        logging.getLogger("app").error("e")
time.sleep(0.5)
t0 = time.monotonic(); ok = h.force_flush(1.0); print(ok, time.monotonic() - t0)
"""
    try:
        out = subprocess.run([sys.executable, "-c", code, hang.url], capture_output=True, text=True, timeout=60)
    finally:
        hang.close()
    ok, took = out.stdout.split()
    assert ok == "False" and float(took) < 1.5, (out.stdout, out.stderr[-2000:])


@pytest.mark.parametrize("name, value", [
    ("OTEL_BSP_SCHEDULE_DELAY", "1e13"), ("TRACEHOUSE_METRICS_INTERVAL", "1e13"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "1e400"), ("TRACEHOUSE_PROBE_INTERVAL", "1e13"),
    ("TRACEHOUSE_SNAPSHOT_MEMORY_MB", "1e400"), ("TRACEHOUSE_LOG_LEVEL", "²"),
    ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://[::1"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://[::1"),
])
def test_an_absurd_setting_falls_back_and_never_reaches_the_host(name, value):
    """Past ``threading.TIMEOUT_MAX`` an interval killed its agent thread (a traceback on the host's
    stderr, that signal stopped); "²" passed ``isdigit`` and ``int()`` raised in ``start()``; an
    unclosed IPv6 literal made ``urlsplit`` raise there too."""
    sink = Sink()
    code = """
import sys, time, threading
import tracehouse.agent as a
from opentelemetry import trace
a.start(service="host", instrument=False, probes=["tcp://127.0.0.1:9"])  # the endpoint from the environment
time.sleep(0.3)
print(sorted(t.name for t in threading.enumerate() if t.name.startswith(("tracehouse", "Otel"))))
"""
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, **{name: value}))
    finally:
        sink.close()
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert f"ignoring {name}" in out.stderr or name == "OTEL_BSP_SCHEDULE_DELAY", out.stderr
    assert {"tracehouse-spans", "tracehouse-probes", "OtelPeriodicExportingMetricReader"} <= set(eval(out.stdout))  # noqa: S307


def test_a_host_run_with_warnings_as_errors_gets_a_whole_agent_or_none():
    """``-W error`` turned the SDK's deprecation of its logging handler into an exception halfway
    through the start: the agent said it did not start, yet left its threads and global providers
    running, with no shutdown at exit."""
    sink = Sink()
    code = "import tracehouse.agent.pipeline as p, threading; print(p.current() is not None, threading.active_count() > 3)"
    try:
        out = _py(code, "-W", "error", agent=sink.url)
    finally:
        sink.close()
    assert out.stdout.split() == ["True", "True"] and "did not start" not in out.stderr, out.stderr[-2000:]


def test_another_python_the_host_starts_says_nothing_of_the_agent(tmp_path):
    """Every Python the host starts inherits PYTHONPATH: one without tracehouse (a system tool,
    another virtualenv) printed "tracehouse agent did not start: ModuleNotFoundError" on stderr."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    out = subprocess.run([AGENT_RUN, "run", "--service", "host", "--endpoint", "http://127.0.0.1:9", "--",
                          str(bare / "bin" / "python"), "-c", "print('child'); raise SystemExit(7)"],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (7, "child\n", "")


def test_a_command_that_cannot_run_exits_as_under_a_shell(tmp_path):
    """A file that is not executable exited 127 (not found) where a shell exits 126."""
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho never\n")
    for target, code in ((str(script), 126), (str(tmp_path / "missing"), 127)):
        shell = subprocess.run(["sh", "-c", f"'{target}'"], capture_output=True, timeout=30)
        agent = subprocess.run([AGENT_RUN, "run", "--", target], capture_output=True, text=True, timeout=30)
        assert agent.returncode == shell.returncode == code, (target, agent.stderr)
        assert "cannot run" in agent.stderr
