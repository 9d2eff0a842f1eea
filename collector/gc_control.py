"""The cyclic garbage collector, paused while the writer holds a batch."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["no_gc", "collect"]


@contextmanager
def no_gc() -> Iterator[None]:
    """A batch is hundreds of thousands of small containers: with the cyclic GC on, collections
    rescan them again and again and conversion and insert run 2-3x slower. Nothing in a batch makes
    reference cycles, so collection waits until the batch is through (a second or so)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def collect() -> None:
    """Collect now, although paused (while a failed insert waits): other threads' garbage goes."""
    gc.collect()
