"""Every call of the server backend ends within a bounded time, with or without a statement time
limit: on a private real clickhouse-server hung by SIGSTOP (it keeps its sockets and answers
nothing), and on a loopback socket that accepts connections and never says hello. Before, a call
without a time limit waited the 5 s ping, then the reconnection's hello for the 60 s receive timeout
(65 s), and a server that never says hello held a call 60 s."""

from __future__ import annotations

import socket
import time

import pytest

from tests.support import hung_store
from tracehouse.storage import StorageUnavailable
from tracehouse.storage.server_backend import ServerBackend, long_calls
from tracehouse.storage.url import parse_storage_url

clickhouse, hang = hung_store.clickhouse, hung_store.hang

#: what a call on a hung server may take with the defaults: the ping (5 s) and a reconnection's
#: connect and hello (5 s), and scheduling on a busy machine; far below the 65 s it took
BOUND_S = 14.0


def _timed(fn):
    t0 = time.monotonic()
    try:
        return fn(), time.monotonic() - t0
    except Exception as e:  # the test asserts on it
        return e, time.monotonic() - t0


def test_a_call_without_a_time_limit_on_a_hung_server_ends_within_the_ping_and_the_handshake(clickhouse, hang):
    backend = ServerBackend(parse_storage_url(clickhouse.url))
    try:
        assert backend.query("SELECT 1").rows == [(1,)]  # a pooled connection now
        hang()
        got, took = _timed(lambda: backend.query("SELECT 1"))
        print(f"a query without a time limit on the hung server ended in {took:.1f} s: {got!r}")
        assert isinstance(got, StorageUnavailable), got
        assert took < BOUND_S, f"{took:.1f} s"
        hang.resume()
        deadline = time.monotonic() + 30
        while True:  # answers again, on a new connection, by itself
            got, _ = _timed(lambda: backend.query("SELECT 1"))
            if not isinstance(got, Exception) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not isinstance(got, Exception), f"no answer 30 s after the server resumed: {got!r}"
        assert got.rows == [(1,)]
    finally:
        backend.close()


def test_a_statement_the_server_hangs_in_ends_at_the_call_timeout_unless_in_a_long_calls_scope(clickhouse, hang):
    """The call timeout bounds a call as a whole, a read already under way included; a long_calls
    scope (migrations, rollup rebuilds, retention) gives statements the time they need."""
    backend = ServerBackend(parse_storage_url(clickhouse.url), call_timeout=1.5)
    try:
        with long_calls(30):  # 2.5 s of work: past the call timeout, within the scope's
            assert backend.query("SELECT sleep(2.5)").rows == [(0,)]
        got, took = _timed(lambda: backend.query("SELECT sleep(2.5)"))
        assert isinstance(got, StorageUnavailable) and took < 1.5 + 1.0, (got, took)
        assert backend.query("SELECT 2").rows == [(2,)]  # the cut connection was not pooled again
        hang()
        got, took = _timed(lambda: backend.query("SELECT 3"))
        assert isinstance(got, StorageUnavailable) and took < 1.5 + 1.0, (got, took)
    finally:
        backend.close()


@pytest.fixture
def silent_server():
    """A loopback socket that accepts connections (the kernel's backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def test_a_server_that_never_says_hello_is_given_the_connect_timeout_not_the_receive_timeout(silent_server):
    from tracehouse.storage.tables import TABLES_BY_NAME

    backend = ServerBackend(parse_storage_url(f"clickhouse://default:@127.0.0.1:{silent_server}/default"),
                            connect_timeout=2)
    try:
        got, took = _timed(lambda: backend.query("SELECT 1"))
        print(f"a query to a silent server ended in {took:.1f} s: {got!r}")
        assert isinstance(got, StorageUnavailable) and took < 2 + 1.5, (got, took)
        tbl = TABLES_BY_NAME["settings"]  # an insert (a long call) waits for the hello no longer
        got, took = _timed(lambda: backend.insert(tbl, "default.settings", [[] for _ in tbl.column_names]))
        assert isinstance(got, StorageUnavailable) and took < 2 + 1.5, (got, took)
        with long_calls():
            got, took = _timed(lambda: backend.query("SELECT 1"))
        assert isinstance(got, StorageUnavailable) and took < 2 + 1.5, (got, took)
    finally:
        backend.close()
