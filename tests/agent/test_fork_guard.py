"""A process forked while the SDK collects metrics (a uWSGI or gunicorn master whose reader thread
is collecting) must not start with the SDK's collection locks held: its own collections, flushes
and shutdown would wait for ever (a uWSGI worker that never exits)."""

from __future__ import annotations

import os
import threading

from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tracehouse.agent import sdk_private


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
    pid = os.fork()
    if pid == 0:  # the child: collect once, as its reader thread or its shutdown would
        slow.clear()
        t = threading.Thread(target=reader.get_metrics_data, daemon=True)
        t.start()
        t.join(5)
        os._exit(1 if t.is_alive() else 0)
    collecting.join()
    _, status = os.waitpid(pid, 0)
    mp.shutdown()
    return os.waitstatus_to_exitcode(status)


def test_a_fork_waits_for_the_collection_so_the_child_can_collect():
    assert _fork_during_a_collection(guarded=True) == 0


def test_without_the_guard_the_child_would_hang():
    # what the guard prevents, shown on the same SDK: the child's collection never ends
    assert _fork_during_a_collection(guarded=False) == 1
