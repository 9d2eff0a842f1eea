"""Observable instruments fed from one cached reading per collection cycle."""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry.metrics import CallbackOptions, Observation

from tracehouse.agent import errors


class CachedReading:
    """Call ``read()`` at most once per ``ttl`` seconds; errors are swallowed (empty reading)."""

    DEFAULT_TTL = 1.0

    def __init__(self, name: str, read: Callable[[], dict], ttl: float | None = None):
        self.name = name
        self._read = read
        self._ttl = self.DEFAULT_TTL if ttl is None else ttl
        self._at = -1e18
        self._value: dict = {}

    def get(self) -> dict:
        now = time.monotonic()
        if now - self._at >= self._ttl:
            try:
                self._value = self._read()
            except Exception as exc:
                errors.swallow(f"read {self.name} metrics", exc)
                self._value = {}
            self._at = now
        return self._value


def observe(reading: CachedReading, series: list[tuple[str, dict]]):
    """A callback yielding one observation per (key, attributes) present in the reading."""

    def callback(options: CallbackOptions):
        values = reading.get()
        return [Observation(values[k], attrs) for k, attrs in series if k in values]

    return callback


def register(meter, reading: CachedReading, spec: list[tuple[str, str, str, str, list[tuple[str, dict]]]]):
    """``spec``: (kind, instrument name, unit, description, series) with kind counter|updown|gauge."""
    makers = {"counter": meter.create_observable_counter,
              "updown": meter.create_observable_up_down_counter,
              "gauge": meter.create_observable_gauge}
    return [makers[kind](name, callbacks=[observe(reading, series)], unit=unit, description=desc)
            for kind, name, unit, desc, series in spec]
