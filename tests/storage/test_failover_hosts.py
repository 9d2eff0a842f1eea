"""A storage URL with failover hosts (``alt_hosts``) whose first host drops connects unanswered (a
black hole: no RST, each connect waits its timeout): new connections go to the host that answered
last. Before, every new connection (the pool's after a broken one, every readiness ping) tried the
black hole first and spent its connect timeout there: a call whose time was no longer than the
connect timeout ran to its deadline, and its connection, cut there, was dropped, so every call
did it again."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from tracehouse.storage import StorageUnavailable
from tracehouse.storage.server_backend import ServerBackend, long_calls
from tracehouse.storage.url import parse_storage_url


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A loopback port whose connects are never answered: a listener that never accepts, its
    backlog full, so the kernel drops further SYNs (the client waits its connect timeout)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fill = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fill.append(s)
        probe = socket.socket()
        probe.settimeout(0.5)
        with pytest.raises(TimeoutError):  # the hole is real: a connect waits its timeout
            probe.connect(("127.0.0.1", port))
        probe.close()
        yield port
    finally:
        for s in fill:
            s.close()
        lst.close()


def test_new_connections_go_to_the_failover_host_that_answered_not_to_the_black_hole(clickhouse_url):
    good = parse_storage_url(clickhouse_url)
    with black_hole() as hole:
        url = parse_storage_url(f"clickhouse://default:@127.0.0.1:{hole}/default"
                                f"?alt_hosts={good.host}:{good.port}")
        # calls may take 2 s in all, the connect timeout 3 s: the black hole would take all of it
        backend = ServerBackend(url, pool_size=1, connect_timeout=3.0, call_timeout=2.0)
        try:
            with long_calls(30):  # the first connection finds the host that answers (after the hole's 3 s)
                assert backend.query("SELECT 1").rows == [(1,)]
            # the pooled connection is cut at its deadline: the next call makes a new one
            with pytest.raises(StorageUnavailable):
                backend.query("SELECT sleep(3)")
            took_queries = []
            for _ in range(3):  # each on the connection the one before left, or a new one
                t0 = time.monotonic()
                assert backend.query("SELECT 1").rows == [(1,)]
                took_queries.append(time.monotonic() - t0)
            # the readiness ping, on a connection of its own each time
            t0 = time.monotonic()
            assert backend.ping(2.0)
            took_ping = time.monotonic() - t0
        finally:
            backend.close()
    print(f"queries after the cut: {[round(t, 2) for t in took_queries]} s, ping {took_ping:.2f} s")
    # none waits the black hole's 2 s (before: each query took 2 s, ending at its deadline with its
    # connection dropped, so the next one went to the black hole again; the ping took its 2 s)
    assert max(took_queries) < 1.0 and took_ping < 1.0, (took_queries, took_ping)


def test_the_first_connection_does_not_wait_for_a_black_holed_first_host(clickhouse_url):
    """A fresh backend (no host has answered yet) whose first host is a black hole: its first call
    and its readiness ping connect to the failover host a quarter of a second later. Before, the
    first connection waited on the black hole for all the time the call had (its 3 s connect timeout
    cut to the call's 2 s): 2.0 s for the query and for the ping, against 0.26 s now."""
    good = parse_storage_url(clickhouse_url)
    with black_hole() as hole:
        url = parse_storage_url(f"clickhouse://default:@127.0.0.1:{hole}/default"
                                f"?alt_hosts={good.host}:{good.port}")
        took = {}
        for what in ("query", "ping"):
            backend = ServerBackend(url, pool_size=1, connect_timeout=3.0, call_timeout=2.0)
            try:
                t0 = time.monotonic()
                if what == "query":
                    assert backend.query("SELECT 1").rows == [(1,)]
                else:
                    assert backend.ping(2.0)
                took[what] = time.monotonic() - t0
            finally:
                backend.close()
    print(f"first call on a fresh backend: {took}")
    # the failover host's connect starts a quarter of a second after the black hole's
    assert max(took.values()) < 1.5, took


def test_no_host_answering_ends_within_one_connect_timeout_not_one_per_host():
    """Every host a black hole: a connection gives up after the connect timeout once (before: once
    per host, 2 x 1.5 s), and says which hosts it tried."""
    with black_hole() as a, black_hole() as b:
        url = parse_storage_url(f"clickhouse://default:@127.0.0.1:{a}/default?alt_hosts=127.0.0.1:{b}")
        backend = ServerBackend(url, pool_size=1, connect_timeout=1.5, call_timeout=10.0)
        try:
            t0 = time.monotonic()
            with pytest.raises(StorageUnavailable):
                backend.query("SELECT 1")
            took = time.monotonic() - t0
        finally:
            backend.close()
    assert 1.4 < took < 2.5, took
