"""Connecting to the first of several hosts that answers, not to each in turn (``alt_hosts``).

The driver tries a connection's hosts one after the other, each for its whole connect timeout: a
first host that drops connects unanswered (a black hole: powered off, a firewall that drops) cost
the first connection of a process, and a new one after the host that answered last went dark, the
whole connect timeout before the next host was tried; a call whose time limit was no longer than
that failed. Now, with several hosts, a new connection starts a TCP connect to the first host,
then to the next one every ``STAGGER_S`` that none has answered (Happy Eyeballs, RFC 8305), and
the first to connect is handed to the driver, tried first (its hello may still fail: the driver
then goes on to the others in turn, as before). A healthy first host answers before the next
connect starts, so no extra connection is made; none connecting within the connect timeout ends
the attempt then, not after one timeout per host. TLS connections race the same way, then connect
again to the winner (the driver wraps its own socket).
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from typing import Any

__all__ = ["STAGGER_S", "race_hosts"]

log = logging.getLogger("tracehouse.storage")

#: how long a connect has alone before the next host's starts (RFC 8305's "Connection Attempt Delay")
STAGGER_S = 0.25


def race_hosts(conn: Any) -> None:
    """Make the driver's connection ``conn`` (several ``hosts``) connect to the first that answers."""
    from clickhouse_driver import errors

    connect, create = conn.connect, conn._create_socket
    won: dict[tuple[str, int], socket.socket] = {}

    def first_that_answers():
        hosts = list(conn.hosts)
        if len(hosts) < 2:
            return connect()
        found = _race(hosts, float(conn.connect_timeout))
        if found is None:
            raise errors.SocketTimeoutError(f"no host answered within {conn.connect_timeout:.1f} s "
                                            f"({', '.join(f'{h}:{p}' for h, p in hosts)})")
        where, sock = found
        conn.hosts.rotate(-hosts.index(where))
        if conn.secure_socket:
            sock.close()
        else:
            won[where] = sock
        try:
            return connect()
        finally:
            stale = won.pop(where, None)
            if stale is not None:
                stale.close()

    def create_socket(host, port):
        sock = won.pop((host, port), None)
        if sock is None:
            return create(host, port)
        sock.settimeout(conn.connect_timeout)
        return sock

    conn.connect, conn._create_socket = first_that_answers, create_socket


def _race(hosts: list[tuple[str, int]], timeout: float) -> tuple[tuple[str, int], socket.socket] | None:
    """The first of ``hosts`` whose TCP connect succeeds within ``timeout`` (each started
    ``STAGGER_S`` after the one before), and its connected socket; None when none does."""
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    pending = list(hosts)
    try:
        next_start = time.monotonic()
        while time.monotonic() < deadline:
            now = time.monotonic()
            if pending and (now >= next_start or not sel.get_map()):
                _start(sel, pending.pop(0))
                next_start = now + STAGGER_S
                continue
            if not sel.get_map():
                return None  # every host refused
            wait = deadline - now if not pending else min(deadline, next_start) - now
            for key, _ in sel.select(max(0.0, wait)):
                where, sock = key.data
                sel.unregister(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    sock.setblocking(True)
                    return where, sock
                sock.close()
        return None
    finally:
        for key in list(sel.get_map().values()):
            key.data[1].close()
        sel.close()


def _start(sel: selectors.BaseSelector, where: tuple[str, int]) -> None:
    """Start a non-blocking connect to each address of ``where`` (a name that does not resolve
    starts none: the race goes on with the other hosts)."""
    try:
        infos = socket.getaddrinfo(where[0], where[1], 0, socket.SOCK_STREAM)
    except OSError as e:
        log.warning("failover host %s:%s cannot be resolved (%s); trying the others", where[0], where[1], e)
        return
    for af, socktype, proto, _, sa in infos:
        sock = socket.socket(af, socktype, proto)
        sock.setblocking(False)
        err = sock.connect_ex(sa)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            continue
        sel.register(sock, selectors.EVENT_WRITE, (where, sock))
