"""Memory snapshots: RSS/USS, garbage-collector state and the top allocation sites.

Allocation sites come from ``tracemalloc``. When it is not already tracing, it is switched on
for a short window only (it slows allocation-heavy code about 3×): start, first snapshot, wait,
second snapshot, stop. The difference of the two (``compare_to(..., "lineno")``) is where memory
grew during the window, which is where a leak shows.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc

__all__ = ["capture_memory", "process_memory"]

_busy = threading.Lock()  # one tracemalloc window at a time per process
_OWN = (tracemalloc.__file__, os.path.dirname(os.path.abspath(__file__)) + os.sep + "*")


def process_memory() -> dict:
    """RSS, USS (when the platform gives it) and VMS in bytes."""
    try:
        import psutil

        p = psutil.Process()
        try:
            full = p.memory_full_info()
            return {"rss": full.rss, "uss": getattr(full, "uss", None), "vms": full.vms}
        except (psutil.AccessDenied, AttributeError):
            mi = p.memory_info()
            return {"rss": mi.rss, "uss": None, "vms": mi.vms}
    except Exception as exc:  # psutil missing or /proc unreadable: report, don't fail
        return {"rss": None, "uss": None, "vms": None, "error": type(exc).__name__}


def _gc() -> dict:
    return {"counts": list(gc.get_count()), "thresholds": list(gc.get_threshold()),
            "generations": gc.get_stats(), "enabled": gc.isenabled(), "garbage": len(gc.garbage)}


def _filters() -> list:
    return [tracemalloc.Filter(False, pattern) for pattern in _OWN] + \
        [tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"), tracemalloc.Filter(False, "<unknown>")]


def capture_memory(window_s: float = 2.0, top_n: int = 25, sleep=time.sleep) -> dict:
    """``{"memory": {...}, "truncated": False}``; blocks the calling (agent) thread ``window_s``."""
    before = process_memory()
    mem: dict = {**before, "gc": _gc(), "top": [], "growth": [], "window_s": 0.0}
    if not _busy.acquire(blocking=False):
        mem["tracemalloc"] = "busy"
        return {"memory": mem, "truncated": False}
    started_here = False
    try:
        if not tracemalloc.is_tracing():
            tracemalloc.start(1)
            started_here = True
        mem["tracemalloc"] = "window" if started_here else "already tracing"
        filters = _filters()
        first = tracemalloc.take_snapshot().filter_traces(filters)
        t0 = time.monotonic()
        if window_s > 0:
            sleep(window_s)
        second = tracemalloc.take_snapshot().filter_traces(filters)
        mem["window_s"] = round(time.monotonic() - t0, 3)
        if started_here:
            tracemalloc.stop()
            started_here = False
        stats = second.statistics("lineno")
        mem["top"] = [{"file": s.traceback[0].filename, "line": s.traceback[0].lineno, "size": s.size,
                       "count": s.count} for s in stats[:top_n]]
        diff = [d for d in second.compare_to(first, "lineno") if d.size_diff > 0]
        mem["growth"] = [{"file": d.traceback[0].filename, "line": d.traceback[0].lineno, "size_diff": d.size_diff,
                          "count_diff": d.count_diff, "size": d.size} for d in diff[:top_n]]
        del first, second, stats, diff
    finally:
        if started_here:
            tracemalloc.stop()
        _busy.release()
    after = process_memory()
    mem["rss_after"] = after.get("rss")
    return {"memory": mem, "truncated": False}
