"""A private clickhouse-server that a test may hang (SIGSTOP: it keeps its connections and answers
nothing) and resume (SIGCONT), by its own pid. Import the fixtures into a test module."""

from __future__ import annotations

import os
import signal

import pytest

from testkit import servers


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory):
    proc = servers.start_clickhouse(str(tmp_path_factory.mktemp("outage-clickhouse")))
    yield proc
    try:
        os.kill(proc.pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
    proc.stop()


class Hang:
    def __init__(self, pid: int):
        self.pid = pid

    def __call__(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


@pytest.fixture
def hang(clickhouse):
    """``hang()`` stops the server's process; ``hang.resume()`` lets it go on (done at the end in any case)."""
    h = Hang(clickhouse.pid)
    yield h
    h.resume()


@pytest.fixture
def outage_store(clickhouse, request):
    from tracehouse.storage import Store

    name = "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:40]
    store = Store.open(clickhouse.url.rsplit("/", 1)[0] + "/" + name)
    store.migrate()
    yield store
    store.close()
