"""deploy/cluster/loopback.py, the script the README points to, knows the cluster it started (its
state file records every PID) and reports each process from another invocation."""

from __future__ import annotations

import subprocess
import sys

from testkit.servers import ROOT


def test_the_script_reports_every_process_of_the_running_cluster(cluster):
    out = subprocess.run([sys.executable, str(ROOT / "deploy" / "cluster" / "loopback.py"), "status", "--dir",
                          cluster.dir], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()}
    for name in ("zookeeper", "ch-s1-r1", "ch-s1-r2", "ch-s2-r1", "ch-s2-r2", "collector-1", "collector-2", "haproxy"):
        assert lines[name].endswith("running"), lines.get(name)
        assert f"pid {cluster.procs[name].pid}" in " ".join(lines[name].split())
