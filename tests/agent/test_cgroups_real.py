"""Container metrics against real cgroups this test creates (as root; .ci/run runs as root).

Each cgroup is made below the test process's own cgroup of that controller and removed at the
end; only child processes started here are moved into it. The child reads its figures with the
agent's own code, which finds its cgroup from /proc/self/cgroup (not the hierarchy's root).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from tracehouse.agent import metrics_cgroup

READER = """
import json, sys, time
sys.stdin.readline()                      # moved into the cgroups by the parent by now
burn = float(sys.argv[1])
t = time.monotonic()
while time.monotonic() - t < burn:
    pass
from tracehouse.agent import metrics_cgroup
print(json.dumps({"dirs": metrics_cgroup.own_dirs(), "values": metrics_cgroup.read_own()}), flush=True)
sys.stdin.readline()
from tracehouse.agent import metrics_cgroup as m
print(json.dumps({"dirs": m.own_dirs(), "values": m.read_own()}), flush=True)
"""
HOG = "import sys\nsys.stdin.readline()\nx = bytearray(400 << 20)\nfor i in range(0, len(x), 4096):\n    x[i] = 1\nprint('survived')"


class Cgroups:
    def __init__(self):
        self.made: list[str] = []
        self.own = metrics_cgroup.own_dirs()

    def make(self, controller: str, **files: str) -> str:
        path = os.path.join(self.own[controller], f"tracehouse-test-{uuid.uuid4().hex[:8]}")
        os.mkdir(path)
        self.made.append(path)
        for name, value in files.items():
            with open(os.path.join(path, name.replace("__", ".")), "w") as f:
                f.write(value)
        return path

    def close(self):
        for path in reversed(self.made):
            for _ in range(50):
                try:
                    os.rmdir(path)
                    break
                except OSError:
                    time.sleep(0.1)


@pytest.fixture
def cgroups():
    assert os.geteuid() == 0, "these tests create cgroups: run them as root (as .ci/run does)"
    c = Cgroups()
    assert {"cpu", "cpuacct", "memory"} <= set(c.own), f"cgroup v1 controllers not mounted: {c.own}"
    yield c
    c.close()


def _start(burn: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", READER, str(burn)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def _join(proc: subprocess.Popen, *groups: str) -> None:
    for g in groups:
        with open(os.path.join(g, "cgroup.procs"), "w") as f:
            f.write(str(proc.pid))


def _step(proc: subprocess.Popen) -> dict:
    proc.stdin.write("\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def test_cpu_quota_shows_its_limit_and_throttling_in_the_process_own_cgroup(cgroups):
    cpu = cgroups.make("cpu", cpu__cfs_period_us="100000", cpu__cfs_quota_us="10000")  # a tenth of a core
    acct = cgroups.make("cpuacct")
    proc = _start(burn=0.6)
    try:
        _join(proc, cpu, acct)
        got = _step(proc)
        _step(proc)
    finally:
        proc.kill()
        proc.wait()
    assert got["dirs"]["cpu"] == cpu and got["dirs"]["cpuacct"] == acct
    v = got["values"]
    assert v["cpu.limit"] == pytest.approx(0.1)
    assert v["cpu.throttled.periods"] >= 2 and v["cpu.throttled.time"] > 0.1
    # the cgroup's own CPU time (≈ 0.1 core over the burn), not the machine's since boot
    assert 0 < v["cpu.time"] < 0.5


def test_memory_limit_and_an_oom_kill_in_the_process_own_cgroup(cgroups):
    mem = cgroups.make("memory", memory__limit_in_bytes=str(96 << 20))
    reader = _start(burn=0)
    try:
        _join(reader, mem)
        first = _step(reader)
        hog = subprocess.Popen([sys.executable, "-c", HOG], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        _join(hog, mem)
        out, _ = hog.communicate("\n", timeout=60)
        second = _step(reader)
    finally:
        reader.kill()
        reader.wait()
    assert first["dirs"]["memory"] == mem
    assert first["values"]["memory.limit"] == 96 << 20 and first["values"]["memory.usage"] < 96 << 20
    assert first["values"].get("memory.oom_kills", 0) == 0
    assert hog.returncode == -9 and "survived" not in out
    assert second["values"]["memory.oom_kills"] >= 1


def test_cgroup_v2_on_the_unified_hierarchy(cgroups):
    assert "v2" in cgroups.own, "no cgroup2 hierarchy mounted"
    v2 = cgroups.make("v2")
    proc = _start(burn=0.3)
    try:
        _join(proc, v2)
        got = _step(proc)
        _step(proc)
    finally:
        proc.kill()
        proc.wait()
    assert got["dirs"]["v2"] == v2
    # the leaf's own cpu.stat (present even where the cpu controller is bound to v1, as on this
    # machine, where v1 figures then win in read_own): the child's burn, not the machine's total
    usage = metrics_cgroup._read_v2(v2)
    assert 0.01 <= usage["cpu.time"] < 5.0
