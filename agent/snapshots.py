"""Fault snapshots: what triggers a thread or memory capture, and where it goes.

Triggers: a command from the server (on demand), a request in flight longer than
``snapshot_slow_ms`` (the :mod:`.watchdog`), an unhandled exception (``sys.excepthook`` and
``threading.excepthook``, chained to the previous hooks), and process RSS above
``snapshot_memory_mb``. Automatic triggers pass a token bucket each (one capture per
``auto_interval`` seconds per trigger kind); everything else that asks is counted and dropped.
Memory captures (which wait through a tracemalloc window) and on-demand captures run on one
worker thread behind a small bounded queue; a slow request's thread capture is taken at once on
the watchdog thread, so the stack is the one of the moment. Bodies go out through
:class:`~tracehouse.agent.snapshot_export.SnapshotEmitter` (schema there).
"""

from __future__ import annotations

import queue
import sys
import threading
import time

from tracehouse.agent import counters, errors
from tracehouse.agent.snapshot_export import SnapshotEmitter, new_id
from tracehouse.agent.snapshot_redact import mask_text
from tracehouse.agent.snapshot_threads import Limits, capture_threads, frame_stack, source_line
from tracehouse.agent.watchdog import INFLIGHT, Inflight, Watchdog

__all__ = ["Snapshots", "TokenBucket"]

KINDS = ("threads", "memory")


class TokenBucket:
    """``burst`` tokens, one more every ``interval`` seconds."""

    def __init__(self, interval: float, burst: int = 1, clock=time.monotonic):
        self.interval, self.burst, self.clock = interval, burst, clock
        self.tokens = float(burst)
        self.at = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.at) / self.interval)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class Snapshots:
    def __init__(self, config, logger_provider, identity, *, auto_interval: float = 30.0,
                 limits: Limits | None = None):
        self.config = config
        self.identity = identity  # () -> (service, instance id)
        self.emitter = SnapshotEmitter(logger_provider, config.snapshot_max_bytes)
        self.logger_provider = logger_provider
        self.limits = limits or Limits()
        self.auto_interval = auto_interval
        self.buckets = {k: TokenBucket(auto_interval) for k in ("slow_request", "exception", "memory_threshold")}
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self.watchdog = Watchdog(config.snapshot_slow_ms, self._on_slow,
                                 memory_bytes=int(config.snapshot_memory_mb * 2**20) if config.snapshot_memory_mb
                                 else None, on_memory=self._on_memory)
        self.poller = None
        if config.command_poll_s and config.command_poll_s > 0:
            from tracehouse.agent.commands import CommandPoller

            self.poller = CommandPoller(config.endpoint, config.headers, config.command_poll_s,
                                        min(config.export_timeout, config.command_poll_s, 5.0), identity,
                                        self._on_command)
        self._prev_hooks: tuple | None = None
        self._active = False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Snapshots:
        self._active = True
        self._start_threads()
        self._install_hooks()
        return self

    def _start_threads(self) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=8)
        self._worker = threading.Thread(target=self._work, name="tracehouse-snapshots", daemon=True)
        self._worker.start()
        self.watchdog.start()
        if self.poller is not None:
            self.poller.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._active = False
        self._uninstall_hooks()
        self._stop.set()
        self.watchdog.stop(timeout)
        if self.poller is not None:
            self.poller.stop(timeout)
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout)

    def after_fork(self) -> None:
        """In a forked child the threads are gone: start them again, forget the parent's requests."""
        INFLIGHT.clear()
        self._start_threads()

    # -- capture -------------------------------------------------------------------------------
    def thread_body(self, trigger: str, reason: str, skip_thread: int | None = None) -> dict:
        from tracehouse.agent.metrics_process import LOOP_LAG

        t0 = time.perf_counter()
        snap = capture_threads(self.limits, self.config.snapshot_locals, loop=LOOP_LAG._loop, skip_thread=skip_thread)
        return {"kind": "threads", "trigger": trigger, "reason": reason, "captured_at": time.time(), **snap,
                "capture_ms": round((time.perf_counter() - t0) * 1000, 3)}

    def memory_body(self, trigger: str, reason: str) -> dict:
        from tracehouse.agent.snapshot_memory import capture_memory

        t0 = time.perf_counter()
        snap = capture_memory(self.config.snapshot_memory_window_s)
        return {"kind": "memory", "trigger": trigger, "reason": reason, "captured_at": time.time(), **snap,
                "capture_ms": round((time.perf_counter() - t0) * 1000, 3)}

    def capture(self, kind: str, trigger: str, reason: str, attributes: dict | None = None,
                trace_id: int = 0, span_id: int = 0) -> str | None:
        """Capture and emit now (on the calling thread); returns the snapshot id."""
        try:
            body = self.thread_body(trigger, reason, threading.get_ident() if trigger != "command" else None) \
                if kind == "threads" else self.memory_body(trigger, reason)
            service, instance = self.identity()
            attrs = {"snapshot.id": new_id(), "snapshot.instance": instance, **(attributes or {})}
            return self.emitter.emit(body, attrs, trace_id, span_id)
        except Exception as exc:
            errors.swallow(f"snapshot {kind}", exc)
            return None

    def _work(self) -> None:
        q, stop = self._queue, self._stop
        while not stop.is_set():
            job = q.get()
            if job is None:
                return
            self.capture(*job[:3], attributes=job[3])

    def _submit(self, kind: str, trigger: str, reason: str, attributes: dict | None = None) -> bool:
        try:
            self._queue.put_nowait((kind, trigger, reason, attributes or {}))
            return True
        except queue.Full:
            counters.add(f"snapshots.dropped.queue_full.{trigger}")
            return False

    def _allowed(self, trigger: str) -> bool:
        if self.buckets[trigger].take():
            return True
        counters.add(f"snapshots.dropped.rate_limited.{trigger}")
        return False

    # -- triggers ------------------------------------------------------------------------------
    def _on_command(self, cmd: dict) -> None:
        kind = cmd.get("kind")
        if kind not in KINDS:
            counters.add("commands.dropped.bad_kind")
            return
        self._submit(kind, "command", str(cmd.get("reason") or "requested")[:500],
                     {"snapshot.request_id": cmd["id"], "snapshot.requested_by": str(cmd.get("requested_by") or "")[:200]})

    def _on_slow(self, entry: Inflight, elapsed_ms: float) -> None:
        if not self._allowed("slow_request"):
            return
        ctx = entry.span.get_span_context() if entry.span is not None else None
        trace_id, span_id = (ctx.trace_id, ctx.span_id) if ctx is not None and ctx.is_valid else (0, 0)
        reason = f"{entry.method[:32]} {entry.path[:500]} in flight for {elapsed_ms:.0f} ms"
        try:
            body = self.thread_body("slow_request", reason, skip_thread=threading.get_ident())
            req = {"thread_id": entry.thread_id, "elapsed_ms": round(elapsed_ms, 1), "method": entry.method[:32],
                   "path": entry.path[:500], "trace_id": f"{trace_id:032x}" if trace_id else "",
                   "span_id": f"{span_id:016x}" if span_id else ""}
            if entry.task is not None:
                req["task"] = entry.task.get_name()
                frames = entry.task.get_stack(limit=self.limits.max_frames)
                req["stack"] = [_plain(f) for f in reversed(frames)]
            else:
                for t in body["threads"]:
                    if t["id"] == entry.thread_id:
                        t["request"] = True
                        req["stack"] = t["stack"]
            body["request"] = req
            _, instance = self.identity()
            self.emitter.emit(body, {"snapshot.id": new_id(), "snapshot.instance": instance,
                                     "http.request.method": entry.method[:32], "url.path": entry.path[:500]},
                              trace_id, span_id)
        except Exception as exc:
            errors.swallow("snapshot slow request", exc)

    def _on_memory(self, rss: int) -> None:
        if self._allowed("memory_threshold"):
            self._submit("memory", "memory_threshold",
                         f"rss {rss / 2**20:.0f} MiB above {self.config.snapshot_memory_mb:g} MiB")

    def on_exception(self, exc_type, exc, tb, thread_name: str) -> None:
        if not self._active or exc_type is None or issubclass(exc_type, (KeyboardInterrupt, SystemExit)) or not self._allowed("exception"):
            return
        try:
            reason = f"unhandled {exc_type.__name__} in thread {thread_name}"
            body = self.thread_body("exception", reason, skip_thread=None)
            frames = []
            while tb is not None:
                frames.append(tb.tb_frame)
                last = tb
                tb = tb.tb_next
            stack, _ = frame_stack(frames[-1], self.limits, self.config.snapshot_locals) if frames else ([], False)
            if frames:
                stack[0]["line"] = last.tb_lineno
            body["exception"] = {"type": f"{exc_type.__module__}.{exc_type.__qualname__}",
                                 "message": mask_text(str(exc)[:1000])[:500], "thread": thread_name, "stack": stack}
            _, instance = self.identity()
            self.emitter.emit(body, {"snapshot.id": new_id(), "snapshot.instance": instance,
                                     "exception.type": exc_type.__qualname__})
            # an unhandled exception in the main thread ends the process: the agent's exit handler
            # flushes the snapshot, within its bound
        except Exception as e:
            errors.swallow("snapshot exception", e)

    # -- hooks ---------------------------------------------------------------------------------
    def _install_hooks(self) -> None:
        prev_sys, prev_thr = sys.excepthook, threading.excepthook
        snaps = self

        def excepthook(exc_type, exc, tb):
            # the host's hook (its traceback) first: nothing of ours may delay it
            prev_sys(exc_type, exc, tb)
            snaps.on_exception(exc_type, exc, tb, threading.current_thread().name)

        def thread_excepthook(args):
            # the host's hook first here too: a traceback (or a fail-fast exit) is not held up by
            # a capture of every thread
            try:
                prev_thr(args)
            finally:
                name = args.thread.name if args.thread is not None else "unknown"
                snaps.on_exception(args.exc_type, args.exc_value, args.exc_traceback, name)

        excepthook.tracehouse = True  # type: ignore[attr-defined]
        thread_excepthook.tracehouse = True  # type: ignore[attr-defined]
        sys.excepthook, threading.excepthook = excepthook, thread_excepthook
        self._prev_hooks = (prev_sys, prev_thr, excepthook, thread_excepthook)

    def _uninstall_hooks(self) -> None:
        if self._prev_hooks is None:
            return
        prev_sys, prev_thr, ours_sys, ours_thr = self._prev_hooks
        if sys.excepthook is ours_sys:  # someone chained after us: leave theirs (ours becomes a pass-through)
            sys.excepthook = prev_sys
        if threading.excepthook is ours_thr:
            threading.excepthook = prev_thr
        self._prev_hooks = None


def _plain(f) -> dict:
    line = f.f_lineno or 0
    return {"file": f.f_code.co_filename, "line": line, "function": f.f_code.co_name,
            "code": source_line(f.f_code.co_filename, line)}
