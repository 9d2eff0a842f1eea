"""Per-service token buckets: ``rate`` items per second, bursts up to ``burst`` items.

A request is admitted when every service in it has tokens for its items (a request larger than
the burst needs a full bucket, and leaves the balance negative, so it is not refused for ever);
a refused request learns how long until it would be admitted (its Retry-After).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic,
                 max_services: int = 10_000):
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate, 1.0))
        self.clock = clock
        self.max_services = max_services
        self._buckets: dict[str, list[float]] = {}  # service → [tokens, last refill]
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def admit(self, per_service: dict[str, int]) -> float:
        """0 when admitted (tokens taken); otherwise seconds to wait before retrying."""
        if self.rate <= 0 or not per_service:
            return 0.0
        now = self.clock()
        with self._lock:
            wait = 0.0
            buckets = []
            for svc in per_service:
                b = self._buckets.get(svc)
                if b is None:
                    if len(self._buckets) >= self.max_services:
                        self._make_room(now)
                    b = self._buckets[svc] = [self.burst, now]
                b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
                b[1] = now
                need = min(float(per_service[svc]), self.burst)
                if b[0] < need:
                    wait = max(wait, (need - b[0]) / self.rate)
                buckets.append((b, per_service[svc]))
            if wait > 0:
                return max(wait, 1e-3)
            for b, n in buckets:
                b[0] -= n
            return 0.0

    def _make_room(self, now: float) -> None:
        """Bounded memory under a flood of service names, without lifting the limit of the services
        being throttled: the fullest buckets go first (one refilled to the burst holds nothing a new
        bucket would not), down to half the cap, so the sweep runs once per ``max_services / 2`` new
        names. Clearing every bucket, as before, let one request naming ``max_services`` new
        services reset the empty buckets of everyone else."""
        level = {svc: b[0] + (now - b[1]) * self.rate for svc, b in self._buckets.items()}
        fullest = sorted(level, key=level.__getitem__, reverse=True)
        drop = max(len(fullest) - self.max_services // 2, sum(v >= self.burst for v in level.values()))
        for svc in fullest[:drop]:
            del self._buckets[svc]

    @staticmethod
    def retry_after(wait: float) -> int:
        return max(1, math.ceil(wait))
