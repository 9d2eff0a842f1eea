"""The agent in a service after ``opentelemetry-bootstrap -a install``, as users set one up.

Bootstrap installs a stock instrumentation for every library it finds, the standard library's
included: ``urllib``, ``logging``, ``system_metrics`` (psutil is there: the agent needs it) and
``httpx`` (whose distribution also declares an ``httpx2`` entry point). The real packages are
installed here with pip into a temporary directory (a few hundred kB, from pip's cache after the
first run), of the release line of the installed opentelemetry-instrumentation, and put on
``PYTHONPATH`` of a host run under ``tracehouse-agent run``.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

from tests.agent.helpers import run_host
from tests.agent.otlp_sink import attrs, closed_port_url

STOCK = ("instrumentation-urllib", "instrumentation-logging", "instrumentation-system-metrics",
         "instrumentation-httpx", "util-http")


@pytest.fixture(scope="module")
def stock(tmp_path_factory) -> str:
    """The stock instrumentations and their helpers, without the dependencies the agent has."""
    minor = int(version("opentelemetry-instrumentation").split(".")[1].split("b")[0])
    target = str(tmp_path_factory.mktemp("bootstrapped"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--target", target, *(f"opentelemetry-{name}>=0.{minor}b0,<0.{minor + 1}"
                                          for name in STOCK)], check=True, timeout=240, capture_output=True)
    return target


# the agent's instrumentation report, as a host prints it
REPORT = "{k: getattr(pipeline.current().instrumentation, k) for k in ('loaded', 'skipped', 'failed')}"


def test_the_agents_command_polls_make_no_spans(tmp_path, stock, sink):
    """The stock ``urllib`` instrumentation traced the agent's own command polls: a root ``GET``
    client span every ``TRACEHOUSE_COMMAND_POLL_S`` in every process of the service."""
    got, _ = run_host(tmp_path, f"""
        import json, time, urllib.request
        from tracehouse.agent import pipeline, stats
        deadline = time.monotonic() + 20
        while stats().get("commands.polled", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        urllib.request.urlopen("{sink.url}/the-hosts-own", timeout=5).read()  # traced: the host's call
        pipeline.current().force_flush(5)
        print(json.dumps({REPORT}))
    """, sink.url, stock, TRACEHOUSE_COMMAND_POLL_S="0.2")
    assert "urllib" in got["loaded"], got
    polls = [path for path, _ in sink.gets if path.startswith("/v1/tracehouse/commands")]
    assert len(polls) >= 2
    client = sink.wait(lambda s: [x for _, x in s.spans() if x.kind == 3])
    assert [attrs(x.attributes).get("url.full") for x in client] == [f"{sink.url}/the-hosts-own"]


def test_the_stock_logging_instrumentation_leaves_the_hosts_logging_as_it_was(tmp_path, stock, sink):
    """It added an SDK handler to the root logger: Python's last-resort output of a warning stopped
    (the host's line vanished from its stderr) and every record was exported twice."""
    got, stderr = run_host(tmp_path, f"""
        import json, logging
        from tracehouse.agent import pipeline
        handlers = [type(h).__name__ for h in logging.getLogger().handlers]
        logging.getLogger("app").warning("low on disk")
        pipeline.current().force_flush(5)
        print(json.dumps(dict({REPORT}, root_handlers=handlers)))
    """, sink.url, stock)
    assert "logging" in got["loaded"] and got["root_handlers"] == []
    assert stderr.splitlines() == ["low on disk"]
    records = sink.wait(lambda s: [r.body.string_value for _, r in s.logs()])
    assert records == ["low on disk"]


def test_system_metrics_are_not_sent_twice(tmp_path, stock, sink):
    """The stock ``system_metrics`` sent twelve metrics under the names of the agent's own
    (``process.cpu.time``, ``system.memory.usage`` …): two series of one name for one resource."""
    got, _ = run_host(tmp_path, f"""
        import json
        from tracehouse.agent import pipeline
        pipeline.current().force_flush(5)
        print(json.dumps({REPORT}))
    """, sink.url, stock)
    assert "system_metrics" in got["skipped"] and "system_metrics" not in got["loaded"]
    assert sink.wait(lambda s: any(m.name == "process.cpu.time" for _, m in s.metrics()))
    scopes: dict[str, set[str]] = {}
    with sink.lock:
        for path, msg, _ in sink.requests:
            if path == "/v1/metrics":
                for rm in msg.resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            scopes.setdefault(m.name, set()).add(sm.scope.name)
    assert {name: s for name, s in scopes.items() if len(s) > 1} == {}


def test_an_instrumentor_for_a_library_not_installed_is_skipped_quietly(tmp_path, stock, sink):
    """opentelemetry-instrumentation-httpx declares ``httpx`` and ``httpx2`` entry points; with only
    httpx installed its requirements (either one) are met, but the ``httpx2`` instrumentor raised
    ModuleNotFoundError: counted as a failure, with a warning on the host's stderr."""
    got, stderr = run_host(tmp_path, f"""
        import json
        import httpx
        from tracehouse.agent import pipeline
        httpx.get("{sink.url}/x", timeout=5)
        pipeline.current().force_flush(5)
        print(json.dumps({REPORT}))
    """, sink.url, stock)
    assert "httpx" in got["loaded"] and "httpx2" in got["skipped"]
    assert got["failed"] == {} and stderr == ""
    assert sink.wait(lambda s: [x for _, x in s.spans() if x.kind == 3])


def test_the_trace_context_log_format_keeps_working_while_the_process_exits(tmp_path, stock):
    """``OTEL_PYTHON_LOG_CORRELATION=true`` puts a log format with trace ids on the root logger.
    The agent undid the instrumentation at exit, the format stayed: every record made after that
    (here the agent's own warnings about a collector that is down) was a ``--- Logging error ---``
    traceback on stderr instead of a line."""
    got, stderr = run_host(tmp_path, f"""
        import json, logging
        from tracehouse.agent import pipeline
        logging.getLogger("app").warning("before exit")
        print(json.dumps({REPORT}))
    """, closed_port_url(), stock, OTEL_PYTHON_LOG_CORRELATION="true")
    assert "logging" in got["loaded"]
    assert "Logging error" not in stderr and "Traceback" not in stderr, stderr
    assert "trace_id=0 span_id=0" in stderr.splitlines()[0] and "before exit" in stderr.splitlines()[0]
