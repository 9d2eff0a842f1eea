import tempfile
import time

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from testkit import servers
from tests.agent.helpers import use_driver
from tests.agent.otlp_sink import HangingServer, TricklingServer, closed_port_url
from tracehouse.agent import probes


def test_parse_and_redact():
    t = probes.parse("postgresql://app:hunter2@db.local/shop")
    assert (t.kind, t.host, t.port) == ("postgresql", "db.local", 5432)
    assert t.display == "postgresql://app@db.local/shop" and "hunter2" not in t.display
    assert probes.parse("rediss://:pw@cache:7000").display == "rediss://cache:7000"
    assert probes.parse("kafka://broker").port == 9092
    for bad in ("ftp://x", "tcp://host", "redis://"):
        try:
            probes.parse(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_real_redis_and_postgres_are_up(redis_server, postgres_server, sink):
    runner = probes.ProbeRunner([redis_server.url, postgres_server.url, sink.url + "/health",
                                 f"tcp://127.0.0.1:{redis_server.port}"], timeout=2)
    runner.run_once()
    assert [r[0] for r in runner.results.values()] == [True, True, True, True], runner.results
    reader = InMemoryMetricReader()
    runner.register(MeterProvider(metric_readers=[reader]).get_meter("t"))
    data = reader.get_metrics_data()
    pts = {m.name: m.data.data_points for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    kinds = sorted(p.attributes["probe.kind"] for p in pts["tracehouse.probe.up"])
    assert kinds == ["http", "postgresql", "redis", "tcp"]
    assert all(p.value == 1 for p in pts["tracehouse.probe.up"])
    assert all(0 < p.value < 2 for p in pts["tracehouse.probe.duration"])


def test_wrong_password_and_stopped_servers_are_down(tmp_path):
    redis = servers.start_redis(str(tmp_path / "redis"))
    runner = probes.ProbeRunner([redis.url, closed_port_url().replace("http", "tcp")], interval=0.2, timeout=1)
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(runner.results) < 2:
            time.sleep(0.05)
        up = {t.kind: r[0] for t, r in runner.results.items()}
        assert up == {"redis": True, "tcp": False}
        redis.stop()
        deadline = time.monotonic() + 3  # interval + timeout, with margin
        while time.monotonic() < deadline and runner.results[runner.targets[0]][0]:
            time.sleep(0.05)
        up, seconds, reason = runner.results[runner.targets[0]]
        assert up is False and seconds <= 1.5 and reason
    finally:
        runner.stop()
        redis.stop()


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_postgres_stopped_mid_test(monkeypatch, driver):
    use_driver(monkeypatch, driver)
    pg = servers.start_postgres(tempfile.mkdtemp(prefix="th-pg-agent-"))
    target = probes.parse(pg.url)
    up, seconds, reason = probes.check(target, 2)
    assert (up, reason) == (True, None) and seconds < 2
    wrong = probes.parse(pg.url.replace("/postgres", "/no_such_database"))
    up, _, reason = probes.check(wrong, 2)
    assert up is False and "no_such_database" in reason, reason
    pg.stop()
    up, seconds, reason = probes.check(target, 2)
    assert up is False and seconds < 2.5 and reason


def test_hanging_peer_is_down_within_the_timeout():
    hang = HangingServer()
    try:
        t0 = time.monotonic()
        up, _, reason = probes.check(probes.parse(hang.url.replace("http", "redis")), 0.5)
        assert up is False and time.monotonic() - t0 < 2 and "imeout" in reason
    finally:
        hang.close()


def test_a_redis_older_than_six_is_up():
    """redis-py 8 opens with HELLO 3, which Redis before 6.0 refuses: a healthy Redis 5 was down.
    A peer speaking only RESP2 (it refuses HELLO and CLIENT SETINFO as Redis 5 does) must be up,
    and a probe sends it nothing but what it needs (AUTH, SELECT, PING)."""
    seen: list[bytes] = []

    def reply(request: bytes) -> bytes:
        seen.append(request.split(b"\r\n")[2])
        if b"HELLO" in request:
            return b"-ERR unknown command 'HELLO'\r\n"
        if b"SETINFO" in request:
            return b"-ERR Unknown subcommand or wrong number of arguments for 'SETINFO'\r\n"
        return b"+PONG\r\n" if b"PING" in request else b"+OK\r\n"

    peer = TricklingServer(b"", b"", every=0, reply=reply)
    try:
        up, _, reason = probes.check(probes.parse(f"redis://:secret@127.0.0.1:{peer.port}/2"), 5.0)
    finally:
        peer.close()
    assert (up, reason) == (True, None)
    assert seen == [b"AUTH", b"SELECT", b"PING"]
