"""Limits on every query a user can cause (dashboard pages, the JSON API, alert rule previews and
SQL rules): time, memory, rows and bytes read, and threads, as ClickHouse settings that both
ClickHouse 18.16 and chDB 26.9 honour. A query past a limit fails with ``QueryTimeout`` or
``QueryLimitExceeded`` instead of holding the engine (and, on chDB, the process) for as long as
it likes. Result sizes are bounded by a ``LIMIT`` in each statement's own SQL.

Time ranges: overview pages read the per-minute rollups and may span up to
:data:`~tracehouse.storage.timerange.MAX_RANGE_NS` (400 days); queries over raw spans, logs and
metric points are refused past :data:`RAW_MAX_DAYS`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidParameter
from .timerange import NS, TimeRange

__all__ = ["QueryLimits", "BusyBudget", "RAW_MAX_DAYS", "require_raw_range"]

#: the longest time range a query over raw rows (spans, logs, metric points) may cover
RAW_MAX_DAYS = 31


@dataclass(frozen=True)
class QueryLimits:
    #: seconds a statement may run (max_execution_time)
    timeout_s: float = 15.0
    #: memory one statement may hold (max_memory_usage)
    max_memory_bytes: int = 1 << 30
    #: rows one statement may read from tables (max_rows_to_read)
    max_rows_to_read: int = 300_000_000
    #: uncompressed bytes one statement may read (max_bytes_to_read)
    max_bytes_to_read: int = 40 << 30
    #: threads one statement may use (max_threads); 0 = on an embedded engine half the machine's
    #: cores, at least one, so a heavy read leaves CPU to ingestion (on a server: the server's own)
    max_threads: int = 0
    #: user queries running at once against an embedded engine (it shares the CPU with ingestion);
    #: 0 = half the machine's cores, at least one. Others wait up to ``timeout_s`` for a turn.
    #: A ClickHouse server is limited by the backend's connection pool instead.
    max_concurrent: int = 0
    #: share of the wall time user queries may keep an embedded engine busy (summed over their
    #: slots), with bursts of up to ``busy_burst_s`` of query time: a page's few queries never wait,
    #: a loop of heavy ones is paced so that ingestion keeps the rest of the CPU; 0 = unpaced
    busy_share: float = 0.5
    busy_burst_s: float = 5.0
    #: nice value for the engine threads running a user query on an embedded engine
    #: (``os_thread_priority``, chDB only: 18.16 lacks the setting), so that the ingestion
    #: sharing the process gets the CPU first; 0 = same priority
    nice: int = 10

    def settings(self, timeout_s: float | None = None, embedded: bool = False) -> dict[str, Any]:
        """The settings for one query; ``embedded`` adds the lower thread priority (chDB)."""
        out: dict[str, Any] = {
            "max_execution_time": max(1, int(round(timeout_s if timeout_s is not None else self.timeout_s))),
            "max_memory_usage": int(self.max_memory_bytes),
            "max_rows_to_read": int(self.max_rows_to_read),
            "max_bytes_to_read": int(self.max_bytes_to_read),
        }
        if self.max_threads or embedded:  # a server's own cores are its business unless set
            out["max_threads"] = int(self.max_threads or _half_cores())
        if embedded and self.nice:
            out["os_thread_priority"] = int(self.nice)
        return out

    @classmethod
    def from_settings(cls, settings: Any) -> QueryLimits:
        """From the server's settings (``query_timeout_s``, ``query_max_memory_bytes``, …); missing
        ones keep their defaults."""
        d = cls()
        return cls(
            timeout_s=float(getattr(settings, "query_timeout_s", d.timeout_s) or d.timeout_s),
            max_memory_bytes=int(getattr(settings, "query_max_memory_bytes", d.max_memory_bytes) or d.max_memory_bytes),
            max_rows_to_read=int(getattr(settings, "query_max_rows", d.max_rows_to_read) or d.max_rows_to_read),
            max_bytes_to_read=int(getattr(settings, "query_max_bytes", d.max_bytes_to_read) or d.max_bytes_to_read),
            max_threads=int(getattr(settings, "query_max_threads", d.max_threads) or 0),
            max_concurrent=int(getattr(settings, "query_max_concurrent", d.max_concurrent) or 0),
            nice=int(getattr(settings, "query_nice", d.nice)),
            busy_share=float(getattr(settings, "query_busy_share", d.busy_share)),
        )

    def concurrent(self) -> int:
        return self.max_concurrent or _half_cores()


def _half_cores() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


def require_raw_range(tr: TimeRange, what: str) -> None:
    """Refuse a range longer than :data:`RAW_MAX_DAYS` for a query over raw rows."""
    if tr.end_ns - tr.start_ns > RAW_MAX_DAYS * 86400 * NS:
        raise InvalidParameter(f"time range longer than {RAW_MAX_DAYS} days for {what}: narrow it")


class BusyBudget:
    """A token bucket of query-seconds: refilled at ``share`` seconds per second up to ``burst_s``;
    each query spends its duration. ``wait_s()`` says how long the next query should wait."""

    def __init__(self, share: float, burst_s: float, clock: Callable[[], float] = time.monotonic):
        self.share, self.burst_s, self.clock = share, burst_s, clock
        self._tokens, self._at = burst_s, clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst_s, self._tokens + (now - self._at) * self.share)
        self._at = now

    def wait_s(self) -> float:
        if self.share <= 0:
            return 0.0
        with self._lock:
            self._refill()
            return 0.0 if self._tokens > 0 else -self._tokens / self.share

    def spend(self, seconds: float) -> None:
        if self.share <= 0:
            return
        with self._lock:
            self._refill()
            self._tokens -= seconds
