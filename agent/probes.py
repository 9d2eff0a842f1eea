"""Health probes of the middleware a service depends on (Redis, PostgreSQL, HTTP, any TCP port).

Each target URL is checked every ``interval`` seconds: at protocol level when the client library
is importable (Redis ``PING`` via redis-py, ``SELECT 1`` via psycopg2 or psycopg, MySQL ``SELECT 1``
via PyMySQL, HTTP status via urllib), otherwise by a TCP connect. ``timeout`` bounds the whole check
(DNS, connect, handshake, answer), not one read: a peer that answers a byte at a time is down at the
deadline (``probe_deadline``). The targets of a round are checked at once, each in its own thread,
so a hung one delays no other; while its check still runs, it is down without a new check.
Results feed two gauges, ``tracehouse.probe.up`` (1/0) and ``tracehouse.probe.duration`` (s),
with ``probe.target`` (the URL without its password) and ``probe.kind``. Checks run under
``suppress_instrumentation`` so they create no spans.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from tracehouse.agent import errors, forklocks, probe_postgresql
from tracehouse.agent.probe_deadline import Call, wait_all

DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "postgresql": 5432, "postgres": 5432, "mysql": 3306,
                 "amqp": 5672, "amqps": 5671, "kafka": 9092, "http": 80, "https": 443}
KINDS = {"rediss": "redis", "postgres": "postgresql", "amqps": "amqp", "https": "http"}
Result = tuple[bool, float, str | None]  # up, seconds, reason when down


@dataclass(frozen=True)
class Target:
    url: str
    kind: str
    host: str
    port: int
    display: str


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}@{host}" if user else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse(url: str) -> Target:
    """Raise ``ValueError`` for a URL that names no host or an unknown scheme."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS and scheme != "tcp":
        raise ValueError(f"unsupported probe scheme in {redact(url)!r}")
    if not parts.hostname:
        raise ValueError(f"probe URL without a host: {redact(url)!r}")
    port = parts.port or DEFAULT_PORTS.get(scheme)
    if port is None:
        raise ValueError(f"tcp probe needs a port: {url!r}")
    return Target(url.strip(), KINDS.get(scheme, scheme), parts.hostname, port, redact(url.strip()))


def _tcp(t: Target, timeout: float) -> None:
    with socket.create_connection((t.host, t.port), timeout=timeout):
        pass


def _redis(t: Target, timeout: float) -> None:
    try:
        import redis
    except ImportError:
        return _tcp(t, timeout)
    client = redis.Redis.from_url(t.url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                  retry_on_timeout=False, **_redis_plain())
    try:
        if not client.ping():
            raise ConnectionError("PING was not answered with PONG")
    finally:
        client.close()


def _redis_plain() -> dict:
    """Only PING on the wire: redis-py 8 opens with ``HELLO 3`` (RESP3), which a server before 6.0
    refuses ("unknown command"): a healthy Redis 5 was reported down. RESP2 is what every server
    speaks, and the client's ``CLIENT SETINFO`` calls add nothing to a probe."""
    import inspect

    from redis.connection import AbstractConnection

    params = inspect.signature(AbstractConnection.__init__).parameters
    return {k: v for k, v in (("protocol", 2), ("lib_name", None), ("lib_version", None)) if k in params}


def _postgresql(t: Target, timeout: float) -> None:
    if not probe_postgresql.select_1(t.url, timeout):
        _tcp(t, timeout)


def _mysql(t: Target, timeout: float) -> None:
    try:
        import pymysql
    except ImportError:
        return _tcp(t, timeout)
    p = urlsplit(t.url)
    conn = pymysql.connect(host=t.host, port=t.port, user=p.username or "root", password=p.password or "",
                           connect_timeout=timeout, read_timeout=timeout)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        conn.close()


def _http(t: Target, timeout: float) -> None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(t.url, timeout=timeout) as resp:  # noqa: S310 - configured URL
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    if status >= 500:
        raise ConnectionError(f"HTTP {status}")


CHECKS = {"redis": _redis, "postgresql": _postgresql, "mysql": _mysql, "http": _http}


def _attempt(t: Target, timeout: float) -> Result:
    """The check itself, in the thread that does the work (the OTel context is per thread)."""
    from tracehouse.agent.untraced import untraced

    start = time.perf_counter()
    try:
        with untraced():
            CHECKS.get(t.kind, _tcp)(t, timeout)
        return True, time.perf_counter() - start, None
    except Exception as exc:
        return False, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"


def _late(timeout: float, why: str) -> Result:
    return False, timeout, f"TimeoutError: {why}"


def _outcome(call: Call[Result], timeout: float) -> Result:
    """The check's result; past the deadline it is a timeout, whether the check gave up itself (the
    PostgreSQL one ends at its deadline) or is still running."""
    if call.done.is_set() and call.result is not None and (call.result[0] or call.result[1] < timeout):
        return call.result
    return _late(timeout, f"no answer within {float(timeout)} s")


def _start(t: Target, timeout: float, wake: threading.Event | None = None) -> Call[Result] | Result:
    try:
        return Call(lambda: _attempt(t, timeout), f"tracehouse-probe {t.display}", wake)
    except RuntimeError as exc:  # no thread to be had: the host is at its limit, not the target
        return False, 0.0, f"{type(exc).__name__}: {exc}"


_in_flight: dict[Target, Call[Result]] = {}  # check(): the check of each target still running
_in_flight_lock = threading.Lock()
forklocks.renew_in_child(globals(), "_in_flight_lock", then=_in_flight.clear)  # the parent's checks stay there


def _join_or_start(t: Target, timeout: float) -> tuple[Call[Result] | Result, bool]:
    """The check of ``t`` still running (joined: True), else a new one (False)."""
    with _in_flight_lock:
        for done in [k for k, c in _in_flight.items() if not c.running]:
            del _in_flight[done]
        if (call := _in_flight.get(t)) is not None:
            return call, True
        started = _start(t, timeout)
        if isinstance(started, Call):
            _in_flight[t] = started
        return started, False


def check(t: Target, timeout: float) -> Result:
    """Run one probe within ``timeout`` for the whole call: (up, seconds, reason when down).
    Never raises; past the deadline it returns and leaves the check to end in its daemon thread.
    While a check of ``t`` still runs (abandoned by an earlier call, or another thread's), a call
    waits for that one instead of starting another: one thread per target, however often (each
    call against a hung target had left one more thread blocked)."""
    call, joined = _join_or_start(t, timeout)
    if not isinstance(call, Call):
        return call
    call.done.wait(timeout)
    if joined and not call.done.is_set():
        return _late(timeout, "previous check still running")
    return _outcome(call, timeout)


class ProbeRunner:
    """Checks every target each ``interval`` from one daemon thread, each check in a thread of its
    own within ``timeout``; holds the latest results."""

    def __init__(self, urls, interval: float = 15.0, timeout: float = 2.0):
        self.targets: list[Target] = []
        for u in urls:
            try:
                self.targets.append(parse(u))
            except ValueError as exc:
                errors.swallow("probe configuration", exc)
        self.interval = interval
        self.timeout = timeout
        self.results: dict[Target, Result] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by a check that returns, and by stop()
        self._thread: threading.Thread | None = None
        self._calls: dict[Target, Call[Result]] = {}  # the last check of each target

    def run_once(self) -> None:
        """One round: every target at once; returns when all answered or at the deadline."""
        timeout = self.timeout
        deadline = time.monotonic() + timeout
        started: dict[Target, Call[Result]] = {}
        for t in self.targets:
            previous = self._calls.get(t)
            if previous is not None and previous.running:
                self.results[t] = _late(timeout, "previous check still running")
                continue
            call = _start(t, timeout, self._wake)
            if isinstance(call, Call):
                started[t] = self._calls[t] = call
            else:
                self.results[t] = call
        wait_all(started.values(), deadline, self._wake, self._stop)
        if self._stop.is_set():
            return
        for t, call in started.items():
            self.results[t] = _outcome(call, timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:
                errors.swallow("probe round", exc)
            self._stop.wait(self.interval)

    def start(self) -> ProbeRunner:
        if self.targets and (self._thread is None or not self._thread.is_alive()):
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, name="tracehouse-probes", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def after_fork(self) -> None:
        self._thread = None
        self._calls = {}  # the parent's checks did not come along
        self._wake = threading.Event()  # a parent's thread may have held its lock at the fork
        self.start()

    def register(self, meter) -> list:
        from opentelemetry.metrics import Observation

        def attrs(t: Target):
            return {"probe.target": t.display, "probe.kind": t.kind}

        def up(options):
            return [Observation(1 if r[0] else 0, attrs(t)) for t, r in list(self.results.items())]

        def duration(options):
            return [Observation(r[1], attrs(t)) for t, r in list(self.results.items())]

        return [meter.create_observable_gauge("tracehouse.probe.up", [up], unit="1",
                                              description="1 when the dependency answered its probe."),
                meter.create_observable_gauge("tracehouse.probe.duration", [duration], unit="s",
                                              description="Time the last probe took.")]
