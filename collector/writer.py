"""The writer: drains the WAL into the store in large batches.

A batch is the WAL range ``[start, end)``; its ``batch_id`` is derived from ``start`` (segment,
offset), so it is the same on every attempt. Before inserting, the range is recorded in the
checkpoint file as *pending*; after every table of the batch is stored, the checkpoint moves to
``end``. A retry, or a replay of a pending range after a crash, inserts with ``verify=True``, so a
batch that already reached the store is not written twice, and the rollups a crash cut off are
completed (``Store.insert``). Ranges after the checkpoint that were never attempted get fresh ids.
Store errors are retried with backoff while data waits on disk; a part the store rejects eight
times goes to a dead-letter file (``deadletter.py``), never away.

When a backlog waits behind a batch with native requests and the decoders have two engine lanes
(``TRACEHOUSE_INGEST_LANES=2``), a second batch (what is durable at that moment, up to the same
limits) is stored beside it on the second lane: the range of both is pending together, with the
second batch's first position recorded as a cut, so a replay rebuilds the same two batches with
the same ids and deduplication tokens.

The units the writer composes read on their own: the checkpoint file (``checkpoint.py``), the
retry policy and its drop rule (``retry_policy.py``), the GC pause (``gc_control.py``).

Trace and log records go to the native decoders when there are (``native.py``, ``native_logs.py``:
the engine decodes and stores them; requests it cannot map come back and take the Python path);
everything else is converted here (``convert.py``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from tracehouse.storage import StorageError, StorageUnavailable, Store

from .checkpoint import Checkpoint
from .checkpoint_bounds import within_wal
from .convert import CONVERTERS, Batch, Limits, Stats, new_batch
from .deadletter import DeadLetters
from .decode import BY_CODE, SIGNALS
from .gc_control import collect, no_gc
from .keep_running import keep_running
from .metrics import Registry
from .parse_gate import ParseGate
from .redact import Redactor
from .retry_policy import MAX_REJECTIONS, Backoff, Retries
from .wal import DIGEST_BYTES, DIGESTED, Pos, Record, Wal

__all__ = ["Writer", "batch_id_for", "Checkpoint"]

log = logging.getLogger("tracehouse.collector.writer")


#: Items below which ``decoder = auto`` stores a native signal's batch through the Python path: a
#: native insert costs about 0.25 CPU-s whatever its size (the engine analyses the flattening
#: statement and every view's query), more than Python spends on a few thousand spans. Measured
#: (one process, CPU-s per insert, native against Python): 300 spans 0.28 / 0.06, 3,000 0.25 / 0.10,
#: 9,900 0.28 / 0.35, 30,000 0.38 / 0.75. A collector receiving a trickle no longer spends a
#: quarter of a core per second analysing SQL; a backlog's batches (100k) stay native.
NATIVE_MIN_ITEMS = 5_000


def batch_id_for(wal_id: str, pos: Pos, part: str = "") -> int:
    """A batch id from the WAL's identity and the batch's first record: the same on every replay,
    and different for every collector and buffer directory writing to the same store. ``part``
    names a further insert of the same batch (the requests the native decoder left to Python)."""
    h = hashlib.blake2b(f"{wal_id}:{pos[0]}:{pos[1]}{part}".encode(), digest_size=8).digest()
    return (int.from_bytes(h, "big") & ((1 << 63) - 1)) | 1


class Part:
    """One insert of a batch: a signal's rows (converted here), or the requests of a signal that its
    native decoder stores. ``positions`` are the WAL records behind it (for dead letters)."""

    __slots__ = ("sig", "table", "cols", "n", "batch_id", "positions", "payloads", "verify")

    def __init__(self, sig: str, table: str, cols: dict | None, n: int, batch_id: int, positions: list[Pos],
                 payloads: list[bytes] | None = None, verify: bool = False):
        self.sig, self.table, self.cols, self.n, self.batch_id = sig, table, cols, n, batch_id
        self.positions, self.payloads, self.verify = positions, payloads, verify


def native_part(parts: list[Part]) -> bool:
    return any(p.payloads is not None for p in parts)


def _message(r: Record):
    """The record's request without a copy of it (a view of the payload read from the WAL)."""
    return memoryview(r.payload)[DIGEST_BYTES:] if r.kind & DIGESTED else r.payload


@dataclass
class _Gathered:
    """A batch being read from the WAL: its records, the converted ones' columns, the native ones,
    and the counts its thresholds are checked against."""
    recs: list[Record] = field(default_factory=list)
    batches: dict[str, Batch] = field(default_factory=dict)
    native: list[Record] = field(default_factory=list)
    items: int = 0
    size: int = 0
    n_items: int = 0
    n_size: int = 0
    first: float = 0.0  # when its first record was read


class Writer:
    def __init__(self, wal: Wal, store: Store, metrics: Registry, redactor: Redactor,
                 limits: Limits | None = None, max_items: int = 50_000, max_age: float = 1.0,
                 max_bytes: int = 32 << 20, grace: float = 10.0, native: Any = None,
                 native_max_items: int = 100_000, native_max_bytes: int = 40 << 20, retry_delay: float = 0.2,
                 native_min_items: int = 0, parse_gate: ParseGate | None = None):
        self.wal = wal
        # the native decoders (a NativeTraces, a NativeLogs, or a list of them) by signal code,
        # opened when the writer starts
        decoders = native if isinstance(native, (list, tuple)) else [] if native is None else [native]
        self.natives = {SIGNALS[d.signal].code: d for d in decoders}
        self.native_max_items = native_max_items
        # a native signal's batch of fewer items is converted here (see ``NATIVE_MIN_ITEMS``)
        self.native_min_items = native_min_items
        self.retry_delay = retry_delay  # first wait after a failed insert; doubles up to 5 s
        self.native_max_bytes = native_max_bytes
        #: room for parsed requests, shared with the receivers' decode threads (``parse_gate``)
        self.parse_gate = parse_gate or ParseGate()
        self.dead = DeadLetters(os.path.join(wal.dir, "dead-letter"))
        self.store = store
        self.m = metrics
        self.red = redactor
        self.lim = limits or Limits()
        self.max_items = max_items
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.grace = grace
        self.checkpoint = Checkpoint(os.path.join(wal.dir, "checkpoint.json"))
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self.cursor = Pos(0, 0)
        #: the error the writer's loop last ended on, until it works again (``keep_running.py``)
        self.failing: str | None = None
        self.stored = {"traces": 0, "metrics": 0, "logs": 0}
        self._count_lock = threading.Lock()
        self.caught_up = threading.Event()
        self._beside: ThreadPoolExecutor | None = None  # stores a second batch beside the first

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self.wal.closed:
            self.wal.open()
        if self._beside is None and self._lanes() > 1:
            self._beside = ThreadPoolExecutor(1, thread_name_prefix="tracehouse-writer-lane")
        self._thread = threading.Thread(target=self._run, name="tracehouse-writer", daemon=True)
        self._thread.start()

    def _lanes(self) -> int:
        """Batches stored side by side: as many as every native decoder has lanes (one without)."""
        return min((getattr(d, "lanes", 1) for d in self.natives.values()), default=1)

    def stop(self, timeout: float | None = None) -> None:
        """Drain what is buffered within the grace period; what is left stays in the WAL."""
        grace = self.grace if timeout is None else timeout
        self._deadline = time.monotonic() + grace
        self._stop.set()
        if self._thread is not None:
            self._thread.join(grace + 5)
        if self._beside is not None and not self.running:
            self._beside.shutdown(wait=True)
            self._beside = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _give_up(self) -> bool:
        return self._stop.is_set() and time.monotonic() >= self._deadline

    # -- main loop ----------------------------------------------------------------------------
    def _open_native(self) -> bool:
        """Set the native decoders up (retried while the store is unreachable); a signal without
        one takes the Python path. False when stopping."""
        backoff = Backoff(0.2)
        waiting = list(self.natives)
        while waiting:
            decoder = self.natives[waiting[0]]
            try:
                decoder.open()
                waiting.pop(0)
                continue
            except (StorageUnavailable, OSError) as e:  # OSError: its schema file (a full disk)
                log.warning("native decoder waits for the store: %s", e)
            except StorageError as e:
                log.error("native %s decoder unavailable, converting in Python: %s", decoder.signal, e)
                del self.natives[waiting.pop(0)]
                continue
            if self._give_up() or self._stop.wait(backoff.next()):
                return not self._stop.is_set()
        return True

    def _run(self) -> None:
        if self._open_native():
            keep_running(self._drain, self._stop, self._give_up, self._failed, self.retry_delay)

    def _failed(self, e: BaseException) -> None:
        self.failing = f"{type(e).__name__}: {e}"
        self.m.inc("tracehouse_collector_writer_errors_total", 1, kind="crash")

    def _drain(self) -> None:
        """From the checkpoint: replay a pending range, then store batches until stopping."""
        done, pending, cuts = within_wal(self.checkpoint, self.wal)
        self.cursor = done
        self.wal.release(done)
        if pending:
            log.info("replaying batch %s..%s with verification", pending[0], pending[1])
            with no_gc():  # as for every batch below
                groups = self._replay_groups(pending, cuts)
                if not self._write(pending[0], pending[1], groups, verify=True):
                    return
        while not self._give_up():
            # The cyclic GC stays off while a batch is collected, converted and stored, and runs
            # between batches, once the batch is freed (a collection while it is alive would
            # scan its hundreds of thousands of containers: ~15% of the writer's time, measured
            # with py-spy), and on every retry of a failed insert (see _write).
            with no_gc():
                recs, batches, native = self._collect(self.cursor)
                if not recs:
                    self.failing = None  # caught up: the checkpoint and the WAL read again
                if recs:
                    first, end = recs[0].pos, recs[-1].end
                    groups = [(first, self._parts(batches, first, native))]
                    backlog = self.wal.pending_bytes() - sum(len(r.payload) for r in recs)
                    del recs, batches, native  # only the columns (and raw requests) stay alive
                    if native_part(groups[0][1]) and self._beside is not None \
                            and backlog >= self.native_max_bytes // 4:
                        # a backlog waits: a second batch is stored beside this one
                        recs, batches, native = self._collect(end, wait=False)
                        if recs:
                            groups.append((recs[0].pos, self._parts(batches, recs[0].pos, native)))
                            end = recs[-1].end
                        del recs, batches, native
                    if not self._write(self.cursor, end, groups, verify=False):
                        return
                    self.failing = None  # a batch stored, its checkpoint saved
                    continue
            if self._stop.is_set():
                return

    def _read_range(self, start: Pos, end: Pos) -> list[Record]:
        out: list[Record] = []
        pos = start
        while pos < end:
            recs = [r for r in self.wal.read(pos, 1 << 62, 1 << 62) if r.pos < end]
            if not recs:
                break
            out.extend(recs)
            pos = recs[-1].end
        return out

    def _is_native(self, r: Record) -> bool:
        return r.signal in self.natives

    def _replay_groups(self, pending: tuple[Pos, Pos], cuts: list[Pos]) -> list[tuple[Pos, list[Part]]]:
        """The batches of a pending range, cut where the first attempt cut it (their ids and
        tokens derive from their first records)."""
        recs = self._read_range(pending[0], pending[1])
        groups: list[tuple[Pos, list[Part]]] = []
        bounds = [pending[0], *cuts, pending[1]]
        for lo, hi in zip(bounds, bounds[1:]):
            mine = [r for r in recs if lo <= r.pos < hi]
            first = mine[0].pos if mine else lo
            native = [r for r in mine if self._is_native(r)]
            groups.append((first, self._parts(self._convert([r for r in mine if not self._is_native(r)], {}),
                                              first, native)))
        return groups

    def _collect(self, start: Pos, wait: bool = True) -> tuple[list[Record], dict[str, Batch], list[Record]]:
        """Records from ``start`` until a size threshold, the age threshold, or a stop (without
        ``wait``: until what is durable now is read, for a batch stored beside the one ending at
        ``start``). Records for Python are converted as they arrive, so conversion overlaps with
        waiting for the batch to fill; records for a native decoder are kept as they are (and
        count against their own, larger, thresholds)."""
        g = _Gathered()
        pos = start
        while True:
            pos = self.wal.normalize(pos)
            if self.wal.durable_end <= pos:
                if self._done_waiting(pos, g, wait):
                    return g.recs, g.batches, g.native
                continue
            if self.caught_up.is_set():
                self.caught_up.clear()
            more = self.wal.read(pos, max(1, min(self.max_items - g.items, self.native_max_items - g.n_items)),
                                 max(1, min(self.max_bytes - g.size, self.native_max_bytes - g.n_size)))
            if not more:
                return g.recs, g.batches, g.native
            if not g.recs:
                g.first = time.monotonic()
            self._take(more, g)
            pos = more[-1].end
            if (g.items >= self.max_items or g.size >= self.max_bytes or g.n_items >= self.native_max_items
                    or g.n_size >= self.native_max_bytes or time.monotonic() - g.first >= self.max_age):
                return g.recs, g.batches, g.native

    def _done_waiting(self, pos: Pos, g: _Gathered, wait: bool) -> bool:
        """Nothing durable past ``pos``: True when the batch ends here, else after a short wait
        for more (False: read again)."""
        if not wait:
            return True
        if not g.recs:
            self.caught_up.set()
        if self._stop.is_set():
            return True
        if not g.recs:
            self.wal.wait_durable(pos, 0.2)
            return self.wal.durable_end <= pos  # idle: back to the loop (and the GC) now and then
        # the batch closes max_age after its first record was read, or after that record became
        # durable if that is earlier: records that waited in the WAL while the previous batch was
        # stored do not wait a whole max_age again once caught up
        left = min(g.first + self.max_age - time.monotonic(), self.max_age - self.wal.oldest_age())
        if left <= 0:
            return True
        self.wal.wait_durable(pos, min(left, 0.2))
        return False

    def _take(self, more: list[Record], g: _Gathered) -> None:
        """Add records read to the batch: converted now when for Python, kept when native."""
        mine = [r for r in more if not self._is_native(r)]
        if mine:
            t0 = time.monotonic()
            self._convert(mine, g.batches)
            self.m.observe("tracehouse_collector_writer_convert_seconds", time.monotonic() - t0)
            g.items += sum(r.items for r in mine)
            g.size += sum(len(r.payload) for r in mine)
        for r in more:
            if self._is_native(r):
                g.native.append(r)
                g.n_items += r.items
                g.n_size += len(r.payload)
        g.recs.extend(more)

    def _convert(self, recs: list[Record], batches: dict[str, Batch]) -> dict[str, Batch]:
        st = Stats()
        for r in recs:
            sig = BY_CODE.get(r.signal)
            if sig is None:
                self.m.inc("tracehouse_collector_dropped_items_total", r.items, signal="unknown", reason="bad_record")
                continue
            table, fn = CONVERTERS[sig.name]
            b = batches.get(sig.name)
            if b is None:
                b = batches[sig.name] = new_batch(table)
            try:
                with self.parse_gate.parsing(len(r.message)):  # the parsed request is dropped when converted
                    fn(sig.request.FromString(r.message), b, self.red, self.lim, st)
                b.positions.append(r.pos)
            except (DecodeError, ValueError, TypeError, OverflowError) as e:
                log.error("dropping a WAL record at %s that does not convert: %s", r.pos, e)
                self.m.inc("tracehouse_collector_dropped_items_total", r.items, signal=sig.name,
                           reason="conversion_error")
        for what, n in st.truncated.items():
            self.m.inc("tracehouse_collector_truncated_total", n, what=what)
        return batches

    def _parts(self, batches: dict[str, Batch], first: Pos, native: list[Record]) -> list[Part]:
        """The inserts of one batch: the native decoders' first, then each converted signal."""
        bid = batch_id_for(self.wal.ident, first)
        parts = []
        for code, decoder in self.natives.items():
            recs = [r for r in native if r.signal == code]
            if not recs:
                continue
            n = sum(r.items for r in recs)
            if n < self.native_min_items:  # the same choice on a replay: it regroups the same records
                self.m.inc("tracehouse_collector_native_small_batches_total", 1, signal=decoder.signal)
                b = self._convert(recs, {}).get(decoder.signal)
                if b is not None and len(b):
                    parts.append(Part(decoder.signal, b.table, b.columns(), len(b), bid, b.positions))
                continue
            parts.append(Part(decoder.signal, decoder.table, None, n, bid, [r.pos for r in recs],
                              [_message(r) for r in recs]))
        for sig, b in batches.items():
            if len(b):
                parts.append(Part(sig, b.table, b.columns(), len(b), bid, b.positions))
        batches.clear()
        return parts

    def _write(self, start: Pos, end: Pos, groups: list[tuple[Pos, list[Part]]], verify: bool) -> bool:
        """Store the batches of the WAL range ``[start, end)``, each given by its first record's
        position and its inserts: side by side when there are two and lanes for them. False when
        giving up at shutdown (the range stays pending)."""
        t0 = time.monotonic()
        self.checkpoint.save(start, (start, end), [first for first, _ in groups[1:]])
        ok = True
        if len(groups) > 1 and self._beside is not None:
            self.m.inc("tracehouse_collector_writer_batches_side_by_side_total", 1)
            beside = self._beside.submit(self._write_parts, *groups[1], verify, 1)
            try:
                ok = self._write_parts(*groups[0], verify, 0)
            finally:
                ok = beside.result() and ok
        else:
            for first, parts in groups:
                ok = ok and self._write_parts(first, parts, verify, 0)
        if not ok:
            return False
        self.checkpoint.save(end)
        self.cursor = end
        self.wal.release(end)
        self.wal.delete_before(end)
        self.m.inc("tracehouse_collector_writer_batches_total", len(groups))
        self.m.observe("tracehouse_collector_writer_batch_seconds", time.monotonic() - t0)
        return True

    def _write_parts(self, first: Pos, parts: list[Part], verify: bool, lane: int) -> bool:
        """Store one batch's inserts (the batch whose first record is at ``first``), native ones
        on engine ``lane``; False when giving up at shutdown."""
        retries = Retries(self.retry_delay)
        while parts:
            p = parts[0]
            try:
                if p.payloads is not None:
                    more = self._store_native(p, first, verify or p.verify, lane)
                    parts[1:1] = more
                else:
                    self._store(p, verify or p.verify)
            except (StorageError, ValueError, TypeError, OverflowError) as e:
                # ValueError, TypeError, OverflowError: rows the store's client library cannot
                # encode (a conversion bug); a rejection like the store's own, never the writer's end
                verify = True  # the failed insert may have landed: check before writing again
                kind = retries.failed(e)
                self.m.inc("tracehouse_collector_writer_errors_total", 1, kind=kind)
                if p.payloads is not None and retries.python_instead(kind) and self._nothing_landed(p):
                    log.error("native decoder failed batch %x %d times (%s); converting it in Python",
                              p.batch_id, retries.failures, e)
                    self.m.inc("tracehouse_collector_native_fallback_batches_total", 1, signal=p.sig)
                    parts[0] = self._python_part(p, p.payloads, p.positions,
                                                 batch_id_for(self.wal.ident, first, ":python-all"))
                    continue
                if retries.give_up(kind):
                    split = p.payloads is None and len(p.positions) > 1 and self._nothing_landed(p)
                    singles = self._singles(p) if split else []
                    if singles:  # find the record(s) at fault; the rest of the batch is stored
                        log.error("store rejected batch %x for %s %d times (%s); storing its %d records one by one",
                                  p.batch_id, p.table, retries.failures, e, len(singles))
                        parts[0:1] = singles
                    else:
                        self._dead_letter(p, e)
                        parts.pop(0)
                    retries.next_part()
                    continue
                delay = retries.backoff.next()
                log.warning("insert into %s failed (%s); retrying in %.1fs", p.table, e, delay)
                collect()  # the GC is off for this batch (see _run); other threads' garbage goes now
                if self._give_up():
                    return False
                if self._stop.is_set():
                    time.sleep(min(delay, 0.5))
                else:
                    self._stop.wait(delay)
                continue
            parts.pop(0)
            retries.next_part()
        return True

    def _store(self, p: Part, verify: bool) -> None:
        written = self.store.insert(p.table, p.cols, batch_id=p.batch_id, verify=verify)  # type: ignore[arg-type]
        if verify and not written:  # already stored before a crash or a failed answer
            self.m.inc("tracehouse_collector_writer_batches_already_stored_total", 1, signal=p.sig)
        else:
            self._count(p.sig, p.n)

    def _count(self, sig: str, n: int) -> None:
        with self._count_lock:  # two batches may be stored side by side
            self.stored[sig] += n
        self.m.inc("tracehouse_collector_written_items_total", n, signal=sig)
        self.m.observe("tracehouse_collector_writer_batch_items", n, signal=sig)

    def _store_native(self, p: Part, first: Pos, verify: bool, lane: int = 0) -> list[Part]:
        """A signal's requests of a batch through the engine; returns the part the Python path
        stores (requests the engine cannot map), if any."""
        assert p.payloads is not None
        already = verify and self.store.batch_present(p.table, p.batch_id)
        res = self.natives[SIGNALS[p.sig].code].insert(p.payloads, p.batch_id, f"n{p.batch_id}", lane=lane)
        for what, n in res.truncated.items():
            self.m.inc("tracehouse_collector_truncated_total", n, what=what)
        if res.rewritten:
            self.m.inc("tracehouse_collector_native_rewritten_requests_total", res.rewritten, signal=p.sig)
        if already:
            self.m.inc("tracehouse_collector_writer_batches_already_stored_total", 1, signal=p.sig)
        else:
            self._count(p.sig, res.stored)
        if not res.fallback:
            return []
        self.m.inc("tracehouse_collector_native_python_requests_total", len(res.fallback), signal=p.sig)
        return [self._python_part(p, [p.payloads[i] for i in res.fallback], [p.positions[i] for i in res.fallback],
                                  batch_id_for(self.wal.ident, first, ":python"))]

    def _nothing_landed(self, p: Part) -> bool:
        """Whether none of the attempts at this part reached its table (so its rows may be stored
        under other ids, by the Python path or record by record, without writing anything twice)."""
        try:
            return not self.store.batch_present(p.table, p.batch_id)
        except StorageError:
            return False

    def _singles(self, p: Part) -> list[Part]:
        """A converted part as one part per WAL record, each under an id of its own (the same on
        a replay, which splits the same way), each to be retried and dead-lettered on its own."""
        out = []
        for pos in p.positions:
            got = self.wal.read(pos, 1, 1)
            if not got:
                continue
            b = self._convert(got[:1], {}).get(p.sig)
            if b is not None and len(b):
                out.append(Part(p.sig, p.table, b.columns(), len(b), batch_id_for(self.wal.ident, pos, ":single"),
                                [pos], verify=True))
        return out

    def _python_part(self, p: Part, payloads: list[bytes], positions: list[Pos], batch_id: int) -> Part:
        st = Stats()
        b = new_batch(p.table)
        for msg in payloads:
            with self.parse_gate.parsing(len(msg)):
                CONVERTERS[p.sig][1](SIGNALS[p.sig].request.FromString(bytes(msg)), b, self.red, self.lim, st)
        for what, n in st.truncated.items():
            self.m.inc("tracehouse_collector_truncated_total", n, what=what)
        return Part(p.sig, p.table, b.columns(), len(b), batch_id, positions, verify=p.verify)

    def _dead_letter(self, p: Part, e: BaseException) -> None:
        recs = []
        for pos in p.positions:
            got = self.wal.read(pos, 1, 1)
            if got:
                recs.append(got[0])
        path = self.dead.keep(recs, p.batch_id, p.sig)
        items = sum(r.items for r in recs)
        log.error("store rejected batch %x for %s %d times; its %d records (%d items) are kept in %s: %s",
                  p.batch_id, p.table, MAX_REJECTIONS, len(recs), items, path, e)
        self.m.inc("tracehouse_collector_dead_letter_items_total", items, signal=p.sig)
        self.m.inc("tracehouse_collector_dead_letter_batches_total", 1, signal=p.sig)
