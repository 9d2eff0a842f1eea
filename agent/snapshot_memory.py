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

from tracehouse.agent.forklocks import renew_in_child

__all__ = ["capture_memory", "process_memory"]

_busy = threading.Lock()  # one tracemalloc window at a time per process
_window_open = False  # tracemalloc was started by the window under way


def _window_after_fork() -> None:
    """A child forked during a window: the thread that would stop tracemalloc is not in it."""
    global _window_open
    if _window_open and tracemalloc.is_tracing():
        tracemalloc.stop()
    _window_open = False


renew_in_child(globals(), "_busy", then=_window_after_fork)
_AGENT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


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


def _theirs(filename: str) -> bool:
    """Allocation sites worth showing: not the agent's own, not tracemalloc's, not the importer's.

    Filtering the grouped statistics is cheap; ``Snapshot.filter_traces`` runs fnmatch per trace
    in Python (seconds for 200k traces), so it is not used."""
    return not (filename.startswith(_AGENT_DIR) or filename == tracemalloc.__file__
                or filename.startswith("<frozen importlib") or filename == "<unknown>")


def by_line(snapshot) -> dict[tuple[str, int], list[int]]:
    """(file, line) → [size, count] of a snapshot's traces.

    A tight loop over the raw traces: ``Snapshot.statistics``/``compare_to`` build a Traceback
    object per trace and take ~0.7 s/1.8 s for 200k traces; this takes a few tens of ms."""
    raw = getattr(getattr(snapshot, "traces", None), "_traces", None)
    out: dict[tuple[str, int], list[int]] = {}
    if raw is None:  # not CPython's layout: the slow public path
        for st in snapshot.statistics("lineno"):
            out[(st.traceback[0].filename, st.traceback[0].lineno)] = [st.size, st.count]
        return out
    # No arithmetic in the loop: while tracemalloc traces, every new int (sizes are > 256) is a
    # traced allocation (~µs each). Appending the existing int objects allocates (almost) nothing.
    sizes: dict[tuple[str, int], list[int]] = {}
    get = sizes.get
    for trace in raw:
        key = trace[2][0] if trace[2] else ("<unknown>", 0)
        lst = get(key)
        if lst is None:
            lst = sizes[key] = []
        lst.append(trace[1])
    for key, lst in sizes.items():
        out[key] = [sum(lst), len(lst)]
    return out


def capture_memory(window_s: float = 2.0, top_n: int = 25, sleep=time.sleep) -> dict:
    """``{"memory": {...}, "truncated": False}``; blocks the calling (agent) thread ``window_s``."""
    before = process_memory()
    mem: dict = {**before, "gc": _gc(), "top": [], "growth": [], "window_s": 0.0}
    if not _busy.acquire(blocking=False):
        mem["tracemalloc"] = "busy"
        return {"memory": mem, "truncated": False}
    global _window_open  # one window at a time (_busy): the flag is this call's
    try:
        if not tracemalloc.is_tracing():
            tracemalloc.start(1)
            _window_open = True
        mem["tracemalloc"] = "window" if _window_open else "already tracing"
        old = by_line(tracemalloc.take_snapshot())  # grouped at once: the raw traces are freed before the next
        t0 = time.monotonic()
        if window_s > 0:
            sleep(window_s)
        new = by_line(tracemalloc.take_snapshot())
        mem["window_s"] = round(time.monotonic() - t0, 3)
        if _window_open:
            tracemalloc.stop()
            _window_open = False
        top = sorted(((k, v) for k, v in new.items() if _theirs(k[0])), key=lambda kv: -kv[1][0])[:top_n]
        mem["top"] = [{"file": f, "line": ln, "size": size, "count": count} for (f, ln), (size, count) in top]
        growth = []
        for key, (size, count) in new.items():
            was = old.get(key, (0, 0))
            if size > was[0] and _theirs(key[0]):
                growth.append((size - was[0], count - was[1], size, key))
        growth.sort(key=lambda g: -g[0])
        mem["growth"] = [{"file": f, "line": ln, "size_diff": sd, "count_diff": cd, "size": size}
                         for sd, cd, size, (f, ln) in growth[:top_n]]
    finally:
        if _window_open:
            tracemalloc.stop()
            _window_open = False
        _busy.release()
    after = process_memory()
    mem["rss_after"] = after.get("rss")
    return {"memory": mem, "truncated": False}
