"""Keeping the writer's loop alive through errors of its own machine.

The writer's loop also touches the local disk (the checkpoint file, dead-letter files, the WAL's
segments, the native decoders' schema files) and needs file descriptors. A full or failing disk,
or no descriptors left, raises ``OSError`` out of it; before, that ended the writer thread for the
life of the process: the receiver went on acknowledging data (once space was freed) that nothing
stored, until the buffer's cap turned every request into a 503. ``keep_running`` logs the error,
counts it, waits (doubling from the first delay up to ``MAX_DELAY``) and runs the loop again from
the checkpoint (a pending batch is replayed with verification, so nothing is stored twice).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .retry_policy import MAX_DELAY, Backoff

__all__ = ["keep_running"]

log = logging.getLogger("tracehouse.collector.writer")


def keep_running(body: Callable[[], None], stop: threading.Event, give_up: Callable[[], bool],
                 failed: Callable[[BaseException], None], first_delay: float = 0.2) -> None:
    """Run ``body`` until it returns (it returns when stopping); after an exception, ``failed(e)``,
    a wait, and ``body`` again, unless ``give_up()`` (stopping and past the grace period)."""
    backoff = Backoff(first_delay)
    while True:
        began = time.monotonic()
        try:
            body()
            return
        except Exception as e:
            failed(e)
            if time.monotonic() - began > 2 * MAX_DELAY:  # it had been working: start the waits over
                backoff = Backoff(first_delay)
            delay = backoff.next()
            log.exception("writer error; the data stays in the buffer; starting again from the checkpoint in %.1fs",
                          delay)
            if give_up():
                return
            if stop.is_set():
                time.sleep(min(delay, 0.5))
            else:
                stop.wait(delay)
