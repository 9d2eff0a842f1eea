"""A real ``tracehouse serve`` and real gunicorn applications under the agent, as subprocesses.

chDB is one process only, so everything is read back through the server's JSON API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from testkit.servers import free_port, wait_port
from tests.support.waiting import wait_for  # noqa: F401 (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EVENT = "tracehouse.snapshot"


def http(method: str, url: str, body: dict | None = None, timeout: float = 30.0) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class Proc:
    def __init__(self, argv, env, cwd, log_path):
        self.log = open(log_path, "wb")  # noqa: SIM115
        self.p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def stop(self, timeout: float = 15.0) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        self.log.close()

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]


class Server:
    """``tracehouse serve`` on free ports with its own chDB directory and working directory."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="th-snap-")
        self.otlp, self.port = free_port(), free_port()
        env = dict(os.environ, TRACEHOUSE_AGENT_AUTOSTART="0")
        self.proc = Proc([str(BIN / "tracehouse"), "serve", "--storage", f"chdb://{self.dir}/data",
                          "--otlp-port", str(self.otlp), "--http-port", str(self.port)], env, self.dir,
                         os.path.join(self.dir, "server.log"))
        if not (wait_port(self.port, 60) and wait_port(self.otlp, 30)):
            self.proc.stop()
            raise RuntimeError("tracehouse serve did not start: " + self.proc.output())
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.endpoint = f"http://127.0.0.1:{self.otlp}"

    def snapshots(self, service: str, limit: int = 200) -> list[dict]:
        status, out = http("GET", f"{self.api}/logs?event_name={EVENT}&service={service}&since=1h&limit={limit}")
        assert status == 200, out
        for rec in out["logs"]:
            rec["parsed"] = json.loads(rec["body"])
        return out["logs"]

    def stop(self) -> None:
        self.proc.stop()


class App:
    """gunicorn serving tests/snapshots/app.py under ``tracehouse-agent run``."""

    def __init__(self, server: Server, service: str, *, workers: int = 1, threads: int = 8, env: dict | None = None):
        self.port = free_port()
        self.service = service
        e = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEHOUSE_"))}
        e.update({"OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200",
                  "TRACEHOUSE_COMMAND_POLL_S": "0.5", "TRACEHOUSE_SNAPSHOT_SLOW_MS": "1000",
                  "TRACEHOUSE_METRICS_INTERVAL": "60", "PYTHONPATH": str(ROOT)})
        e.update(env or {})
        argv = [str(BIN / "tracehouse-agent"), "run", "--service", service, "--endpoint", server.endpoint, "--",
                str(BIN / "gunicorn"), "-b", f"127.0.0.1:{self.port}", "-w", str(workers), "--threads", str(threads),
                "--graceful-timeout", "2", "tests.snapshots.app:app"]
        self.proc = Proc(argv, e, str(ROOT), os.path.join(server.dir, f"app-{service}-{self.port}.log"))
        if not wait_port(self.port, 30):
            self.proc.stop()
            raise RuntimeError(f"{service} did not start")
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 30.0):
        return http("GET", self.url + path, timeout=timeout)

    def stop(self) -> None:
        self.proc.stop()
