"""Idle connections that use up a ``tracehouse collector``'s file descriptors (its limit set to 400):
the failing accepts are logged a line at a time, not thousands a second; a client already connected
is still answered; and once the connections go, the writer, which could not open its files either,
stores everything acknowledged."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time

import httpx

from testkit.servers import free_port, wait_port
from tests.collector.payloads import traces
from tests.support.waiting import wait_for


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))


def test_descriptor_exhaustion_is_logged_sparingly_and_storing_resumes(tmp_path):
    port = free_port()
    log_path = tmp_path / "collector.log"
    env = dict(os.environ, TRACEHOUSE_BUFFER_DIR=str(tmp_path / "buffer"), TRACEHOUSE_OTLP_GRPC_PORT="0",
               TRACEHOUSE_LOG_LEVEL="warning")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tracehouse.cli", "collector", "--storage",
                                 f"chdb://{tmp_path}/data", "--otlp-port", str(port)], env=env, stdout=log,
                                stderr=log, preexec_fn=_limit_fds, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    idle: list[socket.socket] = []
    client = httpx.Client(timeout=10)  # connected before the flood, kept alive

    def post() -> int:
        req, _ = traces(50)
        return client.post(url + "/v1/traces", content=req.SerializeToString(),
                           headers={"content-type": "application/x-protobuf"}).status_code

    def stored() -> float:
        text = client.get(url + "/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("tracehouse_collector_written_items_total"))

    try:
        assert wait_port(port, 60)
        assert post() == 200
        for _ in range(500):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            idle.append(s)
        wait_for(lambda: len(os.listdir(f"/proc/{proc.pid}/fd")) >= 399, 20, every=0.2,
                 what="the collector's descriptors used up")
        acked = 50
        for _ in range(4):
            assert post() == 200
            acked += 50
            time.sleep(1)
        for s in idle:
            s.close()
        idle.clear()
        wait_for(lambda: stored() >= acked, 60, every=0.5, what=f"all {acked} acknowledged spans stored")
        # every failed accept is counted, the ones left out of the log included
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in client.get(url + "/metrics").text.splitlines()
                      if line.startswith("tracehouse_accept_errors_total"))
    finally:
        for s in idle:
            s.close()
        client.close()
        proc.terminate()
        proc.wait(60)
    text = log_path.read_text(errors="replace")
    reports = text.count("socket.accept() out of system resource") + text.count("cannot accept connections")
    assert 1 <= reports <= 3, f"{reports} reports of the failing accepts, {len(text)} bytes of log"
    assert counted > reports, counted


def test_a_server_raises_its_descriptor_limit_to_what_the_system_allows(tmp_path, server_store, clickhouse_url):
    """Started with a soft limit of 256 under a hard one of 4,096 (systemd starts services with 1,024
    under 524,288), a collector writing to a ClickHouse server could hold 256 connections: now it
    takes 4,096. (The embedded engine raises the limit itself when it is loaded.)"""
    port = free_port()
    storage = clickhouse_url.rsplit("/", 1)[0] + "/" + server_store.db
    env = dict(os.environ, TRACEHOUSE_BUFFER_DIR=str(tmp_path / "buffer"), TRACEHOUSE_OTLP_GRPC_PORT="0",
               TRACEHOUSE_LOG_LEVEL="warning")
    proc = subprocess.Popen([sys.executable, "-m", "tracehouse.cli", "collector", "--otlp-port", str(port)],
                            env=dict(env, TRACEHOUSE_STORAGE=storage), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096)),
                            start_new_session=True)
    try:
        assert wait_port(port, 90), "collector did not start"
        with open(f"/proc/{proc.pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"], line
        assert "chdb" not in open(f"/proc/{proc.pid}/maps").read()  # the engine that would raise it itself
    finally:
        proc.terminate()
        proc.wait(30)
