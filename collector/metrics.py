"""The collector's own metrics, exposed in the Prometheus text format (version 0.0.4).

Hand-written rather than prometheus_client: the collector needs counters, a few gauges read at
scrape time and sum/count summaries; that is a hundred lines, against a new dependency with its
own global registry (which makes several collectors in one test process awkward).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

__all__ = ["Registry", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

HELP = {
    "tracehouse_collector_requests_total": ("counter", "OTLP requests by signal and HTTP status."),
    "tracehouse_collector_received_items_total": ("counter", "Items (spans, data points, log records) received."),
    "tracehouse_collector_accepted_items_total": ("counter", "Items made durable and acknowledged."),
    "tracehouse_collector_rejected_items_total": ("counter", "Items refused, by reason."),
    "tracehouse_collector_rejected_requests_total": ("counter", "Requests refused as a whole, by reason."),
    "tracehouse_collector_dropped_items_total": ("counter", "Acknowledged items the writer could not store."),
    "tracehouse_collector_truncated_total": ("counter", "Attributes, values and names cut to the limits."),
    "tracehouse_collector_written_items_total": ("counter", "Items written to the store."),
    "tracehouse_collector_writer_batches_total": ("counter", "Batches written to the store."),
    "tracehouse_collector_writer_errors_total": ("counter", "Failed inserts, by kind."),
    "tracehouse_collector_writer_batches_already_stored_total": (
        "counter", "Replayed or retried batches the store already had (not written twice)."),
    "tracehouse_collector_writer_batch_items": ("summary", "Rows per insert."),
    "tracehouse_collector_writer_batch_seconds": ("summary", "Time to store one converted batch (all its inserts and retries)."),
    "tracehouse_collector_writer_convert_seconds": ("summary", "Time to convert one batch to columns."),
    "tracehouse_collector_duplicate_requests_total": (
        "counter", "Requests whose content was acknowledged before (client retries): answered, not stored again."),
    "tracehouse_collector_duplicate_items_total": ("counter", "Items in those requests."),
    "tracehouse_collector_dead_letter_items_total": (
        "counter", "Acknowledged items the store kept rejecting, kept in dead-letter files."),
    "tracehouse_collector_dead_letter_batches_total": ("counter", "Batch parts written to dead-letter files."),
    "tracehouse_collector_dead_letter_bytes": ("gauge", "Size of the dead-letter files on disk."),
    "tracehouse_collector_native_python_requests_total": (
        "counter", "Trace requests the native decoder left to the Python path (values it does not format)."),
    "tracehouse_collector_native_fallback_batches_total": (
        "counter", "Batches the native decoder failed repeatedly, stored through the Python path."),
    "tracehouse_collector_buffer_bytes": ("gauge", "Bytes in the durable buffer not yet stored."),
    "tracehouse_collector_buffer_max_bytes": ("gauge", "Cap of the durable buffer."),
    "tracehouse_collector_buffer_age_seconds": ("gauge", "Age of the oldest data not yet stored (writer lag)."),
    "tracehouse_collector_wal_fsyncs_total": ("gauge", "Group commits (fsyncs) of the WAL."),
    "tracehouse_collector_wal_records_total": ("gauge", "Records appended to the WAL."),
}


def _labels(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple, float]] = {}
        self._summaries: dict[str, dict[tuple, list[float]]] = {}
        self._gauges: dict[str, Callable[[], float]] = {}

    def inc(self, name: str, n: float = 1, **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            d = self._values.setdefault(name, {})
            d[key] = d.get(key, 0) + n

    def observe(self, name: str, v: float, **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            s = self._summaries.setdefault(name, {}).setdefault(key, [0.0, 0.0])
            s[0] += v
            s[1] += 1

    def gauge(self, name: str, fn: Callable[[], float]) -> None:
        self._gauges[name] = fn

    def get(self, name: str, **labels: str) -> float:
        """The sum of the series of ``name`` that carry the given labels."""
        want = set(labels.items())
        with self._lock:
            return sum(v for k, v in self._values.get(name, {}).items() if want <= set(k))

    def render(self) -> bytes:
        lines: list[str] = []

        def head(name: str, default: str) -> None:
            kind, text = HELP.get(name, (default, name))
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")

        def lbl(key: tuple, extra: str = "") -> str:
            parts = [f'{k}="{_esc(str(v))}"' for k, v in key]
            return "{" + ",".join(parts) + "}" if parts else ""

        with self._lock:
            values = {k: dict(v) for k, v in self._values.items()}
            summaries = {k: {kk: list(vv) for kk, vv in v.items()} for k, v in self._summaries.items()}
        for name in sorted(values):
            head(name, "counter")
            for key, v in sorted(values[name].items()):
                lines.append(f"{name}{lbl(key)} {_fmt(v)}")
        for name in sorted(summaries):
            head(name, "summary")
            for key, (total, count) in sorted(summaries[name].items()):
                lines.append(f"{name}_sum{lbl(key)} {_fmt(total)}")
                lines.append(f"{name}_count{lbl(key)} {_fmt(count)}")
        for name, fn in sorted(self._gauges.items()):
            head(name, "gauge")
            try:
                lines.append(f"{name} {_fmt(float(fn()))}")
            except Exception:  # a gauge that cannot be read is left out, never a failed scrape
                lines.pop()
                lines.pop()
        return ("\n".join(lines) + "\n").encode()
