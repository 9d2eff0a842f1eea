"""A lean batch span processor: the request thread only appends to a deque.

Compared with the SDK's ``BatchSpanProcessor`` the per-span work on the request thread is one
``deque.append`` and two length checks (no ``os.getpid()`` per span — a fork hook resets the
processor instead — and no lock or event unless a batch is due). The export thread wakes on
its timer (``OTEL_BSP_SCHEDULE_DELAY``, 5 s by default) or when a batch is queued (at most
half the queue), and exports batches of up to ``max_export_batch_size``. Bounded: when the queue is full new spans
are dropped and counted (``spans.dropped.queue_full`` in ``tracehouse.agent.stats()``).
Shutdown exports what is queued within its time bound.

With ``encoder`` (the agent's own exporter: :func:`.otlp_spans.encoded`) spans are written to
OTLP bytes when a *local root* ends (a server span ends after its response went out, so the work
overlaps the client's turnaround instead of adding to a response): ended spans wait in a second
queue, and once :data:`ENCODE_AT` have gathered, the thread that ends a local root encodes them
all (one tight loop costs less CPU than one span at a time; a child is never encoded before its
response is sent). The span objects are then freed and the export thread only concatenates and
sends, so it holds the GIL for a fraction of a millisecond per batch instead of the milliseconds
a request could wait on. What still waits at the timer, a flush or shutdown (a quiet service, a
long job's children) is encoded by the export thread.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExportResult

from tracehouse.agent import counters, errors
from tracehouse.agent import environment as env
from tracehouse.agent.export import export_within

_DEFAULT_DELAY_MS = 5000.0
ENCODE_AT = 16  # spans encoded together when a root ends (a tight loop: ~20% less CPU than one by one)


def _env_encode_at() -> int:
    """``TRACEHOUSE_ENCODE_BATCH`` (1-512, for measurements): how many ended spans a root's end encodes."""
    raw = os.environ.get("TRACEHOUSE_ENCODE_BATCH")
    try:
        value = int(raw) if raw else ENCODE_AT
    except ValueError:
        value = ENCODE_AT
    return min(512, max(1, value))


def _env_delay_ms() -> float:
    # past a day (1e13 ms), Event.wait raised OverflowError in the export thread, and spans stopped;
    # a value that did not parse was silently replaced
    value = env.get_float("OTEL_BSP_SCHEDULE_DELAY", _DEFAULT_DELAY_MS, lo=0.001, hi=86_400_000)
    return _DEFAULT_DELAY_MS if value is None else value


class LeanBatchSpanProcessor(SpanProcessor):
    def __init__(self, exporter, max_queue_size: int = 2048, max_export_batch_size: int = 512,
                 schedule_delay_millis: float | None = None, encoder=None):
        self._exporter = exporter
        self._encoder = encoder
        self._encode_at = _env_encode_at()
        self._max_queue = max(1, int(max_queue_size))
        self._max_batch = max(1, min(int(max_export_batch_size), self._max_queue))
        self._wake_at = max(1, min(self._max_batch, self._max_queue // 2))
        self._delay = (schedule_delay_millis if schedule_delay_millis is not None else _env_delay_ms()) / 1000.0
        self._shutdown = False
        self._start()
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def after_in_child():
                p = ref()
                if p is not None and not p._shutdown:
                    p._start()

            os.register_at_fork(after_in_child=after_in_child)

    def _start(self) -> None:
        self._queue: deque = deque()
        self._raw: deque = deque()  # children waiting for their local root (with an encoder)
        self._woken = False
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._thread = threading.Thread(target=self._worker, name="tracehouse-spans", daemon=True)
        self._thread.start()

    # -- request thread --------------------------------------------------------------------------
    def on_start(self, span, parent_context=None) -> None:
        pass

    def _on_ending(self, span) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not span.get_span_context().trace_flags & 1:  # not sampled
            return
        q = self._queue
        raw = self._raw
        if len(q) + len(raw) >= self._max_queue or self._shutdown:
            counters.add("spans.dropped.shutdown" if self._shutdown else "spans.dropped.queue_full")
            return
        if self._encoder is None:
            q.append(span)
        else:
            raw.append(span)
            parent = span.parent
            if (parent is not None and not parent.is_remote) or len(raw) < self._encode_at:
                return  # a child waits for its local root; roots are encoded a few at a time
            encode = self._encoder
            append = q.append
            while raw:
                try:
                    one = raw.popleft()
                except IndexError:  # another thread took the last one
                    break
                try:
                    append(encode(one))
                except Exception as exc:
                    counters.add("spans.dropped.encoding_failed")
                    errors.swallow("encode span", exc)
        if len(q) >= self._wake_at and not self._woken:
            self._woken = True
            self._wake.set()

    def _adopt_raw(self) -> None:
        """Children still waiting go to the export queue as they are (the exporter encodes them)."""
        raw, q = self._raw, self._queue
        while raw:
            try:
                q.append(raw.popleft())
            except IndexError:
                break

    # -- export thread ---------------------------------------------------------------------------
    def _worker(self) -> None:
        wake = self._wake
        while not self._shutdown:
            woken = wake.wait(self._delay)
            wake.clear()
            self._woken = False
            if self._shutdown:
                break
            if not woken:
                self._adopt_raw()
            self._export(everything=False)

    def _export(self, everything: bool, deadline: float | None = None) -> bool:
        """Export what is queued; False when an export failed or ``deadline`` came first."""
        lock = self._export_lock
        # A flush with a deadline waits for an export in flight only until its deadline.
        if not lock.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
            return False
        try:
            return self._export_batches(everything, deadline)
        finally:
            lock.release()

    def _export_batches(self, everything: bool, deadline: float | None) -> bool:
        q = self._queue
        first = True
        ok = True
        # On the timer: at least one batch; then only while a full wake-up's worth is queued.
        while q and (everything or first or len(q) >= self._wake_at):
            left_ms = None if deadline is None else (deadline - time.monotonic()) * 1000.0
            if left_ms is not None and left_ms <= 0:
                return False
            first = False
            n = min(self._max_batch, len(q))
            popleft = q.popleft
            batch = [popleft() for _ in range(n)]
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                # within a flush, one export gets the time left (an exporter that takes it)
                ok = export_within(self._exporter, batch, left_ms) is not SpanExportResult.FAILURE and ok
            except Exception as exc:
                ok = False
                errors.swallow("export spans", exc)
            finally:
                detach(token)
        return ok

    # -- lifecycle -------------------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._shutdown:
            return False
        self._adopt_raw()
        done = self._export(everything=True, deadline=time.monotonic() + timeout_millis / 1000.0)
        return done and not self._queue

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(self._delay + 1.0)
        self._adopt_raw()
        self._export(everything=True)
        self._exporter.shutdown()
