"""The real ``tracehouse`` command: a role refuses to listen off loopback without authentication
unless the operator opts out (loudly); on loopback both ports check the Host header; X-Forwarded-*
is believed from nobody by default; a session outlives a restart when the key is a setting.

Every process that could listen on 0.0.0.0 runs in a network namespace of its own (``unshare -n``,
only a loopback device inside), so nothing is ever reachable from outside this machine, even when
the code under test is wrong."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from testkit.servers import free_port
from tests.support import oneshot
from tests.support.waiting import wait_for
from tracehouse.config import Settings
from tracehouse.dashboard.auth import hash_password
from tracehouse.exposure import allowed_hosts, host_allowed, host_name, is_loopback, missing_auth

TRACEHOUSE = str(Path(sys.executable).with_name("tracehouse"))
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("TRACEHOUSE_")}


def _netns(argv: list[str]) -> list[str]:
    return ["unshare", "--net", "--", *argv]


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(_netns([TRACEHOUSE, *argv]), cwd=cwd, env=dict(CLEAN_ENV, **(env or {})),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class Serving:
    """A ``tracehouse`` server process (its own session, so it is stopped with everything it started)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None, netns: bool = False):
        self.log_path = cwd / f"serve-{free_port()}.log"
        with open(self.log_path, "wb") as out:
            cmd = [TRACEHOUSE, *argv]
            self.proc = subprocess.Popen(_netns(cmd) if netns else cmd, cwd=cwd, env=dict(CLEAN_ENV, **(env or {})),
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 60) -> None:
        def up():
            assert self.proc.poll() is None, f"server exited: {self.log()[-3000:]}"
            return "tracehouse dashboard:" in self.log() or "tracehouse OTLP/HTTP:" in self.log()

        wait_for(up, timeout, every=0.1, what="the server to start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def test_loopback_and_host_matching_rules():
    for host in ("127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost", "app.localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "10.1.2.3", "192.168.0.1", "no-such-host.invalid"):
        assert not is_loopback(host), host
    assert host_name("[::1]:8080") == "::1" and host_name("Example.COM:80") == "example.com"
    assert host_name("localhost") == "localhost"
    loop = allowed_hosts(Settings(host="127.0.0.1"))
    assert all(host_allowed(host_name(h), loop, True) for h in ("localhost:8080", "127.0.0.1:1", "[::1]:2",
                                                                "127.0.0.2", "ui.localhost:8080"))
    assert not any(host_allowed(host_name(h), loop, True) for h in ("evil.example", "localhost.evil.example:8080",
                                                                    "10.0.0.1", ""))
    assert allowed_hosts(Settings(host="0.0.0.0")) is None  # off loopback, authentication protects it
    assert allowed_hosts(Settings(host="0.0.0.0", allowed_hosts=["*.example.com"])) == ["*.example.com"]
    assert host_allowed("th.example.com", ["*.example.com"]) and not host_allowed("example.com.evil", ["*.example.com"])
    assert missing_auth(Settings(ingest_tokens=["t"], api_tokens=["a:viewer:b"]), ("collector", "dashboard")) == []
    # alerts run listens for /metrics, /healthz and /readyz: any token protects it
    assert [m.split()[0] for m in missing_auth(Settings(), ("collector", "dashboard", "alerts"))] == [
        "collector", "dashboard", "alerts"]
    assert missing_auth(Settings(ingest_tokens=["t"]), ("alerts",)) == []


@pytest.mark.parametrize("argv, env, refused", [
    (["serve", "--host", "0.0.0.0"], {}, ("collector", "dashboard")),
    (["collector", "--host", "0.0.0.0"], {"TRACEHOUSE_API_TOKENS": "ops:admin:x"}, ("collector",)),
    (["dashboard"], {"TRACEHOUSE_HOST": "0.0.0.0", "TRACEHOUSE_INGEST_TOKENS": "t"}, ("dashboard",)),
    (["serve", "--host", "::"], {"TRACEHOUSE_INGEST_TOKENS": "t"}, ("dashboard",)),
])
def test_a_role_off_loopback_without_authentication_refuses_to_start(tmp_path, argv, env, refused):
    ports = ["--otlp-port", str(free_port()), "--http-port", str(free_port())]
    r = _run(argv + ports, tmp_path, dict(env, TRACEHOUSE_STORAGE=f"chdb://{tmp_path}/data"), timeout=30)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "refusing to listen" in r.stderr and "--insecure-allow-open" in r.stderr
    for role in ("collector", "dashboard"):
        assert (f"{role} (port" in r.stderr) == (role in refused), r.stderr
    assert "tracehouse dashboard:" not in r.stdout and not (tmp_path / "data").exists()  # nothing opened


def test_the_opt_out_starts_and_says_so_loudly_and_configured_auth_starts_quietly(tmp_path):
    port = free_port()
    insecure = Serving(["dashboard", "--host", "0.0.0.0", "--http-port", str(port), "--insecure-allow-open",
                        "--storage", f"chdb://{tmp_path}/a"], tmp_path, netns=True)
    secured = Serving(["serve", "--otlp-port", str(free_port()), "--http-port", str(free_port()),
                       "--storage", f"chdb://{tmp_path}/b"], tmp_path, netns=True,
                      env={"TRACEHOUSE_HOST": "0.0.0.0", "TRACEHOUSE_INGEST_TOKENS": "ingest",
                           "TRACEHOUSE_API_TOKENS": "ops:admin:secret"})
    try:
        insecure.wait_started()
        secured.wait_started()
        assert f"tracehouse dashboard: http://0.0.0.0:{port}/" in insecure.log()
        assert re.search(r"WARNING tracehouse.exposure: INSECURE: listening on 0.0.0.0 and dashboard", insecure.log())
        assert "INSECURE" not in secured.log() and "tracehouse OTLP/HTTP: http://0.0.0.0:" in secured.log()
    finally:
        insecure.stop()
        secured.stop()


@pytest.fixture(scope="module")
def loopback_server(tmp_path_factory):
    """``tracehouse serve`` on loopback with users, role tokens, an ingest token and a session key."""
    d = tmp_path_factory.mktemp("serve")
    cfg = d / "tracehouse.yaml"
    cfg.write_text(yaml.safe_dump({"users": {"ada": {"password_hash": hash_password("pw", n=2**10), "role": "admin"}},
                                   "api_tokens": {"ro": "viewer:view-secret"}}))
    otlp, http = free_port(), free_port()
    env = {"TRACEHOUSE_INGEST_TOKENS": "ingest-secret", "TRACEHOUSE_SECRET_KEY": "a-shared-session-key",
           "TRACEHOUSE_STORAGE": f"chdb://{d}/data"}
    argv = ["serve", "--config", str(cfg), "--otlp-port", str(otlp), "--http-port", str(http)]
    s = Serving(argv, d, env)
    s.wait_started()
    s.ports = (otlp, http)
    s.restart_args = (argv, d, env)
    yield s
    s.stop()


def test_both_ports_answer_only_to_allowed_host_names(loopback_server):
    for port in loopback_server.ports:
        url = f"http://127.0.0.1:{port}/healthz"
        for host in ("evil.example", f"evil.example:{port}", f"localhost.evil.example:{port}", "10.0.0.7"):
            r = oneshot.get(url, headers={"Host": host})
            assert r.status_code == 400 and "host not allowed" in r.text, (port, host)
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
            assert oneshot.get(url, headers={"Host": host}).status_code == 200, (port, host)
    otlp, _ = loopback_server.ports
    # OTLP itself is behind the same check: a rebound page cannot send spans either
    r = oneshot.post(f"http://127.0.0.1:{otlp}/v1/traces", content=b"", headers={"Host": "evil.example",
                   "Content-Type": "application/x-protobuf", "Authorization": "Bearer ingest-secret"})
    assert r.status_code == 400


def test_collector_metrics_need_the_ingest_token(loopback_server):
    otlp, _ = loopback_server.ports
    assert oneshot.get(f"http://127.0.0.1:{otlp}/metrics").status_code == 401
    r = oneshot.get(f"http://127.0.0.1:{otlp}/metrics", headers={"Authorization": "Bearer ingest-secret"})
    assert r.status_code == 200 and "tracehouse_collector" in r.text


def _sign_in(base: str, headers: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=30) as c:
        form = c.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]
        return c.post("/login", data={"csrf": csrf, "username": "ada", "password": "pw"}, headers=headers or {})


def test_forwarded_headers_are_not_believed_without_a_trusted_proxy(loopback_server):
    _, http = loopback_server.ports
    r = _sign_in(f"http://127.0.0.1:{http}", {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert "th_session=" in cookie and "secure" not in cookie


def test_cross_site_text_plain_snapshot_request_is_refused(loopback_server):
    _, http = loopback_server.ports
    base = f"http://127.0.0.1:{http}"
    r = oneshot.post(base + "/api/snapshots", content='{"service": "orders", "kind": "threads"}',
                   headers={"Content-Type": "text/plain", "Origin": "http://attacker.example",
                            "Authorization": "Bearer view-secret"})
    assert r.status_code == 403
    listed = oneshot.get(base + "/api/snapshots", headers={"Authorization": "Bearer view-secret"}).json()
    assert listed["requests"] == []


def test_a_session_outlives_a_restart_when_the_key_is_a_setting(loopback_server):
    _, http = loopback_server.ports
    base = f"http://127.0.0.1:{http}"
    cookie = _sign_in(base).cookies["th_session"]
    assert oneshot.get(base + "/api/auth/me", cookies={"th_session": cookie}).json()["name"] == "ada"
    loopback_server.stop()
    again = Serving(*loopback_server.restart_args)
    try:
        again.wait_started()
        me = oneshot.get(base + "/api/auth/me", cookies={"th_session": cookie})
        assert me.status_code == 200 and me.json() == {"name": "ada", "role": "admin"}
    finally:
        again.stop()


def test_alerts_role_metrics_need_a_token_when_one_is_configured():
    from prometheus_client import CollectorRegistry
    from starlette.testclient import TestClient

    from tracehouse.ops import OpsApp, metrics_authorizer

    def ready():
        return True, "ready"

    open_app = OpsApp(CollectorRegistry(), ready, authorize=metrics_authorizer(Settings()))
    with TestClient(open_app) as c:  # loopback default: open, like the other roles
        assert c.get("/metrics").status_code == 200
    app = OpsApp(CollectorRegistry(), ready, authorize=metrics_authorizer(Settings(ingest_tokens=["ing"])))
    with TestClient(app) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"authorization": "Bearer nope"}).status_code == 401
        assert c.get("/metrics", headers={"authorization": "Bearer ing"}).status_code == 200
        assert c.get("/readyz").status_code == 200 and c.get("/healthz").status_code == 200
