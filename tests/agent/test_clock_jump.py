"""The wall clock jumps (an NTP step, a VM resumed, an operator's ``date -s``) while a request is
in flight, in a real instrumented process: the request's span, its duration and the slow-request
watchdog measure the time that passed, not the jump.

The machine's clock cannot be stepped under a shared test run, so the host process steps its own:
its ``time.time_ns``/``time.time`` (what the agent and the SDK read the wall clock with) are
offset by an hour from inside the request, before the agent is imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.agent.otlp_sink import Sink

HOST = r'''
import asyncio, sys, time
_wall_ns = time.time_ns
STEP = [0]
time.time_ns = lambda: _wall_ns() + STEP[0]
time.time = lambda: time.time_ns() / 1e9

import tracehouse.agent as ta
from tracehouse.agent.asgi import TracehouseASGIMiddleware
from tracehouse.agent.wsgi import TracehouseWSGIMiddleware

h = ta.start(service="clock-host", instrument=False, metrics=False)
jump_s, hold_s = float(sys.argv[1]), float(sys.argv[2])

def app(environ, start_response):
    STEP[0] += int(jump_s * 1e9)  # the clock is stepped while the request runs
    time.sleep(hold_s)
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]

async def asgi_app(scope, receive, send):
    STEP[0] += int(jump_s * 1e9)
    await asyncio.sleep(hold_s)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

async def nothing(message=None):
    return {"type": "http.request", "body": b"", "more_body": False}

if sys.argv[3] == "wsgi":
    mw = TracehouseWSGIMiddleware(app)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/step", "SERVER_NAME": "x", "SERVER_PORT": "80",
               "wsgi.url_scheme": "http"}
    body = mw(environ, lambda status, headers, exc_info=None: None)
    list(body)
    body.close()
else:
    scope = {"type": "http", "method": "GET", "path": "/step", "headers": [], "scheme": "http",
             "server": ("x", 80)}
    asyncio.run(TracehouseASGIMiddleware(asgi_app)(scope, nothing, nothing))
time.sleep(0.5)  # four watchdog rounds after the request: a late report would have been made by now
h.force_flush(5.0)
h.shutdown(2.0)
print("HOST RAN TO ITS END")
'''


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
@pytest.mark.parametrize("jump_s, hold_s, slow", [(3600, 0.3, False), (-3600, 1.2, True)],
                         ids=["forward-fast-request", "backward-slow-request"])
def test_a_clock_step_during_a_request_changes_neither_its_duration_nor_the_watchdog(tmp_path, jump_s, hold_s, slow,
                                                                                  server):
    """Durations and the watchdog used the wall clock (``time.time_ns``): a step forward by an hour
    during a 0.3 s request made it a 3,600 s span (and a 3,600 s point of the latency histogram)
    and a "slow request" snapshot of a request that was not slow; a step back made a slow request's
    span negative and the watchdog never saw it. Now both measure on the monotonic clock."""
    sink = Sink()
    try:
        (tmp_path / "host.py").write_text(HOST)
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, TRACEHOUSE_COMMAND_POLL_S="0",
                   TRACEHOUSE_SNAPSHOT_SLOW_MS="800")
        out = subprocess.run([sys.executable, str(tmp_path / "host.py"), str(jump_s), str(hold_s),
                              server], env=env,
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0 and "HOST RAN TO ITS END" in out.stdout, out.stderr[-3000:]
        [(_, span)] = sink.wait(lambda s: s.spans())
        snapshots = [r for _, r in sink.logs() if r.event_name == "tracehouse.snapshot"]
        took = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9
        assert (len(snapshots), hold_s <= took < hold_s + 0.5) == (1 if slow else 0, True), \
            (took, [r.body.string_value[:200] for r in snapshots])
    finally:
        sink.close()
