"""The agent's private SDK shortcuts (``tracehouse.agent.sdk_private``) against every SDK release
range it claims, and its public-API fallback for a release it does not know.

Older releases are installed with pip into temporary directories (a few hundred kB each, from
pip's cache after the first run) and put first on ``PYTHONPATH`` of a child interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tracehouse.agent import sdk_private

CHECK = r"""
import json, sys
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from tracehouse.agent import http_server, sdk_private
import tracehouse.agent.pipeline, tracehouse.agent.otlp_exporters  # noqa: F401 - they import on this release

if sys.argv[1] == "public":
    sdk_private.force(False)
sdk_private.refresh()
reader = InMemoryMetricReader()
tp = TracerProvider()
inst = http_server.Instruments(tp, MeterProvider(metric_readers=[reader]))
from opentelemetry import context, trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
mem = InMemorySpanExporter()
tp.add_span_processor(SimpleSpanProcessor(mem))
for seconds in (0.003, 0.02, 0.02, 0.6, 30.0):
    span = inst.spans.start("GET", None, 1, {"url.path": "/a", "server.port": 80})
    token = context.attach(trace.set_span_in_context(span))
    tp.get_tracer("child").start_span("db").end()
    context.detach(token)
    http_server.finish(inst, span, "GET", "/a", 200, 0, int(seconds * 1e9), None)
child, server = mem.get_finished_spans()[:2]
points = [p for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics
          if m.name == "http.server.request.duration" for p in m.data.data_points]
p = points[0]
print(json.dumps({"version": list(sdk_private.sdk_version()), "private": not inst.duration.direct,
                  "lean": type(server).__name__ == "LeanServerSpan" and inst.spans.lean,
                  "parented": child.parent.span_id == server.context.span_id, "name": server.name,
                  "attrs": dict(span.attributes), "count": p.count, "sum": round(p.sum, 6), "min": p.min,
                  "max": p.max, "buckets": list(p.bucket_counts), "exemplars": len(p.exemplars),
                  "exemplar_ids": sorted({e.trace_id > 0 and e.span_id > 0 for e in p.exemplars})}))
"""

EXPECTED = {"count": 5, "sum": 30.643, "min": 0.003, "max": 30.0,
            "buckets": [1, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1], "exemplars": 4, "exemplar_ids": [True],
            "attrs": {"url.path": "/a", "server.port": 80, "http.request.method": "GET",
                      "http.response.status_code": 200, "http.route": "/a"}, "parented": True, "name": "GET /a"}


def _run(mode: str, path: str | None = None) -> dict:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", CHECK, mode], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


_INSTALLED: dict[int, str] = {}


def _install(tmp_path_factory, minor: int) -> str:
    """SDK, API and semantic conventions of release 1.``minor``, and the OTLP encoder and protobuf
    classes of the same release (they move together: pip installs them as a set)."""
    if minor not in _INSTALLED:
        target = str(tmp_path_factory.mktemp(f"sdk1.{minor}"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "--target", target, f"opentelemetry-sdk==1.{minor}.0", f"opentelemetry-api==1.{minor}.0",
                        f"opentelemetry-semantic-conventions==0.{minor + 21}b0",
                        f"opentelemetry-exporter-otlp-proto-common==1.{minor}.0", f"opentelemetry-proto==1.{minor}.0"],
                       check=True, timeout=240, capture_output=True)
        _INSTALLED[minor] = target
    return _INSTALLED[minor]


@pytest.mark.parametrize("minor", sorted({sdk_private.SUPPORTED[0][1], 35, 40}))
def test_private_path_on_older_supported_releases(tmp_path_factory, minor):
    got = _run("private", _install(tmp_path_factory, minor))
    assert got.pop("version") == [1, minor] and got.pop("private") is True and got.pop("lean") is True
    assert got == EXPECTED


START = r"""
import logging, sys, time
sys.path.insert(0, sys.argv[1])
from tests.agent.otlp_sink import Sink
sink = Sink()
import tracehouse.agent as agent
from opentelemetry import metrics, trace
h = agent.start(service="old-sdk", endpoint=sink.url, instrument=False, metrics_interval=0.2)
with trace.get_tracer("t").start_as_current_span("s"):
    logging.getLogger("app").warning("hello")
metrics.get_meter("m").create_counter("c").add(1)
time.sleep(0.5)
h.force_flush(5)
h.shutdown(2)
print(len(sink.spans()), len(sink.logs()), any(m.name == "c" for _, m in sink.metrics()), agent.stats().get("errors", 0))
"""


@pytest.mark.parametrize("minor", sorted({sdk_private.SUPPORTED[0][1], 35, 40}))
def test_the_agent_starts_and_sends_every_signal_on_older_supported_releases(tmp_path_factory, minor):
    """The log exporter's base class was imported by its 1.39 name: on 1.30-1.38, which
    ``pyproject.toml`` allows, ``tracehouse.agent.start()`` raised ImportError in the host."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=_install(tmp_path_factory, minor) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", START, here], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["1", "1", "True", "0"], (out.stdout, out.stderr[-3000:])


def test_installed_release_is_in_range_and_the_public_fallback_gives_the_same_figures():
    assert sdk_private.supported(), "the pinned SDK is outside sdk_private.SUPPORTED"
    private = _run("private")
    public = _run("public")
    assert private.pop("private") is True and public.pop("private") is False
    assert private.pop("lean") is True and public.pop("lean") is False
    assert private == public and private.pop("version") and {k: private[k] for k in EXPECTED} == EXPECTED


def test_pyproject_pins_the_supported_range():
    import tomllib

    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(here, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    (lo, hi) = sdk_private.SUPPORTED
    assert f"opentelemetry-sdk>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}" in deps
