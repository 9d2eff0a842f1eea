"""Host figures through psutil: CPU and memory utilization, filesystem, disk and network IO."""

from __future__ import annotations


def read(psutil, path: str = "/") -> dict:
    out: dict = {"cpu.utilization": psutil.cpu_percent(interval=None) / 100.0}
    vm = psutil.virtual_memory()
    out.update({"memory.used": vm.used, "memory.available": vm.available, "memory.total": vm.total,
                "memory.utilization": vm.percent / 100.0})
    try:
        du = psutil.disk_usage(path)
        out["fs.used"], out["fs.free"] = du.used, du.free
    except OSError:
        pass
    io = psutil.disk_io_counters()
    if io is not None:
        out["disk.read"], out["disk.write"] = io.read_bytes, io.write_bytes
    net = psutil.net_io_counters()
    if net is not None:
        out["net.rx"], out["net.tx"] = net.bytes_recv, net.bytes_sent
    la = psutil.getloadavg()
    out["load.1m"] = la[0]
    return out


SPEC = [
    ("gauge", "system.cpu.utilization", "1", "Host CPU utilization since the previous reading.",
     [("cpu.utilization", {})]),
    ("updown", "system.memory.usage", "By", "Host memory by state.",
     [("memory.used", {"system.memory.state": "used"}), ("memory.available", {"system.memory.state": "free"})]),
    ("updown", "system.memory.limit", "By", "Total host memory.", [("memory.total", {})]),
    ("gauge", "system.memory.utilization", "1", "Used share of host memory.", [("memory.utilization", {})]),
    ("updown", "system.filesystem.usage", "By", "Root filesystem usage by state.",
     [("fs.used", {"system.filesystem.state": "used"}), ("fs.free", {"system.filesystem.state": "free"})]),
    ("counter", "system.disk.io", "By", "Host disk bytes.",
     [("disk.read", {"disk.io.direction": "read"}), ("disk.write", {"disk.io.direction": "write"})]),
    ("counter", "system.network.io", "By", "Host network bytes.",
     [("net.rx", {"network.io.direction": "receive"}), ("net.tx", {"network.io.direction": "transmit"})]),
    ("gauge", "tracehouse.system.load.1m", "1", "One-minute load average.", [("load.1m", {})]),
]


def register(meter) -> list:
    import psutil

    from tracehouse.agent.metrics_observe import CachedReading
    from tracehouse.agent.metrics_observe import register as reg

    psutil.cpu_percent(interval=None)  # prime the utilization baseline
    return reg(meter, CachedReading("host", lambda: read(psutil)), SPEC)
