"""Process and Python runtime figures: CPU, memory, threads, fds, GC (with pause time), loop lag."""

from __future__ import annotations

import gc
import threading
import time

_GEN = [{"cpython.gc.generation": g} for g in range(3)]


class GcTimer:
    """Counts collections and their pause time through ``gc.callbacks``."""

    def __init__(self):
        self.pause = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase, info):
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            g = info.get("generation", 0)
            if 0 <= g < 3:
                self.pause[g] += time.perf_counter() - self._started
            self._started = 0.0

    def install(self):
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def uninstall(self):
        if self in gc.callbacks:
            gc.callbacks.remove(self)


class LoopLag:
    """Measures how late a 0.5 s timer fires on the running asyncio loop (the middleware arms it).

    ``lag`` is the worst lateness since the last :meth:`take`."""

    interval = 0.5

    def __init__(self):
        self.lag = None
        self._loop = None

    def ensure(self, loop) -> None:
        if self._loop is loop:
            return
        self._loop = loop
        self._schedule(loop)

    def take(self):
        lag, self.lag = self.lag, None
        return lag

    def _schedule(self, loop):
        expected = loop.time() + self.interval

        def tick():
            late = max(0.0, loop.time() - expected)
            self.lag = late if self.lag is None else max(self.lag, late)
            if self._loop is loop and not loop.is_closed():
                self._schedule(loop)

        loop.call_later(self.interval, tick)


LOOP_LAG = LoopLag()


def read(proc, gc_timer: GcTimer | None) -> dict:
    out: dict = {}
    with proc.oneshot():
        t = proc.cpu_times()
        out["cpu.user"], out["cpu.system"] = t.user, t.system
        m = proc.memory_info()
        out["memory.rss"], out["memory.vms"] = m.rss, m.vms
        out["threads"] = proc.num_threads()
        try:
            out["fds"] = proc.num_fds()
        except (AttributeError, OSError):
            pass
    out["python.threads"] = threading.active_count()
    for g, st in enumerate(gc.get_stats()):
        out[f"gc.collections.{g}"] = st["collections"]
        out[f"gc.collected.{g}"] = st["collected"]
        out[f"gc.uncollectable.{g}"] = st["uncollectable"]
        if gc_timer is not None:
            out[f"gc.pause.{g}"] = gc_timer.pause[g]
    lag = LOOP_LAG.take()
    if lag is not None:
        out["asyncio.lag"] = lag
    return out


def _gen(prefix: str):
    return [(f"{prefix}.{g}", _GEN[g]) for g in range(3)]


SPEC = [
    ("counter", "process.cpu.time", "s", "CPU time of this process.",
     [("cpu.user", {"cpu.mode": "user"}), ("cpu.system", {"cpu.mode": "system"})]),
    ("updown", "process.memory.usage", "By", "Resident memory of this process.", [("memory.rss", {})]),
    ("updown", "process.memory.virtual", "By", "Virtual memory of this process.", [("memory.vms", {})]),
    ("updown", "process.thread.count", "{thread}", "OS threads of this process.", [("threads", {})]),
    ("updown", "process.unix.file_descriptor.count", "{file_descriptor}", "Open file descriptors.",
     [("fds", {})]),
    ("counter", "cpython.gc.collections", "{collection}", "GC collections per generation.",
     _gen("gc.collections")),
    ("counter", "cpython.gc.collected_objects", "{object}", "Objects collected per generation.",
     _gen("gc.collected")),
    ("counter", "cpython.gc.uncollectable_objects", "{object}", "Uncollectable objects per generation.",
     _gen("gc.uncollectable")),
    ("counter", "tracehouse.cpython.gc.pause.time", "s", "Time spent in GC per generation.", _gen("gc.pause")),
    ("gauge", "tracehouse.asyncio.loop.lag", "s", "Lateness of a timer on the asyncio loop.",
     [("asyncio.lag", {})]),
]


def register(meter, gc_timer: GcTimer | None = None) -> list:
    import psutil

    from tracehouse.agent.metrics_observe import CachedReading
    from tracehouse.agent.metrics_observe import register as reg

    holder = {"pid": None, "proc": None}

    def read_now():
        import os

        if holder["pid"] != os.getpid():
            holder["pid"], holder["proc"] = os.getpid(), psutil.Process()
        return read(holder["proc"], gc_timer)

    return reg(meter, CachedReading("process", read_now), SPEC)
