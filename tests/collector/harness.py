"""Run a real collector for tests: uvicorn in a thread, or ``tracehouse collector`` as a process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from testkit.servers import free_port, wait_port
from tests.support import oneshot
from tracehouse.collector.build import Collector, create_collector
from tracehouse.config import Settings


@dataclass
class Running:
    collector: Collector
    url: str
    server: uvicorn.Server
    thread: threading.Thread
    grpc_target: str = ""  # host:port of the OTLP/gRPC receiver, when asked for
    zipkin_url: str = ""  # base URL of the Zipkin receiver, when asked for
    extra: list = field(default_factory=list)  # (server, thread) of those receivers

    def stop(self, grace: float = 10.0) -> None:
        for server, thread in self.extra:
            if isinstance(server, uvicorn.Server):
                server.should_exit = True
            else:
                server.stop()
            thread.join(30)
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


def _start_uvicorn(app: Any) -> tuple[uvicorn.Server, threading.Thread, int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    _wait_started(server)
    return server, t, port


def _wait_started(server: Any) -> None:
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("receiver did not start")
        time.sleep(0.02)


def run_collector(store: Any, buffer_dir: str, grpc: bool = False, zipkin: bool = False, start_writer: bool = True,
                  **settings: Any) -> Running:
    """A collector on free loopback ports: OTLP/HTTP always, OTLP/gRPC and Zipkin when asked. Without
    ``start_writer`` data waits in the durable buffer until the test starts the writer."""
    opts = dict(settings)
    build_opts = {k: opts.pop(k) for k in ("segment_bytes", "max_batch_items", "max_batch_age", "grace", "limits",
                                           "retry_delay") if k in opts}
    grpc_max_concurrent = opts.pop("grpc_max_concurrent", 256)
    s = Settings(storage="chdb:///unused", buffer_dir=buffer_dir, **opts)
    c = create_collector(s, store, **build_opts)
    c.wal.start()
    if start_writer:
        c.writer.start()
    server, t, port = _start_uvicorn(c.app)
    running = Running(c, f"http://127.0.0.1:{port}", server, t)
    if grpc:
        from tracehouse.collector.grpc_receiver import GrpcReceiver

        gport = free_port()
        receiver = GrpcReceiver(c.app.core, "127.0.0.1", gport, s.max_decompressed_bytes,
                                max_concurrent=grpc_max_concurrent)
        gt = threading.Thread(target=asyncio.run, args=(receiver.serve(),), daemon=True)
        gt.start()
        _wait_started(receiver)
        running.grpc_target = f"127.0.0.1:{gport}"
        running.extra.append((receiver, gt))
    if zipkin:
        from tracehouse.collector.zipkin_app import ZipkinApp

        zserver, zt, zport = _start_uvicorn(ZipkinApp(c.app.core))
        running.zipkin_url = f"http://127.0.0.1:{zport}"
        running.extra.append((zserver, zt))
    return running


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
        text = oneshot.get(self.url + "/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("tracehouse_collector_written_items_total{") and f'signal="{signal}"' in line:
                return int(float(line.rsplit(" ", 1)[1]))
        return 0


def start_collector_process(storage: str, buffer_dir: str, port: int | None = None,
                            env: dict[str, str] | None = None, stderr: Any = None) -> CollectorProcess:
    """``tracehouse collector`` as a process, once its OTLP port answers (``stderr``: a file for its
    log, else this process's); RuntimeError with its exit status if it ends before."""
    port = port or free_port()
    e = dict(os.environ, TRACEHOUSE_BUFFER_DIR=buffer_dir, TRACEHOUSE_LOG_LEVEL="warning", **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "tracehouse.cli", "collector", "--storage", storage,
                             "--otlp-port", str(port)], env=e, stdout=subprocess.DEVNULL, stderr=stderr,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not wait_port(port, 0.5):
        if proc.poll() is not None:
            raise RuntimeError(f"tracehouse collector exited with status {proc.returncode} before it listened")
        if time.monotonic() > deadline:
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


def drain(store: Any, buffer_dir: str, limits: Any, natives: Any, redactor: Any) -> Any:
    """A writer (with these native decoders, or None for Python) over the WAL in ``buffer_dir``
    until it has stored everything; returns its metrics. Nothing may go to the dead letters."""
    from tracehouse.collector.metrics import Registry
    from tracehouse.collector.wal import Wal
    from tracehouse.collector.writer import Writer

    m = Registry()
    wal = Wal(buffer_dir)
    w = Writer(wal, store, m, redactor, limits, max_age=0.05, native=natives)
    wal.start()
    w.start()
    deadline = time.monotonic() + 60
    while not (w.caught_up.is_set() and wal.pending_bytes() == 0):
        assert w.running, "the writer stopped"
        assert time.monotonic() < deadline, "the writer did not drain the WAL"
        time.sleep(0.05)
    w.stop(5)
    wal.stop()
    assert not m.get("tracehouse_collector_dead_letter_items_total")
    return m
