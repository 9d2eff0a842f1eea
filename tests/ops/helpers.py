"""A real ``tracehouse serve`` (or another role) as a subprocess that can be stopped and started
again on the same data, and JSON over HTTP. chDB is one process only: everything is read back
through the server's API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from testkit.servers import free_port, wait_port
from tests.snapshots.helpers import http  # noqa: F401 (re-exported)

BIN = Path(sys.executable).parent


class Role:
    """``tracehouse <cmd>`` on fixed free ports, data under ``directory``; ``restart`` keeps both."""

    def __init__(self, directory: Path, cmd: tuple[str, ...] = ("serve",), args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, storage: str | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cmd, self.args = cmd, args
        self.otlp, self.port = free_port(), free_port()
        self.storage = storage or f"chdb://{self.dir}/data"
        self.env = dict(os.environ, TRACEHOUSE_BUFFER_DIR=str(self.dir / "buffer"), TRACEHOUSE_AGENT_AUTOSTART="0",
                        **(env or {}))
        self.runs = 0
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.otlp}"

    def start(self) -> None:
        self.runs += 1
        self.log = self.dir / f"{self.cmd[-1]}-{self.runs}.log"
        argv = [str(BIN / "tracehouse"), *self.cmd, "--storage", self.storage, "--http-port", str(self.port)]
        if self.cmd != ("alerts", "run"):
            argv += ["--otlp-port", str(self.otlp)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv + list(self.args), env=self.env, cwd=self.dir, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        ports = {"serve": [self.port, self.otlp], "collector": [self.otlp]}.get(self.cmd[0], [self.port])
        if not all(wait_port(p, 90) for p in ports):
            self.stop()
            raise RuntimeError(f"tracehouse {' '.join(self.cmd)} did not start: {self.output()}")

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def get(self, path: str, base: str | None = None):
        status, body = http("GET", (base or self.api) + path)
        assert status == 200, (path, status, body, self.output())
        return body

    def text(self, path: str, base: str | None = None) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open((base or self.api) + path, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


def rules_file(directory: Path, text: str) -> str:
    p = Path(directory) / "rules.yaml"
    p.write_text(text)
    return str(p)


def dump(obj) -> str:
    return json.dumps(obj, indent=1)[:3000]
