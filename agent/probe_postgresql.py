"""The PostgreSQL probe: ``SELECT 1`` within a deadline, via psycopg2 or psycopg (3).

Both drivers are driven asynchronously, each step waited for only until the check's deadline:
libpq's ``connect_timeout`` is whole seconds, at least 2, and nothing of the client's bounds the
query after the handshake (``statement_timeout`` is the server's), so a blocking connect and query
held the check's thread (and its connection) past the deadline: 2 s past a 0.3 s one against a
peer that never answers, and for as long as the server liked once past the handshake.
"""

from __future__ import annotations

import math
import select
import time

__all__ = ["select_1"]


def select_1(url: str, timeout: float) -> bool:
    """``SELECT 1`` at ``url`` within ``timeout`` seconds (raises when down or late); False when
    neither driver is installed (the caller then checks by TCP)."""
    deadline = time.monotonic() + timeout
    url = url.replace("postgres://", "postgresql://", 1)
    options = {"connect_timeout": max(1, math.ceil(timeout)), "options": f"-c statement_timeout={int(timeout * 1000)}"}
    try:
        import psycopg2
    except ImportError:
        try:
            from psycopg import conninfo, pq
        except ImportError:
            return False
        _psycopg3(pq, conninfo.make_conninfo(url, **options), deadline, timeout)
        return True
    _psycopg2(psycopg2.connect(url, async_=1, **options), deadline, timeout)
    return True


def _psycopg2(conn, deadline: float, timeout: float) -> None:
    try:
        _pg2_wait(conn, deadline, timeout)
        cur = conn.cursor()
        cur.execute("SELECT 1")
        _pg2_wait(conn, deadline, timeout)
        cur.fetchone()
    finally:
        conn.close()


def _pg2_wait(conn, deadline: float, timeout: float) -> None:
    """Drive an asynchronous psycopg2 connection until its step is done, or raise at ``deadline``."""
    from psycopg2 import extensions

    while True:
        state = conn.poll()
        if state == extensions.POLL_OK:
            return
        _wait_socket(conn.fileno(), state == extensions.POLL_READ, deadline, timeout)


def _psycopg3(pq, dsn: str, deadline: float, timeout: float) -> None:
    """psycopg 3's libpq wrapper (``psycopg.pq``), non-blocking: connect, send, read the answer."""
    conn = pq.PGconn.connect_start(dsn.encode())
    try:
        while (state := conn.connect_poll()) != pq.PollingStatus.OK:
            if state == pq.PollingStatus.FAILED or conn.status == pq.ConnStatus.BAD:
                raise ConnectionError(_text(conn.error_message) or "connection failed")
            _wait_socket(conn.socket, state == pq.PollingStatus.READING, deadline, timeout)
        conn.nonblocking = 1
        conn.send_query(b"SELECT 1")
        while conn.flush():
            _wait_socket(conn.socket, False, deadline, timeout)
        conn.consume_input()
        while conn.is_busy():
            _wait_socket(conn.socket, True, deadline, timeout)
            conn.consume_input()
        res = conn.get_result()
        if res is None or res.status != pq.ExecStatus.TUPLES_OK:
            raise ConnectionError(_text(res.error_message if res is not None else b"") or "SELECT 1 failed")
    finally:
        conn.finish()


def _text(message: bytes) -> str:
    return message.decode("utf-8", "replace").strip()


def _wait_socket(fd: int, read: bool, deadline: float, timeout: float) -> None:
    """Wait until ``fd`` is readable (``read``) or writable, or raise ``TimeoutError`` at ``deadline``."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"no answer within {float(timeout)} s")
    poller = select.poll()  # not select(): a host with 1024 files open has descriptors past its limit
    poller.register(fd, select.POLLIN if read else select.POLLOUT)
    poller.poll(max(1, math.ceil(left * 1000)))
