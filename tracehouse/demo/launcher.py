"""Starts and stops the demo shop's processes: four HTTP services and a worker under
``tracehouse-agent``, the external bank, Redis when installed, the traffic and the fault schedule.
Every child dies with the launcher (PR_SET_PDEATHSIG) and is ended by PID on stop."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from ..ports import free_port
from .chaos import faults_at
from .traffic import Traffic

log = logging.getLogger("tracehouse.demo")
SERVICES = ("gateway", "orders", "payments", "inventory")
DEMO_RULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rules.yaml")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                return True
        except OSError:
            time.sleep(0.1)
    return False


@dataclass
class DemoShop:
    endpoint: str  # the collector's OTLP/HTTP base URL
    rps: float = 12.0
    data_dir: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._own_dir = not self.data_dir
        self.data_dir = self.data_dir or tempfile.mkdtemp(prefix="tracehouse-demo-")
        self.ports = {name: free_port() for name in (*SERVICES, "bank")}
        self.started = time.time()
        self._stop = threading.Event()
        self._reported_cycle = -1
        self._threads: list[threading.Thread] = []
        self.redis_url = ""
        self.traffic = Traffic(self.ports["gateway"], self.rps)

    # -- processes ---------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        logf = open(os.path.join(self.data_dir, f"{name}.log"), "ab")  # noqa: SIM115 - owned by the child
        p = subprocess.Popen(argv, env=env or os.environ.copy(), stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
        logf.close()
        self.procs[name] = p
        return p

    def _service_env(self, service: str) -> dict[str, str]:
        env = os.environ.copy()
        env.update({
            "DEMO_PEERS": json.dumps({s: f"http://127.0.0.1:{p}" for s, p in self.ports.items()}),
            "DEMO_STARTED": str(self.started),
            "DEMO_DATA_DIR": self.data_dir,
            "DEMO_BANK_URL": f"http://127.0.0.1:{self.ports['bank']}",
            "DEMO_REDIS_URL": self.redis_url,
            "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.4.2,deployment.environment=demo,service.namespace=shop",
            "OTEL_METRIC_EXPORT_INTERVAL": "5000",
            "OTEL_BSP_SCHEDULE_DELAY": "1000",
            "TRACEHOUSE_LOG_LEVEL": "WARNING",
            "TRACEHOUSE_SNAPSHOT_SLOW_MS": "2000",  # the hanging /api/report (6 s on a lock) gets a snapshot
        })
        probes = {"payments": f"http://127.0.0.1:{self.ports['bank']}/health",
                  "inventory": self.redis_url}.get(service)
        if probes:
            env["TRACEHOUSE_PROBES"] = probes
        env.update(self.extra_env)
        return env

    def _start_service(self, service: str) -> None:
        argv = [sys.executable, "-m", "tracehouse.agent.cli", "run", "--service", service, "--endpoint", self.endpoint,
                "--", sys.executable, "-m", "tracehouse.demo.shop", service]
        if service != "worker":
            argv.append(str(self.ports[service]))
        self._spawn(service, argv, self._service_env(service))

    def _start_bank(self) -> None:
        self._spawn("bank", [sys.executable, "-m", "tracehouse.demo.bank", str(self.ports["bank"])])

    def _start_redis(self) -> None:
        exe = shutil.which("redis-server")
        if not exe:
            log.info("redis-server not installed: inventory runs without a cache")
            return
        port = free_port()
        self._spawn("redis", [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--dir", self.data_dir])
        if wait_port(port, 10):
            self.redis_url = f"redis://127.0.0.1:{port}/0"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, wait_s: float = 60.0) -> None:
        self._start_redis()
        self._start_bank()
        for service in (*SERVICES, "worker"):
            self._start_service(service)
        for service in SERVICES:
            if not wait_port(self.ports[service], wait_s):
                self.stop()
                raise RuntimeError(f"demo service {service} did not start; see {self.data_dir}/{service}.log")
        self.traffic.start()
        t = threading.Thread(target=self._chaos_loop, name="demo-chaos", daemon=True)
        t.start()
        self._threads.append(t)

    def _chaos_loop(self) -> None:
        """Stops the external bank during its outage window and brings it back after; sends the
        report request that meets the hanging lock once in every hang window."""
        while not self._stop.wait(1.0):
            now = time.time()
            self._bank_tick(now)
            self._report_tick(now)

    def _bank_tick(self, now: float) -> None:
        down = faults_at(now - self.started).bank_down
        bank = self.procs.get("bank")
        running = bank is not None and bank.poll() is None
        if down and running:
            self._end(bank)
        elif not down and not running:
            self._start_bank()

    def _report_tick(self, now: float) -> threading.Thread | None:
        # the random mix sends /api/report 5% of the time: in a 4 s window it missed it often
        # enough (about 1 cycle in 11) that a newcomer could wait minutes for a slow-request snapshot
        faults = faults_at(now - self.started)
        if not faults.report_hangs or faults.cycle == self._reported_cycle:
            return None
        self._reported_cycle = faults.cycle
        return self.traffic.once("GET", "/api/report")

    @staticmethod
    def _end(p: subprocess.Popen, grace: float = 5.0) -> None:
        if p.poll() is not None:
            return
        try:
            os.kill(p.pid, signal.SIGTERM)
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=grace)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        self._stop.set()
        self.traffic.stop()
        for t in self._threads:
            t.join(timeout=5)
        procs = list(self.procs.values())
        for p in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]
