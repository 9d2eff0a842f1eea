"""What the agent's log handler makes of a host's records, in a real instrumented process exporting
to a receiver on loopback."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.agent.otlp_sink import Sink, attrs

TEXT_MAX = 16384  # the agent's value limit (otlp_wire.TEXT_MAX), what the collector stores of a value

HUGE_ATTRIBUTES = r'''
import logging
import tracehouse.agent as ta
h = ta.start(service="log-limits", instrument=False, metrics=False)
log = logging.getLogger("app")
log.addHandler(logging.NullHandler())

def ping(n):  # two functions in turn: the traceback repeats no line, so nothing of it is folded
    return pong(n - 1) if n else fail("short")

def pong(n):
    return ping(n - 1)

def fail(message):
    raise ValueError("bad input: " + message)

try:
    ping(800)
except ValueError:
    log.exception("deep", extra={"payload": "p" * 1_000_000, "tags": ("t" * 100_000, "short")})
try:
    fail("m" * 1_000_000)
except ValueError:
    log.exception("long message")
h.force_flush(5.0)
h.shutdown(2.0)
print("HOST RAN TO ITS END")
'''


def test_exception_attributes_and_extras_of_a_log_record_are_cut_to_the_value_limit(tmp_path):
    """The handler cut a record's body, not its attributes: a deep recursion's
    ``exception.stacktrace`` (1 MB here), a long ``exception.message`` and the host's ``extra=``
    values went out whole, and waited so in the log queue (2,048 records) while the collector was
    slow. Now each is cut to 16,384 characters; the stack trace keeps its outermost frames and its
    end (the frame that raised and the exception)."""
    sink = Sink()
    try:
        (tmp_path / "host.py").write_text(HUGE_ATTRIBUTES)
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, TRACEHOUSE_COMMAND_POLL_S="0")
        out = subprocess.run([sys.executable, str(tmp_path / "host.py")], env=env, capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
        assert out.returncode == 0 and "HOST RAN TO ITS END" in out.stdout, out.stderr[-3000:]
        records = {r.body.string_value: attrs(r.attributes) for _, r in sink.wait(lambda s: len(s.logs()) == 2
                                                                                   and s.logs())}
        deep, long = records["deep"], records["long message"]
        trace = deep["exception.stacktrace"]
        assert len(trace) == TEXT_MAX, len(trace)
        assert trace.startswith("Traceback (most recent call last):\n")
        assert " characters cut ...\n" in trace and trace.endswith("ValueError: bad input: short\n"), trace[-300:]
        assert deep["payload"] == "p" * TEXT_MAX
        assert [v.string_value for v in deep["tags"].values] == ["t" * TEXT_MAX, "short"]
        assert deep["exception.message"] == "bad input: short"
        assert long["exception.message"] == ("bad input: " + "m" * TEXT_MAX)[:TEXT_MAX]
        assert len(long["exception.stacktrace"]) == TEXT_MAX
    finally:
        sink.close()


NOT_UTF8 = r'''
import logging, sys
import tracehouse.agent as ta
h = ta.start(service="not-utf8", instrument=False, metrics=False)
log = logging.getLogger("app")
log.addHandler(logging.NullHandler())
name = sys.argv[1]  # a file name in Latin-1, as Python decodes it: "caf\udce9.csv"
log.warning("before")
log.warning("cannot open %s", name, extra={"file": name, "files": [name, "ok"]})
log.warning("after")
h.force_flush(5.0)
h.shutdown(2.0)
print("HOST RAN TO ITS END")
'''


def test_a_log_record_with_text_that_is_not_utf8_is_exported_with_its_batch(tmp_path):
    """A file name in Latin-1 (from an argument, ``os.listdir``, an environment value) is a str with a
    lone surrogate; the SDK's log encoder raised on it: the three records of the batch were all
    dropped (``export logs failed: UnicodeEncodeError``), and the same name in the process's
    arguments (a resource attribute) printed a traceback on the host's stderr at every log export.
    Now such characters are written as ``?``, as in spans, and the batch goes out."""
    sink = Sink()
    try:
        (tmp_path / "host.py").write_text(NOT_UTF8)
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, TRACEHOUSE_COMMAND_POLL_S="0")
        out = subprocess.run([sys.executable, str(tmp_path / "host.py"), b"caf\xe9.csv"], env=env,
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0 and "HOST RAN TO ITS END" in out.stdout, out.stderr[-3000:]
        assert "Traceback" not in out.stderr and "failed" not in out.stderr, out.stderr[-3000:]
        logs = sink.wait(lambda s: len(s.logs()) == 3 and s.logs())
        assert [r.body.string_value for _, r in logs] == ["before", "cannot open caf?.csv", "after"]
        got = attrs(logs[1][1].attributes)
        assert got["file"] == "caf?.csv" and [v.string_value for v in got["files"].values] == ["caf?.csv", "ok"]
        assert [v.string_value for v in logs[0][0]["process.command_args"].values][-1] == "caf?.csv"
    finally:
        sink.close()
