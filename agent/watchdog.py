"""In-flight requests and the watchdog that notices slow ones (and a process over its memory).

The lean ASGI/WSGI middlewares register each request in :data:`INFLIGHT` — one dict insert on
the way in, one pop on the way out (≈ 0.1 µs each) — keyed by the request thread (WSGI) or the
scope (ASGI). The watchdog thread looks at the dict every ``interval`` seconds and calls
``on_slow(entry, elapsed_ms)`` once per request that has run longer than the threshold while
still in flight, and ``on_memory(rss)`` when the process RSS is above ``memory_bytes``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from tracehouse.agent import errors

__all__ = ["INFLIGHT", "Inflight", "Watchdog"]


class Inflight(NamedTuple):
    mono_ns: int  # time.monotonic_ns() when the request began (a wall clock step is no time in flight)
    span: object  # the SERVER span (trace and span ids for the link)
    thread_id: int
    task: object  # the asyncio task serving it (ASGI), else None
    method: str
    path: str


INFLIGHT: dict[object, Inflight] = {}


class Watchdog:
    def __init__(self, slow_ms: float, on_slow: Callable[[Inflight, float], None], *, interval: float = 0.2,
                 memory_bytes: int | None = None, on_memory: Callable[[int], None] | None = None,
                 memory_every: float = 1.0):
        self.slow_ns = int(slow_ms * 1e6) if slow_ms and slow_ms > 0 else None  # None: slow checks off
        self.on_slow = on_slow
        self.interval = interval
        self.memory_bytes = memory_bytes
        self.on_memory = on_memory
        self.memory_every = memory_every
        self._reported: set[tuple[object, int]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ident: int | None = None

    def start(self) -> None:
        self._stop = threading.Event()
        self._reported = set()
        self._thread = threading.Thread(target=self._run, name="tracehouse-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def _run(self) -> None:
        self.ident = threading.get_ident()
        proc = None
        next_mem = 0.0
        while not self._stop.wait(self.interval):
            try:
                self.check(time.monotonic_ns())
                if self.memory_bytes and self.on_memory is not None and time.monotonic() >= next_mem:
                    next_mem = time.monotonic() + self.memory_every
                    if proc is None:
                        import psutil

                        proc = psutil.Process()
                    rss = proc.memory_info().rss
                    if rss > self.memory_bytes:
                        self.on_memory(rss)
            except Exception as exc:
                errors.swallow("snapshot watchdog", exc)

    def check(self, now_ns: int) -> int:
        """Report requests in flight longer than the threshold (once each); returns how many.
        ``now_ns`` is ``time.monotonic_ns()``: with the wall clock, a step forward made every request
        in flight "slow" (a snapshot each) and a step back hid the slow ones."""
        if self.slow_ns is None:
            return 0
        n = 0
        live = set()
        for key, entry in list(INFLIGHT.items()):
            tag = (key, entry.mono_ns)
            live.add(tag)
            if now_ns - entry.mono_ns >= self.slow_ns and tag not in self._reported:
                self._reported.add(tag)
                n += 1
                self.on_slow(entry, (now_ns - entry.mono_ns) / 1e6)
        self._reported &= live
        return n
