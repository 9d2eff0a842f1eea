"""Run a real collector for tests: uvicorn in a thread, or ``tracehouse collector`` as a process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from tests.support.servers import free_port, wait_port
from tracehouse.collector.build import Collector, create_collector
from tracehouse.config import Settings


@dataclass
class Running:
    collector: Collector
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, grace: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.collector.writer.stop(grace)
        self.collector.wal.stop()

    def wait_stored(self, signal: str, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.collector.writer.stored[signal] < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.collector.writer.stored[signal]} of {n} {signal} stored")
            time.sleep(0.05)


def run_collector(store: Any, buffer_dir: str, **settings: Any) -> Running:
    opts = dict(settings)
    build_opts = {k: opts.pop(k) for k in ("segment_bytes", "max_batch_items", "max_batch_age", "grace", "limits",
                                           "retry_delay") if k in opts}
    s = Settings(storage="chdb:///unused", buffer_dir=buffer_dir, **opts)
    c = create_collector(s, store, **build_opts)
    c.wal.start()
    c.writer.start()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(c.app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("collector did not start")
        time.sleep(0.02)
    return Running(c, f"http://127.0.0.1:{port}", server, t)


@dataclass
class CollectorProcess:
    proc: subprocess.Popen
    url: str
    port: int

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def terminate(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)

    def stored(self, signal: str = "traces") -> int:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("tracehouse_collector_written_items_total{") and f'signal="{signal}"' in line:
                return int(float(line.rsplit(" ", 1)[1]))
        return 0


def start_collector_process(storage: str, buffer_dir: str, port: int | None = None,
                            env: dict[str, str] | None = None) -> CollectorProcess:
    port = port or free_port()
    e = dict(os.environ, TRACEHOUSE_BUFFER_DIR=buffer_dir, TRACEHOUSE_LOG_LEVEL="warning", **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "tracehouse.cli", "collector", "--storage", storage,
                             "--otlp-port", str(port)], env=e, stdout=subprocess.DEVNULL, start_new_session=True)
    if not wait_port(port, 60):
        proc.kill()
        raise RuntimeError("tracehouse collector did not start")
    return CollectorProcess(proc, f"http://127.0.0.1:{port}", port)


def start_serve_process(storage: str, buffer_dir: str, otlp_port: int, http_port: int, role: str = "serve",
                        env: dict[str, str] | None = None) -> CollectorProcess:
    """``tracehouse serve`` (or another role) as a process, once its OTLP port answers."""
    e = dict(os.environ, TRACEHOUSE_BUFFER_DIR=buffer_dir, TRACEHOUSE_LOG_LEVEL="warning", **(env or {}))
    cmd = [sys.executable, "-m", "tracehouse.cli", role, "--storage", storage, "--otlp-port", str(otlp_port)]
    if role == "serve":
        cmd += ["--http-port", str(http_port)]
    proc = subprocess.Popen(cmd, env=e, stdout=subprocess.DEVNULL, start_new_session=True)
    if not wait_port(otlp_port, 60):
        proc.kill()
        raise RuntimeError(f"tracehouse {role} did not start")
    return CollectorProcess(proc, f"http://127.0.0.1:{otlp_port}", otlp_port)
