"""A probe's ``timeout`` bounds the whole check, not one socket read. A peer that answers a byte at a
time never trips a per-read timeout: the check ran for as long as the peer went on, and since every
target was checked one after another in one thread, every other target's result (and the
``tracehouse.probe.*`` gauges) stayed at its last value, "up" included, for as long as that lasted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from testkit import servers
from tests.agent.helpers import use_driver
from tests.agent.otlp_sink import HangingServer, TricklingServer
from tracehouse.agent import probes


def within(seconds: float, fn):
    """``fn()``, or an AssertionError when it has not returned after ``seconds`` (it goes on in a
    daemon thread, so a hanging check fails the test instead of hanging it)."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert out, f"did not return within {seconds} s"
    return out[0]


def timed_check(url: str, timeout: float, bound: float = 10.0):
    t0 = time.monotonic()
    result = within(bound, lambda: probes.check(probes.parse(url), timeout))
    return result, time.monotonic() - t0


def gauges(runner: probes.ProbeRunner) -> dict[str, dict[str, float]]:
    reader = InMemoryMetricReader()
    runner.register(MeterProvider(metric_readers=[reader]).get_meter("t"))
    data = reader.get_metrics_data()
    return {m.name: {p.attributes["probe.target"]: p.value for p in m.data.data_points}
            for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


PEERS = {
    # each reply (HELLO, CLIENT SETINFO ×2, PING) a byte every 0.3 s: no read waited 1 s, up after ~11 s
    "redis spelling +PONG": (lambda: TricklingServer.redis(every=0.3, forever=False), "redis", "", 20),
    "redis reply never ends": (lambda: TricklingServer.redis(every=0.1), "redis", "", 5),
    "http head never ends": (lambda: TricklingServer.http("head"), "http", "/health", 5),
    # libpq's connect_timeout bounds the handshake; nothing bounded the query after it
    # (statement_timeout is the server's)
    "postgresql answer never ends": (lambda: TricklingServer.postgresql(every=0.1), "postgresql", "/x", 5),
}


@pytest.mark.parametrize("peer", PEERS)
def test_a_peer_answering_a_byte_at_a_time_is_down_at_the_deadline(peer):
    start, scheme, path, bound = PEERS[peer]
    slow = start()
    try:
        (up, seconds, reason), elapsed = timed_check(slow.url.replace("http", scheme) + path, 1.0, bound)
        assert (up, seconds, reason) == (False, 1.0, "TimeoutError: no answer within 1.0 s")
        assert elapsed < 1.6, elapsed
    finally:
        slow.close()


def test_a_hung_target_does_not_hold_up_a_healthy_one(tmp_path):
    """The hung target comes first; the real Redis after it is reported up each round, then down
    once stopped. Before, the one probe thread never got past the hung target: no result at all."""
    never = TricklingServer.redis(every=0.1)
    redis = servers.start_redis(str(tmp_path / "redis"))
    runner = probes.ProbeRunner([never.url.replace("http", "redis"), redis.url], interval=0.2, timeout=0.5)
    hung, healthy = runner.targets
    runner.start()
    try:
        assert wait_for(lambda: {hung, healthy} <= runner.results.keys(), 3), runner.results
        assert runner.results[healthy][0] is True, runner.results
        first = runner.results[healthy]
        assert wait_for(lambda: runner.results[healthy] is not first, 0.2 + 0.5 + 1), "not refreshed"
        assert runner.results[healthy][0] is True, runner.results
        up, seconds, reason = runner.results[hung]
        assert up is False and seconds == 0.5 and reason.startswith("TimeoutError: "), reason
        g = gauges(runner)
        assert g["tracehouse.probe.up"] == {hung.display: 0, healthy.display: 1}, g
        assert g["tracehouse.probe.duration"][hung.display] == 0.5, g
        redis.stop()
        assert wait_for(lambda: runner.results[healthy][0] is False, 0.2 + 0.5 + 1.5), runner.results
        assert gauges(runner)["tracehouse.probe.up"] == {hung.display: 0, healthy.display: 0}
    finally:
        runner.stop()
        redis.stop()
        never.close()


def test_a_hung_target_keeps_one_check_in_flight_however_many_rounds():
    """Each round reports it down at the deadline; no second check (thread, connection) is started
    while the first still runs. Before, the first round never returned."""
    never = TricklingServer.redis(every=0.05)
    runner = probes.ProbeRunner([never.url.replace("http", "redis")], interval=0.01, timeout=0.1)
    (target,) = runner.targets
    try:
        reasons = set()
        for _ in range(30):
            within(2, runner.run_once)
            up, seconds, reason = runner.results[target]
            assert up is False and seconds == 0.1, runner.results
            reasons.add(reason)
        assert reasons == {"TimeoutError: no answer within 0.1 s", "TimeoutError: previous check still running"}
        workers = [t for t in threading.enumerate() if t.name == f"tracehouse-probe {target.display}"]
        assert len(workers) == 1 and len(never.conns) == 1, (workers, len(never.conns))
    finally:
        never.close()
    assert wait_for(lambda: not workers[0].is_alive(), 2)  # the peer hung up: the check ended


def test_targets_that_accept_and_never_answer_cost_at_most_one_thread_each_over_many_intervals():
    """A "Redis" and a "PostgreSQL" that accept and never say a word, probed every 0.05 s with a
    0.2 s timeout by the runner's own loop for 3 s (some 12 rounds): at no time more than one
    check thread per target, each reported down with a TimeoutError."""
    hang = HangingServer()
    runner = probes.ProbeRunner([f"redis://127.0.0.1:{hang.port}", f"postgresql://u@127.0.0.1:{hang.port}/db"],
                                interval=0.05, timeout=0.2)
    names = {f"tracehouse-probe {t.display}" for t in runner.targets}
    most = 0
    runner.start()
    try:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            workers = [t for t in threading.enumerate() if t.name in names]
            most = max(most, len(workers))
            assert len({t.name for t in workers}) == len(workers), workers  # one per target
            time.sleep(0.02)
        results = dict(runner.results)
    finally:
        runner.stop()
        hang.close()
    assert 1 <= most <= 2, most
    assert {t.kind for t in results} == {"redis", "postgresql"}
    assert all(up is False and reason.startswith("TimeoutError: ") for up, _, reason in results.values()), results


def test_stop_and_interpreter_exit_do_not_wait_for_a_hung_check():
    never = TricklingServer.redis(every=0.1)
    code = f"""
import time
from tracehouse.agent import probes
r = probes.ProbeRunner(["redis://127.0.0.1:{never.port}"], interval=0.05, timeout=0.2).start()
time.sleep(0.5)
t0 = time.monotonic()
r.stop()
print(round(time.monotonic() - t0, 3))
"""
    try:
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and out.stderr == "", out.stderr
        assert float(out.stdout) < 0.3 and time.monotonic() - t0 < 10, out.stdout
    finally:
        never.close()


def test_a_forked_child_checks_afresh_while_the_parents_check_hangs():
    """The parent's hung check did not come along into the child: the child checks that target
    again (down at the deadline) and keeps checking the healthy one (the same port, by TCP)."""
    never = TricklingServer.redis(every=0.1)
    code = f"""
import os, time
from tracehouse.agent import probes
r = probes.ProbeRunner(["redis://127.0.0.1:{never.port}", "tcp://127.0.0.1:{never.port}"],
                       interval=0.05, timeout=0.2).start()
time.sleep(0.5)
pid = os.fork()
if pid == 0:
    r.after_fork()
    r.results.clear()
    time.sleep(0.2 + 0.3)
    print(sorted((t.kind, up, reason) for t, (up, _, reason) in r.results.items()), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    finally:
        never.close()
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.strip() in (
        "[('redis', False, 'TimeoutError: no answer within 0.2 s'), ('tcp', True, None)]",
        "[('redis', False, 'TimeoutError: previous check still running'), ('tcp', True, None)]"), out.stdout


def _stopped_postgres(tmp_path):
    """A real PostgreSQL, its postmaster stopped with SIGSTOP: the kernel still accepts connections."""
    pg = servers.start_postgres(tempfile.mkdtemp(prefix="th-pg-hung-"))  # initdb's user must reach it
    with open(os.path.join(pg.directory, "data", "postmaster.pid")) as f:
        postmaster = int(f.readline())
    os.kill(postmaster, signal.SIGSTOP)

    def close():
        # runuser (when root) stopped itself with its child and forwards nothing until continued
        for pid in {postmaster, pg.pid}:
            os.kill(pid, signal.SIGCONT)
        os.kill(postmaster, signal.SIGINT)  # fast shutdown: the connections the kernel queued end too
        pg.stop()
        shutil.rmtree(pg.directory, ignore_errors=True)
    return pg.url, close


def _hanging_socket(tmp_path):
    hang = HangingServer()
    return f"postgresql://u@127.0.0.1:{hang.port}/db", hang.close


def _trickling_answer(tmp_path):
    slow = TricklingServer.postgresql(every=0.05)
    return f"postgresql://u@127.0.0.1:{slow.port}/db", slow.close


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
@pytest.mark.parametrize("hung", [_hanging_socket, _stopped_postgres, _trickling_answer],
                         ids=["socket", "sigstop", "trickle"])
def test_a_hung_postgresql_check_ends_at_its_deadline_with_its_thread(tmp_path, monkeypatch, hung, driver):
    """libpq's connect_timeout is whole seconds, at least 2: a check with a 0.3 s timeout was reported
    at 0.3 s, but its thread (and its connection to the server) lived on for 2 s, so each round
    of a runner probing more often found "previous check still running" instead of checking. Now
    the check ends at its deadline: every round is a fresh check, and no thread is left behind.
    With psycopg 3 (no psycopg2) the check connected and queried blocking: its thread outlived the
    deadline by 2 s (socket, sigstop) and, once past the handshake (trickle), for as long as the
    server went on."""
    use_driver(monkeypatch, driver)
    url, close = hung(tmp_path)
    runner = probes.ProbeRunner([url], interval=3600, timeout=0.3)
    (target,) = runner.targets
    name = f"tracehouse-probe {target.display}"
    try:
        for _ in range(4):
            within(2, runner.run_once)
            assert runner.results[target] == (False, 0.3, "TimeoutError: no answer within 0.3 s"), runner.results
            assert wait_for(lambda: not [t for t in threading.enumerate() if t.name == name], 0.3), \
                "the check's thread outlived its deadline"
    finally:
        close()


HUNG_PEERS = {
    # each a byte every 0.02 s: no read of the client waits its 0.1 s socket timeout, so no check ends
    "redis": lambda: TricklingServer.redis(every=0.02),
    "http": lambda: TricklingServer(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"x", every=0.02),  # a header never ending
}


@pytest.mark.parametrize("kind", HUNG_PEERS)
def test_check_called_again_and_again_keeps_one_check_in_flight(kind):
    """``probes.check()`` called 50 times (as a host's own scheduler would) on a target that never
    finishes its answer: each call is down at its deadline, and only the first starts a check (one
    thread, one connection). Before, every call started a thread of its own that stayed blocked:
    50 threads and 50 connections after 50 calls."""
    hung = HUNG_PEERS[kind]()
    target = probes.parse(hung.url.replace("http", kind))
    name = f"tracehouse-probe {target.display}"
    before = threading.active_count()
    try:
        results, most = [], 0
        for _ in range(50):
            results.append(within(2, lambda: probes.check(target, 0.1)))
            most = max(most, threading.active_count() - before)
        workers = [t for t in threading.enumerate() if t.name == name]
        assert len(workers) == 1 and len(hung.conns) == 1, (len(workers), len(hung.conns))
        assert most <= 2, most  # the check's thread, and the test server's own for its connection
        assert results[0] == (False, 0.1, "TimeoutError: no answer within 0.1 s"), results[0]
        assert set(results[1:]) == {(False, 0.1, "TimeoutError: previous check still running")}, set(results)
    finally:
        hung.close()
    assert wait_for(lambda: not workers[0].is_alive(), 2)  # the peer hung up: the check ended
    # the target checked afresh once its check ended
    assert probes.check(target, 0.1) == (False, 0.1, "TimeoutError: no answer within 0.1 s")
