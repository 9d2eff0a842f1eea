"""The loopback cluster of deploy/cluster/loopback.py, for tests: started once per session.

ZooKeeper, 2 shards x 2 replicas of Debian's clickhouse-server, two ``tracehouse collector``
processes behind haproxy, all on free loopback ports under one temporary directory, each stopped by
its PID at the end. Tests kill, stop and restart single processes through the same object.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time

from testkit.servers import ROOT

_spec = importlib.util.spec_from_file_location("tracehouse_loopback", ROOT / "deploy" / "cluster" / "loopback.py")
loopback = importlib.util.module_from_spec(_spec)
sys.modules["tracehouse_loopback"] = loopback
_spec.loader.exec_module(loopback)
LoopbackCluster = loopback.LoopbackCluster


def tracehouse_command() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "tracehouse")
    if not os.path.exists(exe):
        raise RuntimeError(f"no tracehouse command next to {sys.executable}: pip install -e . first")
    return [exe]


def start_cluster(directory: str, **options) -> LoopbackCluster:
    c = LoopbackCluster(directory)
    c.configure(tracehouse=tracehouse_command(), **options)
    t0 = time.monotonic()
    try:
        c.start_all()
    except BaseException:
        c.stop_all()
        raise
    c.info["started_in_s"] = round(time.monotonic() - t0, 1)
    return c
