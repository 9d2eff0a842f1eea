"""Container figures from the cgroup filesystem, v2 (unified) and v1: this process's own cgroup.

:func:`own_dirs` finds the directory of this process's cgroup for each v1 controller and for
the unified (v2) hierarchy, from ``/proc/self/cgroup`` and the cgroup mounts in
``/proc/self/mountinfo`` (a path is taken relative to the root of its mount, so a container
that sees only its own subtree reads the right files). :func:`read_own` reads them; a hybrid
machine (v1 controllers plus a v2 hierarchy) gives v2 figures overridden by v1 ones.
``read(root)`` reads an explicit tree (``TRACEHOUSE_CGROUP_ROOT``, and fixture trees in tests).
Missing files are simply absent from the result.
"""

from __future__ import annotations

import os

USER_HZ_NS = 1e9
MAX_READ = 4 << 20  # the longest file read (a node's mountinfo with thousands of mounts is < 1 MiB)


def _text(path: str) -> str | None:
    """A file's text, at most ``MAX_READ`` bytes of it (a root pointing at an endless file such as
    ``/dev/zero`` would be read into memory for ever); undecodable bytes replaced."""
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_READ).decode("utf-8", "replace").strip()
    except OSError:
        return None


def _number(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _int(path: str) -> int | None:
    t = _text(path)
    if t is None or t == "max":
        return None
    try:
        return int(t.split()[0])
    except (ValueError, IndexError):
        return None


def _kv(path: str) -> dict[str, int]:
    out = {}
    for line in (_text(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def _psi(path: str) -> dict[str, float]:
    """``some avg10=0.00 avg60=0.00 avg300=0.00 total=123`` → {"some": total_seconds, ...}."""
    out = {}
    for line in (_text(path) or "").splitlines():
        kind, *fields = line.split() or ("",)
        for f in fields:
            if f.startswith("total=") and (n := _number(f[6:])) is not None:
                out[kind] = n / 1e6
    return out


def version(root: str) -> int | None:
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return 2
    if os.path.isdir(os.path.join(root, "cpuacct")) or os.path.isdir(os.path.join(root, "cpu,cpuacct")) \
            or os.path.isdir(os.path.join(root, "memory")):
        return 1
    return None


def read(root: str = "/sys/fs/cgroup") -> dict[str, float]:
    v = version(root)
    if v == 2:
        return _read_v2(root)
    if v == 1:
        return _read_v1(root)
    return {}


#: cpu.stat keys (v2) and cpuacct.stat / cpu.stat keys (v1): (metric, divisor to seconds or None)
_CPU_V2 = {"usage_usec": ("cpu.time", 1e6), "user_usec": ("cpu.time.user", 1e6),
           "system_usec": ("cpu.time.system", 1e6), "nr_throttled": ("cpu.throttled.periods", None),
           "throttled_usec": ("cpu.throttled.time", 1e6)}
_THROTTLE_V1 = {"nr_throttled": ("cpu.throttled.periods", None), "throttled_time": ("cpu.throttled.time", 1e9)}
_IO_V2 = {"rbytes": "disk.io.read", "wbytes": "disk.io.write", "rios": "disk.operations.read",
          "wios": "disk.operations.write"}


def _pick(out: dict[str, float], values: dict[str, int], table: dict[str, tuple[str, float | None]]) -> None:
    """``out[metric] = values[key] / divisor`` for each key of ``table`` that ``values`` has."""
    for key, (metric, divisor) in table.items():
        if key in values:
            out[metric] = values[key] / divisor if divisor else values[key]


def _memory(out: dict[str, float], usage: int | None, inactive: int, limit: int | None, oom: dict[str, int]) -> None:
    if usage is not None:
        out["memory.usage"] = usage
        out["memory.working_set"] = max(0, usage - inactive)
    if limit is not None:
        out["memory.limit"] = limit
    if "oom_kill" in oom:
        out["memory.oom_kills"] = oom["oom_kill"]


def _read_v2(root: str) -> dict[str, float]:
    out: dict[str, float] = {}
    _pick(out, _kv(os.path.join(root, "cpu.stat")), _CPU_V2)
    quota = (_text(os.path.join(root, "cpu.max")) or "").split()
    if len(quota) == 2 and quota[0] != "max":
        try:
            out["cpu.limit"] = int(quota[0]) / int(quota[1])
        except (ValueError, ZeroDivisionError):
            pass
    usage = _int(os.path.join(root, "memory.current"))
    inactive = _kv(os.path.join(root, "memory.stat")).get("inactive_file", 0) if usage is not None else 0
    _memory(out, usage, inactive, _int(os.path.join(root, "memory.max")), _kv(os.path.join(root, "memory.events")))
    out.update(_io_v2(_text(os.path.join(root, "io.stat")) or ""))
    for res in ("cpu", "memory", "io"):
        for kind, total in _psi(os.path.join(root, f"{res}.pressure")).items():
            out[f"pressure.{res}.{kind}"] = total
    return out


def _io_v2(text: str) -> dict[str, float]:
    """io.stat's bytes and operations summed over devices; {} when it has none."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        for f in line.split()[1:]:
            k, _, val = f.partition("=")
            n = _number(val)
            if k in _IO_V2 and n is not None:
                sums[k] = sums.get(k, 0) + n
    return {metric: sums.get(k, 0) for k, metric in _IO_V2.items()} if sums else {}


def _v1_dir(root: str, *names: str) -> str | None:
    for n in names:
        p = os.path.join(root, n)
        if os.path.isdir(p):
            return p
    return None


def _read_v1(root: str) -> dict[str, float]:
    return _read_v1_dirs(_v1_dir(root, "cpuacct", "cpu,cpuacct"), _v1_dir(root, "cpu", "cpu,cpuacct"),
                         _v1_dir(root, "memory"), _v1_dir(root, "blkio"))


def _read_v1_dirs(acct: str | None, cpu: str | None, mem: str | None, blk: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    if acct:
        usage = _int(os.path.join(acct, "cpuacct.usage"))
        if usage is not None:
            out["cpu.time"] = usage / 1e9
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        _pick(out, _kv(os.path.join(acct, "cpuacct.stat")),
              {"user": ("cpu.time.user", ticks), "system": ("cpu.time.system", ticks)})
    if cpu:
        quota = _int(os.path.join(cpu, "cpu.cfs_quota_us"))
        period = _int(os.path.join(cpu, "cpu.cfs_period_us"))
        if quota is not None and quota > 0 and period:
            out["cpu.limit"] = quota / period
        _pick(out, _kv(os.path.join(cpu, "cpu.stat")), _THROTTLE_V1)
    if mem:
        usage = _int(os.path.join(mem, "memory.usage_in_bytes"))
        st = _kv(os.path.join(mem, "memory.stat")) if usage is not None else {}
        limit = _int(os.path.join(mem, "memory.limit_in_bytes"))
        _memory(out, usage, st.get("total_inactive_file", st.get("inactive_file", 0)),
                limit if limit is not None and limit < 1 << 62 else None, _kv(os.path.join(mem, "memory.oom_control")))
    if blk:
        out.update(_blkio_v1(blk))
    return out


def _blkio_v1(blk: str) -> dict[str, float]:
    """The throttle files' bytes and operations summed over devices; {} when they have none."""
    totals = {"Read": 0, "Write": 0}
    ops = {"Read": 0, "Write": 0}
    found = False
    for fname, acc in (("blkio.throttle.io_service_bytes", totals), ("blkio.throttle.io_serviced", ops)):
        for line in (_text(os.path.join(blk, fname)) or "").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in acc and (n := _number(parts[2])) is not None:
                acc[parts[1]] += n
                found = True
    if not found:
        return {}
    return {"disk.io.read": totals["Read"], "disk.io.write": totals["Write"],
            "disk.operations.read": ops["Read"], "disk.operations.write": ops["Write"]}


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root inside the hierarchy, fstype, controllers) of each cgroup mount."""
    out = []
    for line in (_text(mountinfo) or "").splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        def unescape(p):
            return (p.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
                            .replace("\\134", "\\"))
        out.append((unescape(fields[4]), unescape(fields[3]), tail[0], set(tail[2].split(","))))
    return out


def own_dirs(proc_self: str = "/proc/self") -> dict[str, str]:
    """{"cpu"|"cpuacct"|"memory"|"blkio"|"v2": directory of this process's cgroup}."""
    wanted = ("cpu", "cpuacct", "memory", "blkio")
    mounts = _mounts(os.path.join(proc_self, "mountinfo"))
    out: dict[str, str] = {}
    for line in (_text(os.path.join(proc_self, "cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        names = set(controllers.split(",")) if controllers else set()
        for point, mroot, fstype, opts in mounts:
            if fstype == "cgroup2" and controllers == "":
                key = "v2"
            elif fstype == "cgroup" and names & opts & set(wanted):
                key = None
            else:
                continue
            rel = os.path.relpath(path, mroot) if path == mroot or path.startswith(mroot.rstrip("/") + "/") else "."
            d = os.path.normpath(os.path.join(point, rel))
            if not os.path.isdir(d):
                d = point  # a namespaced view whose path is not under the mount: the mount is ours
            if key == "v2":
                out.setdefault("v2", d)
            else:
                for c in names & opts & set(wanted):
                    out.setdefault(c, d)
    return out


def read_own(proc_self: str = "/proc/self") -> dict[str, float]:
    """This process's cgroup figures (v2 first, v1 controllers over them on a hybrid machine)."""
    dirs = own_dirs(proc_self)
    out: dict[str, float] = {}
    if "v2" in dirs:
        out.update(_read_v2(dirs["v2"]))
    if any(c in dirs for c in ("cpu", "cpuacct", "memory", "blkio")):
        out.update(_read_v1_dirs(dirs.get("cpuacct"), dirs.get("cpu"), dirs.get("memory"), dirs.get("blkio")))
    return out


def _dir(prefix: str) -> list[tuple[str, dict]]:
    return [(f"{prefix}.read", {"disk.io.direction": "read"}), (f"{prefix}.write", {"disk.io.direction": "write"})]


SPEC = [
    ("counter", "container.cpu.time", "s", "CPU time of the container's cgroup.",
     [("cpu.time.user", {"cpu.mode": "user"}), ("cpu.time.system", {"cpu.mode": "system"})]),
    ("counter", "tracehouse.container.cpu.usage_time", "s", "Total CPU time of the container's cgroup.",
     [("cpu.time", {})]),
    ("updown", "tracehouse.container.cpu.limit", "{cpu}", "CPU quota in cores.", [("cpu.limit", {})]),
    ("counter", "tracehouse.container.cpu.throttled.periods", "{period}", "Throttled CFS periods.",
     [("cpu.throttled.periods", {})]),
    ("counter", "tracehouse.container.cpu.throttled.time", "s", "Time spent throttled.",
     [("cpu.throttled.time", {})]),
    ("updown", "container.memory.usage", "By", "Memory charged to the cgroup.", [("memory.usage", {})]),
    ("updown", "container.memory.working_set", "By", "Usage minus inactive file cache.",
     [("memory.working_set", {})]),
    ("updown", "tracehouse.container.memory.limit", "By", "Memory limit of the cgroup.", [("memory.limit", {})]),
    ("counter", "tracehouse.container.memory.oom_kills", "{kill}", "OOM kills in the cgroup.",
     [("memory.oom_kills", {})]),
    ("counter", "container.disk.io", "By", "Bytes read and written by the cgroup.", _dir("disk.io")),
    ("counter", "tracehouse.container.disk.operations", "{operation}", "IO operations of the cgroup.",
     _dir("disk.operations")),
    ("counter", "tracehouse.container.pressure.stall.time", "s", "PSI stall time (some/full).",
     [(f"pressure.{r}.{k}", {"pressure.resource": r, "pressure.kind": k})
      for r in ("cpu", "memory", "io") for k in ("some", "full")]),
]


DEFAULT_ROOT = "/sys/fs/cgroup"


def register(meter, root: str = DEFAULT_ROOT) -> list:
    """Container instruments on ``meter`` for this process's own cgroup, or for the tree at
    ``root`` when another root is configured; nothing when there is no cgroup to read."""
    from tracehouse.agent.metrics_observe import CachedReading
    from tracehouse.agent.metrics_observe import register as reg

    if root == DEFAULT_ROOT and own_dirs():
        return reg(meter, CachedReading("container", read_own), SPEC)
    if version(root) is None:
        return []
    return reg(meter, CachedReading("container", lambda: read(root)), SPEC)
