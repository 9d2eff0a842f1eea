"""Thread snapshots: every thread's stack (and the asyncio tasks of a running loop), grouped.

Frames are walked directly from ``sys._current_frames()`` (no ``traceback.extract_stack``: about
ten times cheaper) and listed innermost first. Local variables are included only when asked
for, and then through :func:`~tracehouse.agent.snapshot_redact.safe_repr`.
"""

from __future__ import annotations

import asyncio
import linecache
import sys
import threading

from tracehouse.agent.snapshot_redact import mask_source_line, safe_repr

__all__ = ["MAX_CODE", "Limits", "capture_threads", "frame_stack", "group_stacks", "source_line", "task_stacks"]

MAX_CODE = 400  # characters of a frame's source line that are read (masked) and sent


def source_line(filename: str, line: int) -> str:
    """The source line shown for a frame, masked, cut at ``MAX_CODE`` (marked ``…``).

    Generated or minified code can hold megabytes on one line: masked whole (read as Python
    tokens) it took seconds of the capturing thread, and no body with it fitted the size cap."""
    text = linecache.getline(filename, line).strip()
    if len(text) <= MAX_CODE:
        return mask_source_line(text)
    return mask_source_line(text[:MAX_CODE]) + " …"


class Limits:
    """Size caps of one thread snapshot (anything cut sets ``truncated``)."""

    __slots__ = ("max_threads", "max_frames", "max_tasks", "max_locals")

    def __init__(self, max_threads: int = 200, max_frames: int = 64, max_tasks: int = 200, max_locals: int = 20):
        self.max_threads, self.max_frames, self.max_tasks, self.max_locals = max_threads, max_frames, max_tasks, \
            max_locals


def _frame(f, with_locals: bool, limits: Limits) -> dict:
    code = f.f_code
    line = f.f_lineno or 0
    out = {"file": code.co_filename, "line": line, "function": code.co_name,
           "code": source_line(code.co_filename, line)}
    if with_locals:
        items = list(f.f_locals.items())[: limits.max_locals]
        out["locals"] = {str(k): safe_repr(str(k), v) for k, v in items}
    return out


def frame_stack(frame, limits: Limits, with_locals: bool = False, skip_files: tuple[str, ...] = ()) \
        -> tuple[list[dict], bool]:
    """Frames from ``frame`` outwards (innermost first); ``True`` when cut at ``max_frames``."""
    out: list[dict] = []
    f = frame
    while f is not None:
        if len(out) >= limits.max_frames:
            return out, True
        if not (skip_files and f.f_code.co_filename in skip_files):
            out.append(_frame(f, with_locals, limits))
        f = f.f_back
    return out, False


def task_stacks(loop, limits: Limits, with_locals: bool = False) -> tuple[list[dict], bool]:
    """The tasks of ``loop`` with their coroutine stacks (innermost first)."""
    if loop is None or loop.is_closed():
        return [], False
    try:
        tasks = list(asyncio.all_tasks(loop))
    except RuntimeError:  # the set changed under us too often: no tasks this time
        return [], True
    truncated = len(tasks) > limits.max_tasks
    out = []
    for t in tasks[: limits.max_tasks]:
        frames = t.get_stack(limit=limits.max_frames)  # outermost first for a coroutine chain
        stack = [_frame(f, with_locals, limits) for f in reversed(frames)]
        coro = t.get_coro()
        out.append({"name": t.get_name(), "coro": getattr(coro, "__qualname__", type(coro).__name__),
                    "done": t.done(), "stack": stack})
    return out, truncated


def group_stacks(threads: list[dict]) -> list[dict]:
    """Threads with identical stacks grouped, biggest group first."""
    groups: dict[tuple, dict] = {}
    for t in threads:
        key = tuple((f["file"], f["line"], f["function"]) for f in t["stack"])
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"count": 0, "thread_names": [], "stack": t["stack"]}
        g["count"] += 1
        g["thread_names"].append(t["name"])
    return sorted(groups.values(), key=lambda g: -g["count"])


def capture_threads(limits: Limits | None = None, with_locals: bool = False, loop=None,
                    skip_thread: int | None = None) -> dict:
    """``{"threads": [...], "groups": [...], "tasks": [...], "truncated": bool}``.

    ``loop``: an asyncio loop whose tasks to list (the one the ASGI middleware saw); the calling
    thread's running loop is used when there is one. ``skip_thread``: a thread id left out (the
    capturing thread itself, when it is the agent's watchdog).
    """
    limits = limits or Limits()
    frames = sys._current_frames()
    by_id = {t.ident: t for t in threading.enumerate()}
    truncated = False
    threads = []
    for ident, frame in frames.items():
        if ident == skip_thread:
            continue
        if len(threads) >= limits.max_threads:
            truncated = True
            break
        t = by_id.get(ident)
        stack, cut = frame_stack(frame, limits, with_locals)
        truncated |= cut
        threads.append({"name": t.name if t is not None else f"thread-{ident}", "id": ident,
                        "daemon": bool(t.daemon) if t is not None else False,
                        "native_id": getattr(t, "native_id", None) if t is not None else None,
                        "stack": stack})
    del frames
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
    tasks, cut = task_stacks(loop, limits, with_locals)
    truncated |= cut
    return {"threads": threads, "groups": group_stacks(threads), "tasks": tasks, "truncated": truncated}
