"""``http.server.request.duration`` without the SDK on the request path, exemplars included.

:meth:`DurationHistogram.record` bumps plain per-thread bucket counters (one list per
method/route/status/error series and thread: no lock, no ``Measurement``, no attribute hashing)
and, for a sampled request, keeps its (duration, time, trace id, span id) as the exemplar of
its bucket. :meth:`~DurationHistogram.flush` runs at each metric collection (from an observable
callback, which the SDK calls before it reads its storages) and adds to the SDK histogram's
own aggregations what each of them has not seen yet, so views, temporality, cardinality limits,
readers and exemplar reservoirs stay the SDK's. Counts are cumulative per thread and diffed per
SDK stream, so a flush that reads a cell mid-update only shifts a fraction of a request to the
next collection. Limitation: under DELTA temporality min/max are those of the process lifetime.

The SDK's private state is reached only through :mod:`.sdk_private`; with an SDK release it
does not know, or a view with another aggregation, every request goes through the public
``Histogram.record`` (with the span's context, so exemplars still follow the SDK's filter).
"""

from __future__ import annotations

import os
import threading
import weakref
from bisect import bisect_left
from time import time_ns

from tracehouse.agent import sdk_private

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_N = len(DURATION_BUCKETS) + 1
_SUM, _MIN, _MAX, _EX = _N, _N + 1, _N + 2, _N + 3
_MAX_SERIES = 2000  # the SDK's default cardinality limit
_OVERFLOW = ("", None, 0, None)


def attributes_of(method: str, route: str | None, status: int, error_type: str | None) -> dict:
    attrs = {"http.request.method": method, "http.response.status_code": status}
    if route:
        attrs["http.route"] = route
    if error_type is not None:
        attrs["error.type"] = error_type
    return attrs


class DurationHistogram:
    def __init__(self, instrument, exemplars: str = "trace_based"):
        self.instrument = instrument
        self.exemplars = exemplars  # trace_based | always_on | always_off
        self.streams = sdk_private.HistogramStreams.of(instrument, DURATION_BUCKETS)
        self.direct = self.streams is None  # True: plain Histogram.record (fallback)
        self._reset()
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def after_in_child():
                h = ref()
                if h is not None:
                    h._reset()

            os.register_at_fork(after_in_child=after_in_child)

    def _reset(self) -> None:
        self._local = threading.local()
        self._stores: list[tuple[threading.Thread, dict]] = []
        self._retired: dict[tuple, list] = {}
        self._attrs: dict[tuple, dict] = {_OVERFLOW: {"otel.metric.overflow": True}}
        self._sent: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # registration of threads/series and flushes only
        self._flush_lock = threading.Lock()

    def record(self, seconds: float, method: str, route: str | None, status: int, error_type: str | None,
               span_context=None) -> None:
        if self.direct:
            self._record_public(seconds, attributes_of(method, route, status, error_type), span_context)
            return
        try:
            cells = self._local.cells
        except AttributeError:
            cells = self._register_thread()
        key = (method, route, status, error_type)
        cell = cells.get(key)
        if cell is None:
            cell = self._new_cell(cells, key)
        b = bisect_left(DURATION_BUCKETS, seconds)
        cell[b] += 1
        cell[_SUM] += seconds
        if seconds < cell[_MIN]:
            cell[_MIN] = seconds
        if seconds > cell[_MAX]:
            cell[_MAX] = seconds
        if span_context is not None and self.exemplars != "always_off" and \
                (span_context.trace_flags & 1 or self.exemplars == "always_on"):
            cell[_EX][b] = (seconds, time_ns(), span_context.trace_id, span_context.span_id)

    def _record_public(self, seconds: float, attrs: dict, span_context) -> None:
        ctx = None
        if span_context is not None:
            ctx = sdk_private.exemplar_context(span_context.trace_id, span_context.span_id) \
                if span_context.trace_flags & 1 else None
        if ctx is not None:
            self.instrument.record(seconds, attrs, context=ctx)
        else:
            self.instrument.record(seconds, attrs)

    def _register_thread(self) -> dict:
        cells: dict = {}
        with self._lock:
            self._stores.append((threading.current_thread(), cells))
        self._local.cells = cells
        return cells

    def _new_cell(self, cells: dict, key: tuple) -> list:
        if key not in self._attrs:
            with self._lock:
                if key not in self._attrs:
                    if len(self._attrs) > _MAX_SERIES:
                        key = _OVERFLOW
                    else:
                        self._attrs[key] = attributes_of(*key)
            cell = cells.get(key)
            if cell is not None:
                return cell
        cell = cells[key] = [0] * _N + [0.0, float("inf"), float("-inf"), [None] * _N]
        return cell

    def totals(self) -> tuple[dict[tuple, list], dict[tuple, list]]:
        """Cumulative cells per series summed over threads (dead threads' cells folded in), and
        the exemplars recorded since the last call, per series."""
        out: dict[tuple, list] = {}
        exemplars: dict[tuple, list] = {}
        with self._lock:
            live = []
            for thread, cells in self._stores:
                _take_exemplars(exemplars, cells)
                if thread.is_alive():
                    live.append((thread, cells))
                else:
                    _merge(self._retired, cells)
            self._stores = live
            _merge(out, self._retired)
            for _, cells in live:
                _merge(out, cells)
        return out, exemplars

    def flush(self) -> None:
        """Add what changed since the last flush to each SDK aggregation of the instrument."""
        if self.direct:
            return
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        totals, exemplars = self.totals()
        if not totals:
            return
        streams = self.streams
        if not streams.still_plain(DURATION_BUCKETS):
            self.direct = True  # e.g. a reader added later with another aggregation
            return
        matches = streams.matches()
        for key, cell in totals.items():
            attrs = self._attrs.get(key) or attributes_of(*key)
            if all(streams.find(m, attrs) is None for m in matches):
                # a new series: the SDK builds its aggregation from one real observation (the minimum)
                self.instrument.record(cell[_MIN], attrs)
                seed = [0] * _N
                seed[bisect_left(DURATION_BUCKETS, cell[_MIN])] = 1
                for m in matches:
                    self._sent.setdefault(m, {})[key] = (1, tuple(seed), cell[_MIN])
            for match in matches:
                sent = self._sent.get(match)
                if sent is None:
                    sent = self._sent[match] = {}
                before = sent.get(key)
                count = sum(cell[:_N])
                if before is not None and before[0] == count:
                    continue
                agg = streams.find(match, attrs)
                if agg is None:
                    continue  # a reader added after this series started: it sees the series from the next one
                buckets = [cell[i] - (before[1][i] if before else 0) for i in range(_N)]
                streams.add(agg, buckets, cell[_SUM] - (before[2] if before else 0.0), cell[_MIN], cell[_MAX],
                            exemplars.get(key, []))
                sent[key] = (count, tuple(cell[:_N]), cell[_SUM])


def _take_exemplars(into: dict, cells: dict) -> None:
    for key, cell in list(cells.items()):
        ex = cell[_EX]
        if any(e is not None for e in ex):
            cell[_EX] = [None] * _N  # the owning thread may still write into the old list: one lost at most
            into.setdefault(key, []).extend(e for e in ex if e is not None)


def _merge(into: dict, cells: dict) -> None:
    for key, cell in list(cells.items()):
        cell = list(cell)  # a stable copy: the owning thread may be writing
        have = into.get(key)
        if have is None:
            into[key] = cell
            continue
        for i in range(_N + 1):
            have[i] += cell[i]
        have[_MIN] = min(have[_MIN], cell[_MIN])
        have[_MAX] = max(have[_MAX], cell[_MAX])
