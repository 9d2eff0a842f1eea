"""Instrumentations load when the host imports the library they instrument, not at start-up.

The agent used to load every installed instrumentation in ``start()``: a host that never used
FastAPI, redis or requests imported them anyway (0.5 s of an empty script's 0.7 s under
``tracehouse-agent run``).
"""

import json
import os
import subprocess
import sys
import textwrap

from tests.agent.otlp_sink import closed_port_url

BIN = os.path.dirname(sys.executable)
LIBRARIES = ("fastapi", "starlette", "uvicorn", "gunicorn", "flask", "redis", "requests", "sqlalchemy",
             "psycopg2", "urllib3")


def run_under_agent(tmp_path, script: str, endpoint: str, **env) -> dict:
    (tmp_path / "host.py").write_text(textwrap.dedent(script))
    out = subprocess.run([f"{BIN}/tracehouse-agent", "run", "--service", "lazy", "--endpoint", endpoint, "--",
                          sys.executable, str(tmp_path / "host.py")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="100", **env))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_host_that_imports_nothing_gets_none_of_the_instrumented_libraries(tmp_path):
    got = run_under_agent(tmp_path, f"""
        import json, sys
        from tracehouse.agent import pipeline
        assert pipeline.current() is not None, "the agent is running"
        print(json.dumps({{"imported": [m for m in {LIBRARIES!r} if m in sys.modules]}}))
    """, closed_port_url())
    assert got["imported"] == []


def test_libraries_imported_after_start_are_instrumented_when_imported(tmp_path, sink):
    got = run_under_agent(tmp_path, f"""
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
