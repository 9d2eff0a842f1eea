"""A buffer directory belongs to one process: a second collector on it refuses to start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from testkit.servers import free_port
from tracehouse.collector.wal import Wal, WalLocked

HOLD = textwrap.dedent("""
    import sys, time
    from tracehouse.collector.wal import Wal
    w = Wal(sys.argv[1]); w.open(); print("held", flush=True); time.sleep(600)
""")


def _holder(directory: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, directory], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_process_cannot_open_a_buffer_in_use_and_can_once_the_first_dies(tmp_path):
    d = str(tmp_path / "buf")
    p = _holder(d)
    try:
        with pytest.raises(WalLocked, match=rf"in use by another process \(pid {p.pid}\)"):
            Wal(d).open()
    finally:
        os.kill(p.pid, signal.SIGKILL)  # a crash releases the lock with the process
        p.wait(10)
    w = Wal(d)
    w.open()
    w.stop()
    w2 = Wal(d)  # and a clean stop releases it too
    w2.open()
    w2.stop()


def test_tracehouse_collector_refuses_a_buffer_in_use_with_a_clear_message(tmp_path, clickhouse_url):
    d = str(tmp_path / "buf")
    held = Wal(d)
    held.open()
    try:
        exe = os.path.join(os.path.dirname(sys.executable), "tracehouse")
        env = dict(os.environ, TRACEHOUSE_BUFFER_DIR=d)
        out = subprocess.run([exe, "collector", "--storage", clickhouse_url.rsplit("/", 1)[0] + "/t_wal_lock",
                              "--otlp-port", str(free_port())], env=env, capture_output=True, text=True, timeout=120)
    finally:
        held.stop()
        from tracehouse.storage import Store

        with Store.open(clickhouse_url) as s:
            s.query("DROP DATABASE IF EXISTS t_wal_lock")
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"the buffer directory {d} is in use by another process (pid {os.getpid()})" in out.stderr
    assert "Traceback" not in out.stderr
