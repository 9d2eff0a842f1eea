"""Start and stop real servers for tests: ClickHouse (Debian's clickhouse-server), Redis, PostgreSQL,
and an ASGI app under uvicorn on a thread (``serving``).

Each runs on a free loopback port with its own temporary directory and is stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tracehouse.ports import free_port

ROOT = Path(__file__).resolve().parents[1]


def wait_port(port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


@contextmanager
def serving(app, **config) -> Iterator[int]:
    """``app`` served by uvicorn on a thread of this process, on a free loopback port (yielded),
    until the block ends. ``config``: more ``uvicorn.Config`` options (lifespan is off unless given)."""
    import uvicorn

    port = free_port()
    options = {"log_level": "warning", "lifespan": "off", **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class ServerProcess:
    pid: int
    url: str
    port: int
    directory: str

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0] == self.pid:
                    return
            except ChildProcessError:
                pass
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)


def start_clickhouse(directory: str) -> ServerProcess:
    """Start clickhouse-server with the project's start script; needs Debian's clickhouse-server."""
    if not shutil.which("clickhouse-server"):
        raise RuntimeError("clickhouse-server is not installed (apt-get install clickhouse-server; .ci/run does it)")
    out = subprocess.run(["bash", str(ROOT / ".ci" / "start_clickhouse.sh"), directory],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"clickhouse-server did not start: {out.stderr[-2000:]}")
    pid, url = out.stdout.strip().splitlines()[-1].split(" ", 1)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    return ServerProcess(int(pid), url, port, directory)


def restart_clickhouse(proc: ServerProcess) -> ServerProcess:
    """Start the same server again (same config, data and port) after ``stop``."""
    p = subprocess.Popen(["clickhouse-server", f"--config-file={proc.directory}/config.xml"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    if not wait_port(proc.port, 60):
        p.kill()
        raise RuntimeError("clickhouse-server did not come back")
    return ServerProcess(p.pid, proc.url, proc.port, proc.directory)


def start_redis(directory: str, port: int | None = None) -> ServerProcess:
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    port = port or free_port()
    os.makedirs(directory, exist_ok=True)
    p = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    if not wait_port(port, 20):
        p.kill()
        raise RuntimeError("redis-server did not start")
    return ServerProcess(p.pid, f"redis://127.0.0.1:{port}/0", port, directory)


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / name).exists():
            return str(base / name)
    raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql; .ci/run does it)")


def start_postgres(directory: str, port: int | None = None) -> ServerProcess:
    """initdb + postgres as the current user (or 'postgres' when root), trust auth on loopback."""
    port = port or free_port()
    data = os.path.join(directory, "data")
    os.makedirs(directory, exist_ok=True)
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    if not os.path.exists(os.path.join(data, "PG_VERSION")):
        subprocess.run(run_as + [_pg_bin("initdb"), "-D", data, "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True, timeout=120)
    p = subprocess.Popen(run_as + [_pg_bin("postgres"), "-D", data, "-p", str(port), "-h", "127.0.0.1",
                                   "-k", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    if not wait_port(port, 30):
        p.kill()
        raise RuntimeError("postgres did not start")
    time.sleep(0.3)
    return ServerProcess(p.pid, f"postgresql://postgres@127.0.0.1:{port}/postgres", port, directory)
