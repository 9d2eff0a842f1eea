"""A process forked while the SDK collects or exports metrics (a uWSGI or gunicorn master whose
reader thread is at work) must not start with the SDK's locks held: its own collections, exports,
flushes and shutdown would wait for ever (a uWSGI worker that never exits, or never sends a
metric)."""

from __future__ import annotations

import os
import threading

from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)

from tracehouse.agent import sdk_private


def _fork_and_check(in_child) -> int:
    """Fork; the child runs ``in_child`` on a thread of its own and exits 0 when it returned true
    within 5 s, 1 otherwise (it raised, or waits for ever on a lock). Returns the child's pid."""
    pid = os.fork()
    if pid == 0:
        result = []
        t = threading.Thread(target=lambda: result.append(bool(in_child())), daemon=True)
        t.start()
        t.join(5)
        os._exit(0 if result == [True] else 1)
    return pid


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _fork_during_a_collection(guarded: bool) -> int:
    reader = InMemoryMetricReader()
    if guarded:
        assert sdk_private.guard_collection_against_fork(reader)
    entered, slow = threading.Event(), threading.Event()

    def callback(options):
        if slow.is_set():
            entered.set()
            threading.Event().wait(1.0)  # the collection is under way, the SDK's locks held
        yield Observation(1.0)

    mp = MeterProvider(metric_readers=[reader])
    mp.get_meter("t").create_observable_gauge("g", callbacks=[callback])
    slow.set()
    collecting = threading.Thread(target=reader.get_metrics_data)
    collecting.start()
    assert entered.wait(10)
    def in_child() -> bool:  # collect once, as its reader thread or its shutdown would
        slow.clear()
        reader.get_metrics_data()
        return True

    pid = _fork_and_check(in_child)
    collecting.join()
    code = _exit_code(pid)
    mp.shutdown()
    return code


def test_a_fork_waits_for_the_collection_so_the_child_can_collect():
    assert _fork_during_a_collection(guarded=True) == 0


def test_without_the_guard_the_child_would_hang():
    # what the guard prevents, shown on the same SDK: the child's collection never ends
    assert _fork_during_a_collection(guarded=False) == 1


class _SlowOnceExporter(MetricExporter):
    """Holds its first export until released; counts the exports it was given."""

    def __init__(self):
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls = 0

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            self.release.wait(10)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


def _fork_during_an_export(guarded: bool) -> int:
    exporter = _SlowOnceExporter()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    if guarded:
        assert sdk_private.guard_collection_against_fork(reader)
    mp = MeterProvider(metric_readers=[reader])
    mp.get_meter("t").create_observable_gauge("g", callbacks=[lambda options: [Observation(1.0)]])
    exporting = threading.Thread(target=reader.collect)
    exporting.start()
    assert exporter.entered.wait(10)  # the parent's export is under way, its export lock held
    def in_child() -> bool:  # one collection and export, as its reader thread's next tick would
        reader.collect()
        return exporter.calls == 2

    pid = _fork_and_check(in_child)
    exporter.release.set()
    exporting.join()
    code = _exit_code(pid)
    mp.shutdown()
    return code


def test_a_child_forked_during_an_export_exports_its_own_metrics():
    assert _fork_during_an_export(guarded=True) == 0


def test_without_the_guard_a_child_forked_during_an_export_never_exports():
    # the uWSGI worker of CI's failed run: spans sent, not one metric in 30 s
    assert _fork_during_an_export(guarded=False) == 1


def test_a_child_forked_while_agent_threads_hold_its_locks_can_take_them():
    """The agent's module-level locks (counters, errors, pools, the export's switch interval, the
    memory snapshot window), each held by another thread at the fork: the child, where those
    threads do not exist, must be able to take every one (the after-fork hook resets counters and
    errors first thing; a held lock there would hang the worker before it serves)."""
    import sys

    from tracehouse.agent import counters, errors, otlp_exporters, pools, snapshot_memory

    held = [(counters, "_lock"), (errors, "_lock"), (pools, "_lock"), (otlp_exporters, "_share_lock"),
            (snapshot_memory, "_busy")]
    release = threading.Event()
    holders = []
    for module, name in held:
        taken = threading.Event()

        def hold(lock=getattr(module, name), taken=taken):
            with lock:
                taken.set()
                release.wait(30)

        t = threading.Thread(target=hold, daemon=True)
        t.start()
        holders.append((t, taken))
    assert all(taken.wait(10) for _, taken in holders)
    interval = sys.getswitchinterval()
    class Pool:
        pass

    pool = Pool()

    def in_child() -> bool:  # what the agent's hook and threads do with each lock
        counters.reset()
        errors.reset()
        counters.add("spans.exported", 3)
        errors.swallow("export spans", ValueError("x"))
        pools.track(pool, "redis", "p")
        pools.snapshot()
        with otlp_exporters.gil_share():
            pass
        memory = snapshot_memory.capture_memory(window_s=0, top_n=1)["memory"]["tracemalloc"]
        return (memory == "window" and counters.snapshot().get("spans.exported") == 3
                and sys.getswitchinterval() == interval)

    pid = _fork_and_check(in_child)
    release.set()
    for t, _ in holders:
        t.join(10)
    assert _exit_code(pid) == 0
