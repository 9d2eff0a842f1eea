#!/usr/bin/env python3
"""A tracehouse cluster on one machine, by hand: ZooKeeper, 2 shards x 2 replicas of ClickHouse,
two collectors behind haproxy, a dashboard and (optionally) two alert evaluators sharing a lease.

Everything listens on free loopback ports and lives under one directory; every process is started
by this script, recorded with its PID in DIR/state.json, and stopped by that PID.

    python3 deploy/cluster/loopback.py start --dir /tmp/th-cluster      # prints the URLs
    python3 deploy/cluster/loopback.py status --dir /tmp/th-cluster
    python3 deploy/cluster/loopback.py stop --dir /tmp/th-cluster

Needs Debian's ``zookeeper`` (3.8), ``clickhouse-server`` (18.16 or later), ``haproxy`` and Java,
and a ``tracehouse`` command (``--tracehouse PATH``; default: next to this Python, then PATH).
Standard library only, so it also runs outside tracehouse's virtualenv. The tests start the same
cluster through :class:`LoopbackCluster` (testkit/cluster.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The jars Debian's zookeeper package installs that a standalone server needs (its zkServer.sh reads
# the package's own config directory, so the server is started here with its own zoo.cfg instead).
ZK_JARS = ("zookeeper", "zookeeper-jute", "slf4j-api", "slf4j-simple", "netty-buffer", "netty-codec",
           "netty-common", "netty-handler", "netty-resolver", "netty-transport", "netty-transport-native-epoll",
           "netty-transport-native-unix-common", "metrics-core", "snappy-java", "commons-cli", "commons-io")
JAVA_DIR = "/usr/share/java"


def _load_ports():
    """tracehouse/ports.py, by path (standard library only), so this script runs without tracehouse installed."""
    path = Path(__file__).resolve().parents[2] / "tracehouse" / "ports.py"
    spec = importlib.util.spec_from_file_location("tracehouse_ports", path)
    if spec is None or spec.loader is None or not path.exists():
        from tracehouse import ports  # a copy of this script outside the repository
        return ports
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


free_port = _load_ports().free_port  # outside the ephemeral range: no client connection takes it first


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def zookeeper_serving(port: int) -> bool:
    """ZooKeeper answers its ``srvr`` command with its mode (its port opens before it serves)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"srvr")
            return b"Mode:" in s.recv(4096)
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def last_lines(p: Proc, count: int = 8) -> str:
    """The end of a process's logs, for the error that says it exited."""
    out = []
    for path in (p.log, p.errlog):
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = f.read().decode("utf-8", "replace").splitlines()[-count:]
        except OSError:
            continue
        out += [f"{os.path.basename(path)}: {line}" for line in lines]
    return "\n".join(out)


@dataclass
class Proc:
    """One process of the cluster: how to start it, and how to tell that it is up."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_port: int = 0  # TCP port that accepts once it is up
    ready_url: str = ""  # or an HTTP URL answering 200
    ready_zk: int = 0  # or a ZooKeeper client port that serves
    pid: int = 0
    log: str = ""
    errlog: str = ""  # where the process writes its own errors, when not to ``log``


class LoopbackCluster:
    """The cluster under ``directory``; ``state.json`` there records every process and port."""

    def __init__(self, directory: str):
        self.dir = os.path.abspath(directory)
        self.state_path = os.path.join(self.dir, "state.json")
        self.procs: dict[str, Proc] = {}
        self.info: dict = {}
        self._children: dict[int, subprocess.Popen] = {}
        if os.path.exists(self.state_path):
            with open(self.state_path, encoding="utf-8") as f:
                doc = json.load(f)
            self.info = doc["info"]
            self.procs = {p["name"]: Proc(**p) for p in doc["procs"]}

    # -- configuration ------------------------------------------------------------------------
    def configure(self, shards: int = 2, replicas: int = 2, collectors: int = 2, cluster: str = "c1",
                  database: str = "tracehouse", tracehouse: list[str] | None = None, dashboard: bool = True,
                  alert_rules: str = "", alert_evaluators: int = 2, lease_ttl: float = 6.0,
                  buffer_max_bytes: int = 0) -> None:
        """Write every configuration file and the process table (nothing starts yet)."""
        os.makedirs(self.dir, exist_ok=True)
        th = tracehouse or default_tracehouse()
        zk_port = free_port()
        self._zookeeper(zk_port)
        nodes = []
        for s in range(1, shards + 1):
            for r in range(1, replicas + 1):
                nodes.append({"name": f"ch-s{s}-r{r}", "shard": s, "replica": r, "tcp": free_port(),
                              "http": free_port(), "interserver": free_port()})
        for n in nodes:
            self._clickhouse(n, nodes, cluster, zk_port)
        entry = nodes[0]
        alt = ",".join(f"127.0.0.1:{n['tcp']}" for n in nodes[1:])
        storage = f"clickhouse://default:@127.0.0.1:{entry['tcp']}/{database}?cluster={cluster}&alt_hosts={alt}"
        env_common = {"TRACEHOUSE_LOG_LEVEL": "info", "TRACEHOUSE_ZOOKEEPER": f"127.0.0.1:{zk_port}",
                      "TRACEHOUSE_LEASE_TTL": str(lease_ttl)}
        collector_ports = []
        for i in range(1, collectors + 1):
            port = free_port()
            collector_ports.append(port)
            d = os.path.join(self.dir, f"collector-{i}")
            os.makedirs(d, exist_ok=True)
            env = dict(env_common, TRACEHOUSE_BUFFER_DIR=os.path.join(d, "buffer"))
            if buffer_max_bytes:
                env["TRACEHOUSE_BUFFER_MAX_BYTES"] = str(buffer_max_bytes)
            # OTLP/HTTP goes through haproxy; each collector's OTLP/gRPC port is its own
            self._add(Proc(f"collector-{i}", [*th, "collector", "--storage", storage, "--otlp-port", str(port),
                                               "--otlp-grpc-port", str(free_port())],
                           env=env, ready_url=f"http://127.0.0.1:{port}/healthz"))
        lb_port = free_port()
        self._haproxy(lb_port, collector_ports)
        dash_port = 0
        if dashboard:
            dash_port = free_port()
            self._add(Proc("dashboard", [*th, "dashboard", "--storage", storage, "--http-port", str(dash_port)],
                           env=dict(env_common), ready_url=f"http://127.0.0.1:{dash_port}/healthz"))
        if alert_rules:
            for i in range(1, alert_evaluators + 1):
                port = free_port()  # its /metrics, /healthz, /readyz
                self._add(Proc(f"alerts-{i}", [*th, "alerts", "run", "--storage", storage, "--rules",
                                                os.path.abspath(alert_rules), "--http-port", str(port)],
                               env=dict(env_common), ready_url=f"http://127.0.0.1:{port}/healthz"))
        self.info = {
            "cluster": cluster, "database": database, "storage_url": storage, "zookeeper": f"127.0.0.1:{zk_port}",
            "otlp_url": f"http://127.0.0.1:{lb_port}", "dashboard_url": f"http://127.0.0.1:{dash_port}" if dash_port else "",
            "nodes": nodes, "collector_ports": collector_ports, "tracehouse": th,
        }
        self.save()

    def add_process(self, name: str, argv: list[str], env: dict[str, str] | None = None, ready_url: str = "") -> Proc:
        """Another process of the cluster (an alert evaluator, say), started with ``start(name)``."""
        self._add(Proc(name, argv, env=dict(env or {}), ready_url=ready_url))
        self.save()
        return self.procs[name]

    def _add(self, p: Proc) -> None:
        p.log = os.path.join(self.dir, "logs", p.name + ".log")
        self.procs[p.name] = p

    def _zookeeper(self, port: int) -> None:
        d = os.path.join(self.dir, "zookeeper")
        os.makedirs(os.path.join(d, "data"), exist_ok=True)
        with open(os.path.join(d, "zoo.cfg"), "w", encoding="utf-8") as f:
            f.write(f"tickTime=500\ndataDir={d}/data\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
                    "admin.enableServer=false\nmaxSessionTimeout=30000\nmaxClientCnxns=0\n"
                    "4lw.commands.whitelist=srvr,ruok\n")
        missing = [j for j in ZK_JARS if not os.path.exists(os.path.join(JAVA_DIR, j + ".jar"))]
        if missing:
            raise SystemExit(f"missing jars in {JAVA_DIR}: {missing} (apt-get install zookeeper)")
        cp = ":".join(os.path.join(JAVA_DIR, j + ".jar") for j in ZK_JARS)
        self._add(Proc("zookeeper", ["java", "-Xmx256m", "-XX:+UseSerialGC", "-cp", cp,
                                     "org.apache.zookeeper.server.quorum.QuorumPeerMain", os.path.join(d, "zoo.cfg")],
                       ready_zk=port))

    def _clickhouse(self, n: dict, nodes: list[dict], cluster: str, zk_port: int) -> None:
        d = os.path.join(self.dir, n["name"])
        for sub in ("data", "tmp", "user_files", "format_schemas"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        shards: dict[int, list[dict]] = {}
        for m in nodes:
            shards.setdefault(m["shard"], []).append(m)
        remote = "".join(
            "<shard><internal_replication>true</internal_replication>"
            + "".join(f"<replica><host>127.0.0.1</host><port>{m['tcp']}</port></replica>" for m in members)
            + "</shard>" for _, members in sorted(shards.items()))
        config = f"""<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/server.err.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{n['tcp']}</tcp_port>
  <http_port>{n['http']}</http_port>
  <interserver_http_port>{n['interserver']}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <timezone>UTC</timezone>
  <zookeeper>
    <node><host>127.0.0.1</host><port>{zk_port}</port></node>
    <session_timeout_ms>10000</session_timeout_ms>
    <operation_timeout_ms>5000</operation_timeout_ms>
  </zookeeper>
  <macros><shard>{n['shard']:02d}</shard><replica>s{n['shard']}r{n['replica']}</replica></macros>
  <remote_servers><{cluster}>{remote}</{cluster}></remote_servers>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
"""
        users = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"""
        with open(os.path.join(d, "config.xml"), "w", encoding="utf-8") as f:
            f.write(config)
        with open(os.path.join(d, "users.xml"), "w", encoding="utf-8") as f:
            f.write(users)
        exe = shutil.which("clickhouse-server") or "clickhouse-server"
        # Up means answering with a ZooKeeper session: 18.16 crashes on ON CLUSTER DDL sent before it
        # has one (seen: a segfault in zkutil::ZooKeeper::createImpl right after start).
        zk_query = urllib.parse.quote("SELECT count() FROM system.zookeeper WHERE path = '/'")
        self._add(Proc(n["name"], [exe, f"--config-file={d}/config.xml"],
                       ready_url=f"http://127.0.0.1:{n['http']}/?query={zk_query}", errlog=f"{d}/server.err.log"))

    def _haproxy(self, port: int, backends: list[int]) -> None:
        d = os.path.join(self.dir, "haproxy")
        os.makedirs(d, exist_ok=True)
        servers = "\n".join(f"  server collector-{i} 127.0.0.1:{p} check inter 500ms fall 2 rise 1"
                            for i, p in enumerate(backends, 1))
        # Plain round robin over the collectors, health-checked on /healthz (a collector whose store is
        # down still buffers, so readiness is not a reason to skip it). A collector that dies mid-request
        # gives the client a 502/503: OTLP clients retry those, and the retry goes to a live collector.
        cfg = f"""global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 2
  option redispatch
frontend otlp
  bind 127.0.0.1:{port}
  default_backend collectors
backend collectors
  balance roundrobin
  option httpchk
  http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host 127.0.0.1
{servers}
"""
        with open(os.path.join(d, "haproxy.cfg"), "w", encoding="utf-8") as f:
            f.write(cfg)
        exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self._add(Proc("haproxy", [exe, "-db", "-f", os.path.join(d, "haproxy.cfg")], ready_port=port))

    def save(self) -> None:
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"info": self.info, "procs": [asdict(p) for p in self.procs.values()]}, f, indent=1)
        os.replace(tmp, self.state_path)

    # -- processes ----------------------------------------------------------------------------
    def start(self, name: str, wait: float = 90.0) -> Proc:
        """Start one process (again), wait until it answers, record its PID."""
        p = self.procs[name]
        if p.pid and alive(p.pid):
            return p
        os.makedirs(os.path.dirname(p.log), exist_ok=True)
        env = dict(os.environ, **p.env)
        with open(p.log, "ab") as out:
            child = subprocess.Popen(p.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=self.dir, start_new_session=True)
        self._children[child.pid] = child
        p.pid = child.pid
        self.save()
        if not (p.ready_port or p.ready_url or p.ready_zk):
            return p
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError(f"{name} exited with {child.returncode}; see {p.log}\n{last_lines(p)}")
            if ((p.ready_port and port_open(p.ready_port)) or (p.ready_url and http_ok(p.ready_url))
                    or (p.ready_zk and zookeeper_serving(p.ready_zk))):
                return p
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not come up within {wait:.0f}s; see {p.log}")

    def send_signal(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs[name]
        if p.pid:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop one process by its PID (SIGKILL after ``timeout``) and wait until it is gone."""
        p = self.procs[name]
        if not p.pid:
            return
        self.send_signal(name, sig)
        deadline = time.monotonic() + timeout
        while alive(p.pid, self._children.get(p.pid)):
            if time.monotonic() > deadline:
                self.send_signal(name, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.05)
        self._children.pop(p.pid, None)
        p.pid = 0
        self.save()

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash would, and wait until it is gone."""
        self.stop(name, signal.SIGKILL)

    def running(self, name: str) -> bool:
        p = self.procs[name]
        return bool(p.pid) and alive(p.pid, self._children.get(p.pid))

    def migrate(self) -> None:
        th = self.info["tracehouse"]
        out = subprocess.run([*th, "migrate", "--storage", self.info["storage_url"]], capture_output=True,
                             text=True, timeout=300, cwd=self.dir)
        if out.returncode != 0:
            raise RuntimeError(f"tracehouse migrate failed: {out.stderr[-3000:]}")

    def start_all(self) -> None:
        order = ["zookeeper"] + [n["name"] for n in self.info["nodes"]]
        for name in order:
            self.start(name)
        self.migrate()
        for name in self.procs:
            if name not in order:
                self.start(name)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def nodes(self, shard: int | None = None) -> list[dict]:
        return [n for n in self.info["nodes"] if shard is None or n["shard"] == shard]


def alive(pid: int, child: subprocess.Popen | None = None) -> bool:
    if child is not None:
        return child.poll() is None
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie we cannot reap (started by another invocation) is gone for our purposes
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def default_tracehouse() -> list[str]:
    here = os.path.join(os.path.dirname(sys.executable), "tracehouse")
    if os.path.exists(here):
        return [here]
    found = shutil.which("tracehouse")
    if found:
        return [found]
    raise SystemExit("no tracehouse command found: pass --tracehouse /path/to/.venv/bin/tracehouse")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="loopback.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["start", "stop", "status"])
    ap.add_argument("--dir", required=True, help="working directory (configs, data, logs, state.json)")
    ap.add_argument("--tracehouse", help="the tracehouse command (default: next to this Python, then PATH)")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--collectors", type=int, default=2)
    ap.add_argument("--cluster", default="c1")
    ap.add_argument("--rules", default="", help="alert rules file: also start two alert evaluators sharing a lease")
    ns = ap.parse_args(argv)
    c = LoopbackCluster(ns.dir)
    if ns.action == "start":
        if c.procs and any(c.running(n) for n in c.procs):
            print(f"already running under {c.dir}; stop it first", file=sys.stderr)
            return 1
        if not c.procs:
            c.configure(ns.shards, ns.replicas, ns.collectors, ns.cluster,
                        tracehouse=[ns.tracehouse] if ns.tracehouse else None, alert_rules=ns.rules)
        try:
            c.start_all()
        except (RuntimeError, OSError) as e:
            print(f"start failed: {e}; stopping what started", file=sys.stderr)
            c.stop_all()
            return 1
        print(f"storage:   {c.info['storage_url']}")
        print(f"OTLP:      {c.info['otlp_url']}/v1/traces  (haproxy → {len(c.info['collector_ports'])} collectors)")
        if c.info["dashboard_url"]:
            print(f"dashboard: {c.info['dashboard_url']}/")
        print(f"zookeeper: {c.info['zookeeper']}")
        print(f"stop with: {sys.executable} {os.path.abspath(__file__)} stop --dir {c.dir}")
        return 0
    if ns.action == "stop":
        c.stop_all()
        print(f"stopped every process under {c.dir}")
        return 0
    for name, p in c.procs.items():
        print(f"{name:14s} pid {p.pid or '-':>7}  {'running' if c.running(name) else 'stopped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
