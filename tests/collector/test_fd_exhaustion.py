"""Idle connections against a ``tracehouse collector`` whose file descriptor limit is low. Past its
connection cap (TRACEHOUSE_MAX_CONNECTIONS) a new connection is answered 503 and closed, so the
writer keeps descriptors and stores what is acknowledged during the flood. With the cap set above
the limit, the connections use the descriptors up: the failing accepts are logged a line at a time,
not thousands a second; a client already connected is still answered; and once the connections go,
the writer, which could not open its files either, stores everything acknowledged."""

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
from tests.support import oneshot
from tests.support.waiting import wait_for


def _collector(tmp_path, log_path, fds: int = 400, **env: str) -> subprocess.Popen:
    env = dict(os.environ, TRACEHOUSE_BUFFER_DIR=str(tmp_path / "buffer"), TRACEHOUSE_OTLP_GRPC_PORT="0",
               TRACEHOUSE_LOG_LEVEL="warning", **env)
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "tracehouse.cli", "collector", "--storage",
                                 f"chdb://{tmp_path}/data", "--otlp-port", env["PORT"]], env=env, stdout=log,
                                stderr=log, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (fds, fds)),
                                start_new_session=True)


def _sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _post(client: httpx.Client, url: str) -> int:
    req, _ = traces(50)
    return client.post(url + "/v1/traces", content=req.SerializeToString(),
                       headers={"content-type": "application/x-protobuf"}).status_code


def _flood(port: int, n: int) -> list[socket.socket]:
    idle = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        idle.append(s)
    return idle


def _end(proc: subprocess.Popen, client: httpx.Client, idle: list[socket.socket]) -> None:
    for s in idle:
        s.close()
    client.close()
    proc.terminate()
    proc.wait(60)


def test_connections_past_the_cap_are_refused_and_storing_goes_on_during_the_flood(tmp_path):
    port = free_port()
    # the embedded engine holds ~190 descriptors idle, and an insert opens ~100 more part files: a
    # cap of 100 under a limit of 700 leaves it room; 600 idle connections would take all of it
    proc = _collector(tmp_path, tmp_path / "collector.log", fds=700, PORT=str(port), TRACEHOUSE_MAX_CONNECTIONS="100")
    url = f"http://127.0.0.1:{port}"
    idle: list[socket.socket] = []
    client = httpx.Client(timeout=10)  # connected before the flood, kept alive
    try:
        assert wait_port(port, 60)
        assert _post(client, url) == 200
        idle = _flood(port, 600)
        wait_for(lambda: _sum(client.get(url + "/metrics").text, "tracehouse_connections_refused_total") >= 450,
                 20, every=0.2, what="connections past the cap refused")
        metrics = client.get(url + "/metrics").text
        assert _sum(metrics, "tracehouse_connections_open") == 100
        assert len(os.listdir(f"/proc/{proc.pid}/fd")) < 600
        # a new client is told to come back (the OTLP exporters retry on 503), not left hanging
        fresh = oneshot.post(url + "/v1/traces", content=b"", headers={"content-type": "application/x-protobuf"},
                           timeout=10)
        assert fresh.status_code == 503 and fresh.headers["retry-after"] == "1"
        # the client connected before is served, and what it sends is stored while the flood lasts
        acked = 50
        for _ in range(4):
            assert _post(client, url) == 200
            acked += 50
        wait_for(lambda: _sum(client.get(url + "/metrics").text, "tracehouse_collector_written_items_total") >= acked,
                 30, every=0.5, what=f"all {acked} acknowledged spans stored during the flood")
        for s in idle:
            s.close()
        idle.clear()
        wait_for(lambda: _post(httpx.Client(timeout=10), url) == 200, 20, every=0.5,
                 what="new connections taken again once the flood ends")
    finally:
        _end(proc, client, idle)


def test_descriptor_exhaustion_is_logged_sparingly_and_storing_resumes(tmp_path):
    port = free_port()
    log_path = tmp_path / "collector.log"
    # a cap above the descriptor limit: the connections use the descriptors up
    proc = _collector(tmp_path, log_path, PORT=str(port), TRACEHOUSE_MAX_CONNECTIONS="100000")
    url = f"http://127.0.0.1:{port}"
    idle: list[socket.socket] = []
    client = httpx.Client(timeout=10)  # connected before the flood, kept alive

    def post() -> int:
        return _post(client, url)

    def stored() -> float:
        return _sum(client.get(url + "/metrics").text, "tracehouse_collector_written_items_total")

    try:
        assert wait_port(port, 60)
        assert post() == 200
        idle = _flood(port, 500)
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
        _end(proc, client, idle)
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


def test_the_default_cap_leaves_the_store_descriptors():
    from tracehouse.connection_cap import default_limit

    # half a small limit, 1,024 under a larger one, never more than 10,000; no limit: 10,000
    assert [default_limit(n) for n in (400, 1024, 2048, 4096, 524288, -1)] == [200, 512, 1024, 3072, 10000, 10000]


def test_the_grpc_port_refuses_connections_past_the_cap(tmp_path):
    import grpc

    port, gport = free_port(), free_port()
    env = dict(os.environ, TRACEHOUSE_BUFFER_DIR=str(tmp_path / "buffer"), TRACEHOUSE_OTLP_GRPC_PORT=str(gport),
               TRACEHOUSE_LOG_LEVEL="warning", TRACEHOUSE_MAX_CONNECTIONS="5")
    proc = subprocess.Popen([sys.executable, "-m", "tracehouse.cli", "collector", "--storage",
                             f"chdb://{tmp_path}/data", "--otlp-port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    idle: list[socket.socket] = []

    def connects() -> bool:
        with grpc.insecure_channel(f"127.0.0.1:{gport}") as ch:
            try:
                grpc.channel_ready_future(ch).result(timeout=2)
                return True
            except grpc.FutureTimeoutError:
                return False

    try:
        assert wait_port(gport, 60)
        wait_for(connects, 30, every=0.5, what="the gRPC port serving")

        def flooded() -> bool:
            # idle connections beyond the allowance: those past it are closed by the server (and one
            # made while a closing channel still held its place too), the five it took stay
            idle.extend(socket.create_connection(("127.0.0.1", gport), timeout=5) for _ in range(3))
            return not connects()

        wait_for(flooded, 20, every=0.2, what="a new gRPC connection refused while idle ones hold the port")
        for s in idle:
            s.close()
        idle.clear()
        wait_for(connects, 20, every=0.5, what="a gRPC connection once the idle ones are gone")
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(60)
