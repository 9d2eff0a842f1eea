import os

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tracehouse.agent import metrics_cgroup


def write(root, files):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_cgroup_v2_tree(tmp_path):
    write(tmp_path, {
        "cgroup.controllers": "cpu io memory pids\n",
        "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 10\n"
                    "nr_throttled 3\nthrottled_usec 150000\n",
        "cpu.max": "150000 100000\n",
        "memory.current": "104857600\n",
        "memory.stat": "anon 1\ninactive_file 4857600\n",
        "memory.max": "209715200\n",
        "memory.events": "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
        "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=2 wios=3 dbytes=0 dios=0\n"
                   "8:16 rbytes=4096 wbytes=0 rios=1 wios=0\n",
        "cpu.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=2000000\n"
                        "full avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\n",
    })
    v = metrics_cgroup.read(str(tmp_path))
    assert v["cpu.time"] == 2.5 and v["cpu.time.user"] == 2.0 and v["cpu.time.system"] == 0.5
    assert v["cpu.throttled.periods"] == 3 and v["cpu.throttled.time"] == 0.15 and v["cpu.limit"] == 1.5
    assert v["memory.usage"] == 104857600 and v["memory.working_set"] == 100000000
    assert v["memory.limit"] == 209715200 and v["memory.oom_kills"] == 1
    assert (v["disk.io.read"], v["disk.io.write"], v["disk.operations.read"], v["disk.operations.write"]) == \
        (8192, 8192, 3, 3)
    assert v["pressure.cpu.some"] == 2.0 and v["pressure.cpu.full"] == 1.0
    write(tmp_path, {"memory.max": "max\n", "cpu.max": "max 100000\n"})
    v = metrics_cgroup.read(str(tmp_path))
    assert "memory.limit" not in v and "cpu.limit" not in v


def test_cgroup_v1_tree(tmp_path):
    write(tmp_path, {
        "cpuacct/cpuacct.usage": "3000000000\n",
        "cpuacct/cpuacct.stat": f"user {2 * os.sysconf('SC_CLK_TCK')}\nsystem {os.sysconf('SC_CLK_TCK')}\n",
        "cpu/cpu.cfs_quota_us": "50000\n",
        "cpu/cpu.cfs_period_us": "100000\n",
        "cpu/cpu.stat": "nr_periods 20\nnr_throttled 4\nthrottled_time 2000000000\n",
        "memory/memory.usage_in_bytes": "5000\n",
        "memory/memory.stat": "total_inactive_file 1000\n",
        "memory/memory.limit_in_bytes": "9223372036854771712\n",
        "memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "blkio/blkio.throttle.io_service_bytes": "8:0 Read 100\n8:0 Write 200\n8:0 Total 300\nTotal 300\n",
        "blkio/blkio.throttle.io_serviced": "8:0 Read 1\n8:0 Write 2\n",
    })
    v = metrics_cgroup.read(str(tmp_path))
    assert metrics_cgroup.version(str(tmp_path)) == 1
    assert v["cpu.time"] == 3.0 and v["cpu.time.user"] == 2.0 and v["cpu.time.system"] == 1.0
    assert v["cpu.limit"] == 0.5 and v["cpu.throttled.periods"] == 4 and v["cpu.throttled.time"] == 2.0
    assert v["memory.usage"] == 5000 and v["memory.working_set"] == 4000 and "memory.limit" not in v
    assert v["memory.oom_kills"] == 2
    assert (v["disk.io.read"], v["disk.io.write"], v["disk.operations.read"], v["disk.operations.write"]) == \
        (100, 200, 1, 2)


def test_instruments_from_a_fake_tree_and_the_real_machine(tmp_path):
    write(tmp_path, {"cgroup.controllers": "cpu\n", "cpu.stat": "usage_usec 1000000\nuser_usec 600000\n"
                     "system_usec 400000\n", "memory.current": "2048\n"})
    reader = InMemoryMetricReader()
    metrics_cgroup.register(MeterProvider(metric_readers=[reader]).get_meter("t"), str(tmp_path))
    data = reader.get_metrics_data()
    points = {m.name: m.data.data_points for rm in data.resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics}
    cpu = {p.attributes["cpu.mode"]: p.value for p in points["container.cpu.time"]}
    assert cpu == {"user": 0.6, "system": 0.4}
    assert points["container.memory.usage"][0].value == 2048

    real = metrics_cgroup.read("/sys/fs/cgroup")
    assert metrics_cgroup.version("/sys/fs/cgroup") in (1, 2)
    assert real["cpu.time"] > 0 and real["memory.usage"] > 0
    assert metrics_cgroup.register(MeterProvider().get_meter("t"), str(tmp_path / "nothing")) == []


def test_garbage_in_one_cgroup_file_loses_only_that_figure(tmp_path):
    # A line the parser did not expect (a blank line in a pressure file, a non-number, bytes that
    # are not UTF-8) raised out of read(): the reading was swallowed whole, so every container
    # metric vanished for as long as the file stayed so, not only the unreadable figure.
    write(tmp_path, {
        "cgroup.controllers": "cpu io memory\n",
        "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
        "memory.current": "104857600\n",
        "io.stat": "8:0 rbytes=4096 wbytes=junk rios=2 wios=3\n8:16 rbytes=?\n",
        "cpu.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=2000000\n\n"
                        "full avg10=0.00 avg60=0.00 avg300=0.00 total=n/a\n",
        "memory.pressure": "garbage\n",
    })
    (tmp_path / "memory.events").write_bytes(b"oom_kill 1\n\xff\xfe oom 2\n")
    v = metrics_cgroup.read(str(tmp_path))
    assert v["cpu.time"] == 2.5 and v["memory.usage"] == 104857600 and v["memory.oom_kills"] == 1
    assert v["pressure.cpu.some"] == 2.0 and "pressure.cpu.full" not in v
    assert (v["disk.io.read"], v["disk.io.write"], v["disk.operations.read"]) == (4096, 0, 2)

    write(tmp_path / "v1", {
        "memory/memory.usage_in_bytes": "5000\n",
        "blkio/blkio.throttle.io_service_bytes": "8:0 Read 100\n8:0 Write lots\n",
    })
    v = metrics_cgroup.read(str(tmp_path / "v1"))
    assert v["memory.usage"] == 5000 and v["disk.io.read"] == 100 and v["disk.io.write"] == 0
