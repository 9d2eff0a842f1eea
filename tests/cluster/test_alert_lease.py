"""One alert evaluator per cluster: two ``tracehouse alerts run`` share a ZooKeeper lease; the
holder is SIGKILLed; the other takes over within the lease's expiry and notifies what fires next,
and nothing already notified is sent again."""

from __future__ import annotations

import os
import signal
import time

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from testkit.receiver import Receiver
from testkit.servers import free_port
from tests.cluster.conftest import LEASE_TTL_S
from tests.support.waiting import wait_for

NS = 1_000_000_000

RULES = """
groups:
  - name: lease
    interval: 1s
    rules:
      - alert: LeaseA
        kind: red
        service: lease-a
        signal: error_rate
        window: 10m
        op: ">"
        threshold: 0
      - alert: LeaseB
        kind: red
        service: lease-b
        signal: error_rate
        window: 10m
        op: ">"
        threshold: 0
receivers:
  - name: hook
    webhook: {url: "%s"}
route: {receiver: hook, group_by: [alertname], group_wait: 1s, group_interval: 2s, repeat_interval: 1h}
notifications: {allow_private_destinations: true}
"""


def _failing_spans(store, service: str, n: int = 20) -> None:
    cols = store.columns_for("spans")
    now = time.time_ns()
    for i in range(n):
        row = dict(timestamp=now // NS, trace_id=os.urandom(16), span_id=os.urandom(8), parent_span_id=b"\0" * 8,
                   trace_state="", service=service, name="GET /x", kind=2, status_code=2, status_message="boom",
                   start_ns=now - i * 1000, duration_ns=5_000_000, attr_keys=[], attr_values=[], attr_types=[],
                   resource_keys=["service.name"], resource_values=[service], scope_name="", scope_version="",
                   events_time_ns=[], events_name=[], events_attrs=[], links_trace_id=[], links_span_id=[],
                   links_attrs=[])
        for k, v in row.items():
            cols[k].append(v)
    store.insert("spans", cols, batch_id=int.from_bytes(os.urandom(7), "big") | 1)


def _firing(receiver: Receiver) -> dict[str, int]:
    """Firing notifications received per alert name."""
    out: dict[str, int] = {}
    for body in receiver.bodies:
        for a in body["alerts"]:
            if a["status"] == "firing":
                out[a["labels"]["alertname"]] = out.get(a["labels"]["alertname"], 0) + 1
    return out


def test_evaluator_killed_hands_over_within_the_lease_expiry_and_notifies_once(cluster, cluster_store, tmp_path):
    receiver = Receiver()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES % receiver.url)
    env = {"TRACEHOUSE_ZOOKEEPER": cluster.info["zookeeper"], "TRACEHOUSE_LEASE_TTL": str(LEASE_TTL_S),
           "TRACEHOUSE_LOG_LEVEL": "info"}
    names = ["alerts-1", "alerts-2"]
    for name in names:
        port = free_port()
        cluster.add_process(name, [*cluster.info["tracehouse"], "alerts", "run", "--storage",
                                   cluster.info["storage_url"], "--rules", str(rules), "--http-port", str(port)],
                            env=env, ready_url=f"http://127.0.0.1:{port}/readyz")
        cluster.start(name)
    zk = KazooClient(hosts=cluster.info["zookeeper"], timeout=5)
    zk.start(timeout=10)
    path = f"/tracehouse/{cluster_store.db}/alerts-lease"

    def holder_pid() -> int:
        try:  # one read: the killed holder's node can expire between an exists() and a get()
            return int(zk.get(path)[0].decode().rsplit(":", 1)[1])
        except NoNodeError:
            return 0

    try:
        pids = {cluster.procs[n].pid: n for n in names}
        first = wait_for(lambda: holder_pid() in pids and holder_pid(), 30, what="a lease holder")
        _failing_spans(cluster_store, "lease-a")
        wait_for(lambda: _firing(receiver).get("LeaseA"), 60, what="LeaseA notified")
        time.sleep(1.5)  # the holder records what it sent right after sending

        killed_at = time.monotonic()
        cluster.kill(pids[first])  # SIGKILL: no clean release, the session must expire
        second = wait_for(lambda: holder_pid() not in (0, first) and holder_pid(), LEASE_TTL_S + 10,
                          every=0.1, what="another evaluator holding the lease")
        takeover = time.monotonic() - killed_at
        assert second in pids and second != first
        assert takeover <= LEASE_TTL_S * 1.5 + 2, f"takeover took {takeover:.1f}s (lease {LEASE_TTL_S}s)"

        _failing_spans(cluster_store, "lease-b")
        wait_for(lambda: _firing(receiver).get("LeaseB"), 60, what="LeaseB notified by the new holder")
        time.sleep(3 * 2 + 2)  # three group intervals: a repeat or a duplicate would show by now
        assert _firing(receiver) == {"LeaseA": 1, "LeaseB": 1}, receiver.bodies
        print(f"\nlease: evaluator {first} SIGKILLed, {second} took over in {takeover:.1f}s "
              f"(lease {LEASE_TTL_S}s); notifications {_firing(receiver)}")
    finally:
        zk.stop()
        zk.close()
        for name in names:
            cluster.stop(name, signal.SIGTERM)
        receiver.down()
