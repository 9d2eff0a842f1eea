"""Hostile or mistaken OTEL_* values in a real instrumented process: the agent logs them, uses the
default, and the host runs (and is traced) as if they were unset."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.agent.otlp_sink import Sink, attrs

APP = r'''
import tracehouse.agent as ta
h = ta.start(service="limits-host")
from opentelemetry import trace
with trace.get_tracer("t").start_as_current_span("root") as s:
    for i in range(200):
        s.set_attribute(f"a{i}", i)
    s.set_attribute("big", "x" * 5000)
h.force_flush(5.0)
h.shutdown(2.0)
print("HOST RAN TO ITS END")
'''


@pytest.mark.parametrize("name, value", [
    ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "abc"),
    ("OTEL_ATTRIBUTE_COUNT_LIMIT", "-1"),
    ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "1e999"),
    ("OTEL_SPAN_EVENT_COUNT_LIMIT", "12.5"),
    ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "nan"),
    ("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "abc"),
    ("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", "-1"),
    ("OTEL_SPAN_EVENT_COUNT_LIMIT", "99999999999999999999"),  # past sys.maxsize: OverflowError in start_span
    ("OTEL_SPAN_LINK_COUNT_LIMIT", "9223372036854775808"),
])
def test_an_unparsable_sdk_limit_is_ignored_not_raised_into_the_host(tmp_path, name, value):
    """The SDK reads its span limits when opentelemetry.sdk.trace is imported (and again in
    SpanLimits()) and raises ValueError on a value that is not a non-negative integer: start(),
    which says it raises only for bad arguments, raised it into the host (which died of it), and
    under ``tracehouse-agent run`` the agent did not start at all."""
    sink = Sink()
    try:
        (tmp_path / "host.py").write_text(APP)
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, TRACEHOUSE_COMMAND_POLL_S="0")
        env[name] = value
        out = subprocess.run([sys.executable, str(tmp_path / "host.py")], env=env, capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
        assert out.returncode == 0 and "HOST RAN TO ITS END" in out.stdout, out.stderr
        assert f"ignoring {name}={value!r}" in out.stderr
        [(_, span)] = sink.wait(lambda s: s.spans())
        got = attrs(span.attributes)
        assert len(got) == 128 and len(got["big"]) == 5000  # the SDK's defaults: 128 attributes, no length limit
    finally:
        sink.close()


def _unshare() -> str | None:
    """``unshare`` when this user may make a private mount namespace (root, here), else None."""
    import shutil

    path = shutil.which("unshare")
    if path is None:
        return None
    try:
        ok = subprocess.run([path, "-m", "--propagation", "private", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if ok.returncode == 0 else None


def test_a_mount_point_that_is_not_utf8_does_not_stop_the_host(tmp_path):
    """A path on Linux is bytes: a mount at a directory whose name is not UTF-8 (a Latin-1 name
    on a volume, a bind mount made by a tool) shows in /proc/self/mountinfo, which the agent read
    as strict UTF-8 text for the container id: start() raised UnicodeDecodeError into the host.
    The mount is made in a private mount namespace of the host's own, seen by nothing else."""
    unshare = _unshare()
    if unshare is None:
        # CI runs as root, where a private mount namespace is always allowed: never skipped there
        assert os.geteuid() != 0, "root could not make a private mount namespace"
        pytest.skip("no private mount namespace for this user")
    sink = Sink()
    bad = os.fsencode(str(tmp_path)) + b"/caf\xe9"
    os.mkdir(bad)
    (tmp_path / "host.py").write_text(APP)
    try:
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, TRACEHOUSE_COMMAND_POLL_S="0")
        out = subprocess.run([unshare, "-m", "--propagation", "private", "sh", "-c",
                              b'mount -t tmpfs none "$1" && exec "$2" "$3"',
                              "sh", bad, sys.executable, str(tmp_path / "host.py")],
                             env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0 and "HOST RAN TO ITS END" in out.stdout, out.stderr[-3000:]
        [(_, span)] = sink.wait(lambda s: s.spans())
        assert span.name == "root"
    finally:
        sink.close()
        os.rmdir(bad)


LOG_APP = r'''
import logging
import tracehouse.agent as ta
h = ta.start(service="blrp-host", instrument=False, metrics=False)
logging.getLogger("app").warning("still exported")
h.force_flush(5.0)
h.shutdown(2.0)
print("HOST RAN TO ITS END")
'''


@pytest.mark.parametrize("value", ["0", "-1", "-0.5", "1e13"])
def test_a_bad_log_export_delay_is_ignored_not_raised_into_the_host(tmp_path, value):
    """The SDK's log processor read OTEL_BLRP_SCHEDULE_DELAY itself: 0 or a negative number raised
    ValueError out of start() (the host died of it), a fraction printed the SDK's traceback on the
    host's stderr, and 1e13 ms killed its export thread (OverflowError), so nothing was exported."""
    sink = Sink()
    try:
        (tmp_path / "host.py").write_text(LOG_APP)
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, TRACEHOUSE_COMMAND_POLL_S="0",
                   OTEL_BLRP_SCHEDULE_DELAY=value)
        out = subprocess.run([sys.executable, str(tmp_path / "host.py")], env=env, capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
        assert out.returncode == 0 and "HOST RAN TO ITS END" in out.stdout, out.stderr[-3000:]
        assert "Traceback" not in out.stderr and f"ignoring OTEL_BLRP_SCHEDULE_DELAY={value!r}" in out.stderr, \
            out.stderr[-3000:]
        records = sink.wait(lambda s: [r for _, r in s.logs() if r.body.string_value == "still exported"])
        assert len(records) == 1
    finally:
        sink.close()


DNS_APP = r'''
import time
import tracehouse.agent as ta
h = ta.start(service="dns-host", instrument=False, metrics=False)
from opentelemetry import trace
with trace.get_tracer("t").start_as_current_span("root"):
    pass
t0 = time.monotonic()
trace.get_tracer_provider().force_flush(1000)  # the host's own flush (a serverless handler's, say)
print("FLUSH_S", time.monotonic() - t0, flush=True)
h.shutdown(2.0)
print("HOST RAN TO ITS END")
'''


def _silent_name_server():
    """A UDP socket on port 53 of a loopback address of its own (resolv.conf names no port), which
    reads nothing: a name server that never answers."""
    import random
    import socket

    for _ in range(20):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}", 53))
        except OSError:
            sock.close()
            continue
        return sock
    raise AssertionError("no loopback address with a free port 53")


def test_a_resolver_that_never_answers_holds_an_export_only_within_its_timeout(tmp_path):
    """The collector's name was looked up by ``socket.create_connection``, outside the export's
    deadline: with a name server that never answers (here one on loopback that reads nothing, made
    the host's by a private mount namespace, glibc told to wait 3 s), a host thread's
    ``force_flush(1000 ms)`` took 3 s (10 to 30 s with glibc's defaults). Now the lookup counts
    against the export timeout (1 s), and the export fails after it."""
    unshare = _unshare()
    if unshare is None:
        assert os.geteuid() != 0, "root could not make a private mount namespace"
        pytest.skip("no private mount namespace for this user")
    resolver = _silent_name_server()
    (tmp_path / "resolv.conf").write_text(f"nameserver {resolver.getsockname()[0]}\n"
                                          "options timeout:3 attempts:1\n")
    (tmp_path / "host.py").write_text(DNS_APP)
    try:
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT="http://collector.never-answers.test:4318",
                   TRACEHOUSE_EXPORT_TIMEOUT="1", TRACEHOUSE_COMMAND_POLL_S="0")
        out = subprocess.run([unshare, "-m", "--propagation", "private", "sh", "-c",
                              'mount --bind "$1" /etc/resolv.conf && exec "$2" "$3"', "sh",
                              str(tmp_path / "resolv.conf"), sys.executable, str(tmp_path / "host.py")],
                             env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0 and "HOST RAN TO ITS END" in out.stdout, out.stderr[-3000:]
        flush_s = float(out.stdout.split("FLUSH_S ")[1].split()[0])
        assert flush_s < 2.0, out.stdout
        assert "no answer from the resolver for" in out.stderr, out.stderr[-3000:]
    finally:
        resolver.close()
