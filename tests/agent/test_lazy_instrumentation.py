"""Instrumentations load when the host imports the library they instrument, not at start-up.

The agent used to load every installed instrumentation in ``start()``: a host that never used
FastAPI, redis or requests imported them anyway (0.5 s of an empty script's 0.7 s under
``tracehouse-agent run``).
"""

import os
import sys
import textwrap

from tests.agent.helpers import run_host
from tests.agent.otlp_sink import closed_port_url

BIN = os.path.dirname(sys.executable)
LIBRARIES = ("fastapi", "starlette", "uvicorn", "gunicorn", "flask", "redis", "requests", "sqlalchemy",
             "psycopg2", "urllib3")


def test_a_host_that_imports_nothing_gets_none_of_the_instrumented_libraries(tmp_path):
    got, _ = run_host(tmp_path, f"""
        import json, sys
        from tracehouse.agent import pipeline
        assert pipeline.current() is not None, "the agent is running"
        print(json.dumps({{"imported": [m for m in {LIBRARIES!r} if m in sys.modules]}}))
    """, closed_port_url())
    assert got["imported"] == []


def test_sdk_disabled_imports_no_part_of_opentelemetry_and_starts_nothing(tmp_path, sink):
    # OTEL_SDK_DISABLED used to switch every signal off only after the configuration was
    # resolved, which imports the SDK (its sampler, resources, psutil): 0.3 s of every start
    got, _ = run_host(tmp_path, """
        import json, sys, threading
        import tracehouse.agent
        handle = tracehouse.agent.start()  # a second call, as an application would make
        print(json.dumps({"otel": sorted(m for m in sys.modules if m.split(".")[0] in ("opentelemetry", "psutil")),
                          "threads": [t.name for t in threading.enumerate()],
                          "config": repr(handle.config), "flush": handle.force_flush(),
                          "shutdown": tracehouse.agent.shutdown()}))
    """, sink.url, OTEL_SDK_DISABLED="true")
    assert got == {"otel": [], "threads": ["MainThread"], "config": "None", "flush": True, "shutdown": True}
    assert not sink.spans()


def test_libraries_imported_after_start_are_instrumented_when_imported(tmp_path, sink):
    got, _ = run_host(tmp_path, f"""
        import json, sys
        from tracehouse.agent import pipeline, pools

        agent = pipeline.current()
        pending_before = sorted(agent.instrumentation.pending)
        # FastAPI's import is what imports Starlette here: both classes get the lean middleware
        from fastapi import FastAPI
        from fastapi.testclient import TestClient
        import requests
        import redis

        app = FastAPI()

        @app.get("/items/{{item}}")
        def item(item: int):
            requests.get("{sink.url}/health", timeout=5)
            return {{"item": item}}

        assert TestClient(app).get("/items/7").status_code == 200
        pool = redis.ConnectionPool(host="127.0.0.1", port=1)
        agent.force_flush(5)
        print(json.dumps({{"pending_before": pending_before, "loaded": agent.instrumentation.loaded,
                           "pending_after": agent.instrumentation.pending,
                           "pools": [p["name"] for p in pools.snapshot()]}}))
    """, sink.url)
    assert "requests" in got["pending_before"] and "tracehouse.starlette" in got["pending_before"]
    assert {"requests", "tracehouse.starlette"} <= set(got["loaded"])
    assert "requests" not in got["pending_after"] and "tracehouse.starlette" not in got["pending_after"]
    assert got["pools"] == ["redis://127.0.0.1:1/0"]
    spans = sink.wait(lambda s: s.spans() if {x.kind for _, x in s.spans()} >= {2, 3} else None)
    server = [s for _, s in spans if s.kind == 2]
    assert [s.name for s in server] == ["GET /items/{item}"], "one server span"
    # only the lean middleware records this: FastAPI's own tracing would have made the span without it
    assert sink.wait(lambda s: any(m.name == "http.server.request.duration" for _, m in s.metrics()))
    client = next(s for _, s in spans if s.kind == 3)
    assert client.trace_id == server[0].trace_id and client.parent_span_id == server[0].span_id


def fake_instrumentation(root, name: str, requires: list[str], extra: str, library: str) -> None:
    """An installed instrumentation distribution as pip lays one out: its module (which imports the
    library at import time, as the real ones do), METADATA naming what it instruments under the
    ``instruments`` extra and an ``opentelemetry_instrumentor`` entry point."""
    (root / f"{name}.py").write_text(textwrap.dedent(f"""
        import {library}
        from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

        class Instrumentor(BaseInstrumentor):
            def instrumentation_dependencies(self):
                return ()

            def _instrument(self, **kwargs):
                {library}.instrumented_by = "{name}"

            def _uninstrument(self, **kwargs):
                pass
    """))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: " + name + "\nVersion: 1.0\n"
                                   f"Provides-Extra: {extra}\n"
                                   + "".join(f'Requires-Dist: {r}; extra == "{extra}"\n' for r in requires))
    (info / "entry_points.txt").write_text(f"[opentelemetry_instrumentor]\n{name} = {name}:Instrumentor\n")
    (info / "RECORD").write_text(f"{name}.py,,\n{info.name}/METADATA,,\n")


def test_an_instrumentation_waits_for_its_library_under_another_import_name(tmp_path):
    """``psycopg2-binary`` installs the module ``psycopg2``; an instrumentation that names either
    distribution (``instruments-any``, as opentelemetry-instrumentation-psycopg2 does) is loaded when
    ``psycopg2`` is imported, and one naming a library that is not installed is not loaded at all."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    fake_instrumentation(plugins, "fake_pg", ["psycopg2>=2.7", "psycopg2-binary>=2.7"], "instruments-any", "psycopg2")
    fake_instrumentation(plugins, "fake_absent", ["no-such-library>=1"], "instruments", "no_such_library")
    got, _ = run_host(tmp_path, """
        import json, sys
        from tracehouse.agent import pipeline

        report = pipeline.current().instrumentation
        before = {"pending": sorted(report.pending), "imported": "psycopg2" in sys.modules}
        import psycopg2
        print(json.dumps({"before": before, "by": getattr(psycopg2, "instrumented_by", None),
                          "loaded": report.loaded, "skipped": report.skipped, "failed": report.failed}))
    """, closed_port_url(), pythonpath=str(plugins))
    assert got["before"] == {"pending": got["before"]["pending"], "imported": False}
    assert "fake_pg" in got["before"]["pending"]
    assert got["by"] == "fake_pg" and "fake_pg" in got["loaded"] and not got["failed"]
    assert "fake_absent" in got["skipped"] and "fake_absent" not in got["loaded"]


def test_a_child_forked_while_another_thread_imports_can_import(tmp_path):
    """Once the agent waits for an import, every import passes through wrapt's finder and its lock.
    A fork while another thread holds that lock (a worker forked while an export thread imports)
    must not leave the child unable to import anything."""
    got, _ = run_host(tmp_path, """
        import json, os, signal, threading
        import wrapt.importer

        held, release = threading.Event(), threading.Event()

        def hold():
            with wrapt.importer._post_import_hooks_lock:
                held.set()
                release.wait(10)

        threading.Thread(target=hold, daemon=True).start()
        held.wait(5)
        pid = os.fork()
        if pid == 0:
            signal.alarm(5)  # the old code waits here for ever
            import colorsys  # a module not imported yet
            os._exit(0)
        release.set()
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"child": os.waitstatus_to_exitcode(status)}))
    """, closed_port_url())
    assert got == {"child": 0}


def test_an_instrumentation_for_an_unsupported_version_says_why_it_was_skipped(tmp_path):
    """``opentelemetry-bootstrap`` installs opentelemetry-instrumentation-sqlalchemy (SQLAlchemy < 2.1)
    next to SQLAlchemy 2.1: skipped, as opentelemetry-instrument does, but nothing said so, and a
    service importing SQLAlchemy got no span of its own nor a reason."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    fake_instrumentation(plugins, "fake_old", ["pytest<1"], "instruments", "pytest")
    got, _ = run_host(tmp_path, """
        import json
        from tracehouse.agent import pipeline, stats

        report = pipeline.current().instrumentation
        print(json.dumps({"skipped": report.skipped, "unsupported": report.unsupported,
                          "count": stats().get("instrumentations.unsupported_version", 0)}))
    """, closed_port_url(), pythonpath=str(plugins))
    assert "fake_old" in got["skipped"] and got["count"] >= 1
    assert "pytest<1" in got["unsupported"]["fake_old"].replace(" ", "")
