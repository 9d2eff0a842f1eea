"""Room for parsed requests: how many request bytes may be parsed and alive at once, process-wide.

A parsed request costs far more memory than its bytes: ~5× for real spans, up to ~30× for valid
but hostile shapes the parse budget lets through (``wire_budget``: 16 MiB of arrays of empty values
parse to ~+380 MB). The decode threads (two) and the writer (one, converting what the engine leaves
to Python) each hold one parsed request at a time, so three such bodies at once took three times
that. Each takes its bytes from this gate before it parses and gives them back once the parsed
message is dropped; a body larger than the whole gate takes all of it, so the largest ones are
parsed one at a time. The parse holds the interpreter's lock anyway: waiting here costs no
throughput, only memory that would have been used at once.

The scope is per thread (``scope()`` around the code that parses and drops; ``before_parse`` where
the size is known): code that parses outside a scope (a test, a small body decoded on the event
loop, which must never wait) is not held up.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ParseGate", "before_parse", "BUDGET_BYTES"]

#: request bytes parsed and alive at once: two 4 MiB bodies (the gRPC exporters' default message
#: cap) together, anything larger alone
BUDGET_BYTES = 8 << 20

_local = threading.local()


def _malloc_trim():
    """glibc's ``malloc_trim`` (None elsewhere): freed memory back to the system."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


class ParseGate:
    def __init__(self, budget_bytes: int = BUDGET_BYTES):
        self.budget = max(1, budget_bytes)
        self._used = 0
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        return self._used

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Within it, ``before_parse`` on this thread waits for room in this gate; on leaving, what
        was taken is given back."""
        outer = getattr(_local, "gate", None), getattr(_local, "held", 0)
        _local.gate, _local.held = self, 0
        try:
            yield
        finally:
            held = _local.held
            _local.gate, _local.held = outer
            if held >= self.budget and _TRIM is not None:
                # The parsed message is freed, but the C allocator keeps what each thread's arena
                # held: the next such body, parsed on another decode thread (or the writer's),
                # would take as much again from the system. Given back before the next one starts.
                _TRIM(0)
            if held:
                with self._cond:
                    self._used -= held
                    self._cond.notify_all()

    @contextmanager
    def parsing(self, size: int) -> Iterator[None]:
        """A scope in which ``size`` bytes are parsed now (and dropped by its end)."""
        with self.scope():
            before_parse(size)
            yield

    def _take(self, n: int) -> int:
        n = min(max(n, 1), self.budget)
        with self._cond:
            while self._used + n > self.budget:
                self._cond.wait()
            self._used += n
        return n


def before_parse(size: int) -> None:
    """``size`` bytes are about to be parsed on this thread: within a gate's scope, wait until
    they fit (once per scope: one request)."""
    gate = getattr(_local, "gate", None)
    if gate is None or _local.held:
        return
    _local.held = gate._take(size)
