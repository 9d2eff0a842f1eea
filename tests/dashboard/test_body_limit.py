"""Request bodies on the dashboard port are capped: a declared or a chunked body over the cap is
answered 413 without being read whole (an anonymous ``POST /login`` of a 300 MB form used to make
the server hold all of it), and bodies under the cap work as before."""

from __future__ import annotations

import re
import socket
import time
from types import SimpleNamespace

import httpx
import psutil

from testkit.servers import serving
from tracehouse.dashboard.app import create_app

CAP = 64 << 10


def _app(store):
    return create_app(SimpleNamespace(users={}, api_tokens=["ed:editor:edit-secret"], secret_key="k",
                                      dashboard_max_body_bytes=CAP, client_timeout_seconds=1.0), store)


def _answer(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    got = b""
    try:
        while b"\r\n\r\n" not in got:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return got


def test_bodies_over_the_cap_are_refused_before_they_are_read(seeded_store):
    me = psutil.Process()
    with serving(_app(seeded_store[0])) as port:
        base = f"http://127.0.0.1:{port}"
        # declared: refused from the head, nothing read
        for path, ctype in (("/login", "application/x-www-form-urlencoded"), ("/api/alerts/rules", "application/json")):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\ncontent-type: {ctype}\r\n"
                          f"content-length: {300 << 20}\r\n\r\n".encode())
                got = _answer(s)
            assert got.startswith(b"HTTP/1.1 413"), (path, got[:200])
        # chunked, no length: 200 form fields of 32 kB (each under Starlette's own 1 MB field cap)
        rss0 = me.memory_info().rss
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "content-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\n\r\n".encode())
            field = b"a=" + b"x" * (32 << 10) + b"&"
            try:
                for _ in range(200):
                    s.sendall(b"%x\r\n%s\r\n" % (len(field), field))
            except OSError:  # the server stopped reading: what is wanted
                pass
            got = _answer(s)
        assert got.startswith(b"HTTP/1.1 413"), got[:200]
        assert me.memory_info().rss - rss0 < 5 * CAP * 16  # not the 6.4 MB sent, give or take the allocator
        # under the cap: as before
        with httpx.Client(base_url=base, timeout=30) as c:
            csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
            r = c.post("/login", data={"csrf": csrf, "token": "wrong", "pad": "p" * (CAP // 2)})
            assert r.status_code == 401  # read and checked: an unknown token
            ed = {"Authorization": "Bearer edit-secret"}
            r = c.post("/api/snapshots", json={"service": "s" * (CAP * 2)}, headers=ed)
            assert r.status_code == 413
            r = c.post("/api/snapshots", json={"service": 7}, headers=ed)
            assert r.status_code == 400, r.text  # read and judged by the API, not by the cap


def test_a_body_that_does_not_arrive_in_time_is_answered_408(seeded_store):
    """A body must arrive within the client timeout of its head (1 s here): a client sending part
    of it and then nothing gets 408 instead of holding its connection and task for ever. A slow
    answer is not cut: the deadline stops once the body is whole."""
    with serving(_app(seeded_store[0])) as port:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "content-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\ntoken=".encode())
            t0 = time.monotonic()
            got = _answer(s)
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
        assert time.monotonic() - t0 < 5
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
            time.sleep(1.5)  # longer than the timeout since the connection's first request
            assert c.post("/login", data={"csrf": csrf, "token": "wrong"}).status_code == 401
