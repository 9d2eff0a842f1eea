"""The writer: drains the WAL into the store in large batches.

A batch is the WAL range ``[start, end)``; its ``batch_id`` is derived from ``start`` (segment,
offset), so it is the same on every attempt. Before inserting, the range is recorded in the
checkpoint file as *pending*; after every table of the batch is stored, the checkpoint moves to
``end``. A retry, or a replay of a pending range after a crash, inserts with ``verify=True``, so a
batch that already reached the store is not written twice. Ranges after the checkpoint that were
never attempted get fresh ids. Store errors are retried with backoff while data waits on disk.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Any

from google.protobuf.message import DecodeError

from tracehouse.storage import StorageError, StorageUnavailable

from .convert import CONVERTERS, Batch, Limits, Stats, new_batch
from .decode import BY_CODE
from .metrics import Registry
from .redact import Redactor
from .wal import Pos, Record, Wal

__all__ = ["Writer", "batch_id_for"]

log = logging.getLogger("tracehouse.collector.writer")


def batch_id_for(wal_id: str, pos: Pos) -> int:
    """A batch id from the WAL's identity and the batch's first record: the same on every replay,
    and different for every collector and buffer directory writing to the same store."""
    h = hashlib.blake2b(f"{wal_id}:{pos[0]}:{pos[1]}".encode(), digest_size=8).digest()
    return (int.from_bytes(h, "big") & ((1 << 63) - 1)) | 1


class Checkpoint:
    """``{"done": [seg, off], "pending": [[seg, off], [seg, off]] | null}``, replaced atomically."""

    def __init__(self, path: str):
        self.path = path

    def load(self) -> tuple[Pos, tuple[Pos, Pos] | None]:
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
            done = tuple(doc["done"])
            pend = doc.get("pending")
            return done, (tuple(pend[0]), tuple(pend[1])) if pend else None  # type: ignore[return-value]
        except FileNotFoundError:
            return (0, 0), None

    def save(self, done: Pos, pending: tuple[Pos, Pos] | None = None) -> None:
        tmp = self.path + ".tmp"
        body = json.dumps({"done": list(done), "pending": [list(pending[0]), list(pending[1])] if pending else None})
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


@contextmanager
def _no_gc():
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


class Writer:
    def __init__(self, wal: Wal, store: Any, metrics: Registry, redactor: Redactor,
                 limits: Limits | None = None, max_items: int = 50_000, max_age: float = 1.0,
                 max_bytes: int = 32 << 20, grace: float = 10.0):
        self.wal = wal
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
        self.cursor: Pos = (0, 0)
        self.stored = {"traces": 0, "metrics": 0, "logs": 0}
        self.caught_up = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self.wal.closed:
            self.wal.open()
        self._thread = threading.Thread(target=self._run, name="tracehouse-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Drain what is buffered within the grace period; what is left stays in the WAL."""
        grace = self.grace if timeout is None else timeout
        self._deadline = time.monotonic() + grace
        self._stop.set()
        if self._thread is not None:
            self._thread.join(grace + 5)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _give_up(self) -> bool:
        return self._stop.is_set() and time.monotonic() >= self._deadline

    # -- main loop ----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            done, pending = self.checkpoint.load()
            self.cursor = done
            self.wal.release(done)
            if pending:
                log.info("replaying batch %s..%s with verification", pending[0], pending[1])
                recs = self._read_range(pending[0], pending[1])
                first = recs[0].pos if recs else pending[0]
                with _no_gc():  # as for every batch below
                    todo = self._columns(self._convert(recs, {}))
                    del recs
                    if not self._write(pending[0], pending[1], first, todo, verify=True):
                        return
            while not self._give_up():
                # The cyclic GC stays off while a batch is collected, converted and stored, and runs
                # between batches, once the batch is freed (a collection while it is alive would
                # scan its hundreds of thousands of containers: ~15% of the writer's time, measured
                # with py-spy), and on every retry of a failed insert (see _write).
                with _no_gc():
                    recs, batches = self._collect()
                    todo = self._columns(batches)
                    del batches
                    if recs:
                        first, end = recs[0].pos, recs[-1].end
                        del recs  # only the columns stay alive during the insert
                        if not self._write(self.cursor, end, first, todo, verify=False):
                            return
                        continue
                if self._stop.is_set():
                    return
        except Exception:
            log.exception("writer stopped by an unexpected error; data stays in the buffer")
            self.m.inc("tracehouse_collector_writer_errors_total", 1, kind="crash")

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

    def _collect(self) -> tuple[list[Record], dict[str, Batch]]:
        """Records from the cursor until the size threshold, the age threshold, or a stop; they are
        converted as they arrive, so conversion overlaps with waiting for the batch to fill."""
        recs: list[Record] = []
        batches: dict[str, Batch] = {}
        items = size = 0
        first = 0.0
        pos = self.cursor
        while True:
            pos = self.wal.normalize(pos)
            if self.wal.durable_end <= pos:
                if not recs:
                    self.caught_up.set()
                if self._stop.is_set():
                    return recs, batches
                if not recs:
                    self.wal.wait_durable(pos, 0.2)
                    if self.wal.durable_end <= pos:
                        return recs, batches  # idle: back to the loop (and the GC) now and then
                    continue
                wait = first + self.max_age - time.monotonic()
                if wait <= 0:
                    return recs, batches
                self.wal.wait_durable(pos, min(wait, 0.2))
                continue
            if self.caught_up.is_set():
                self.caught_up.clear()
            more = self.wal.read(pos, self.max_items - items, self.max_bytes - size)
            if not more:
                return recs, batches
            if not recs:
                first = time.monotonic()
            t0 = time.monotonic()
            self._convert(more, batches)
            self.m.observe("tracehouse_collector_writer_convert_seconds", time.monotonic() - t0)
            recs.extend(more)
            items += sum(r.items for r in more)
            size += sum(len(r.payload) for r in more)
            pos = more[-1].end
            if items >= self.max_items or size >= self.max_bytes or time.monotonic() - first >= self.max_age:
                return recs, batches

    def _convert(self, recs: list[Record], batches: dict[str, Batch]) -> dict[str, Batch]:
        st = Stats()
        for r in recs:
            sig = BY_CODE.get(r.kind)
            if sig is None:
                self.m.inc("tracehouse_collector_dropped_items_total", r.items, signal="unknown", reason="bad_record")
                continue
            table, fn = CONVERTERS[sig.name]
            b = batches.get(sig.name)
            if b is None:
                b = batches[sig.name] = new_batch(table)
            try:
                fn(sig.request.FromString(r.payload), b, self.red, self.lim, st)
            except (DecodeError, ValueError, TypeError, OverflowError) as e:
                log.error("dropping a WAL record at %s that does not convert: %s", r.pos, e)
                self.m.inc("tracehouse_collector_dropped_items_total", r.items, signal=sig.name,
                           reason="conversion_error")
        for what, n in st.truncated.items():
            self.m.inc("tracehouse_collector_truncated_total", n, what=what)
        return batches

    @staticmethod
    def _columns(batches: dict[str, Batch]) -> list[tuple[str, str, dict[str, list], int]]:
        todo = [(sig, b.table, b.columns(), len(b)) for sig, b in batches.items() if len(b)]
        batches.clear()
        return todo

    def _write(self, start: Pos, end: Pos, first: Pos, todo: list, verify: bool) -> bool:
        """Store one batch (the WAL range ``[start, end)`` whose first record is at ``first``);
        False when giving up at shutdown (the batch stays pending)."""
        t0 = time.monotonic()
        bid = batch_id_for(self.wal.ident, first)
        self.checkpoint.save(start, (start, end))
        delay = 0.2
        failures = 0
        while todo:
            sig, table, cols, n = todo[0]
            try:
                written = self.store.insert(table, cols, batch_id=bid, verify=verify)
            except (StorageError, ValueError) as e:
                verify = True  # the failed insert may have landed: check before writing again
                failures += 1
                kind = "unavailable" if isinstance(e, StorageUnavailable) else "rejected"
                self.m.inc("tracehouse_collector_writer_errors_total", 1, kind=kind)
                if kind == "rejected" and failures >= 8:
                    log.error("store rejected batch %x for %s %d times; dropping %d rows: %s",
                              bid, table, failures, n, e)
                    self.m.inc("tracehouse_collector_dropped_items_total", n, signal=sig,
                               reason="store_rejected")
                    todo.pop(0)
                    failures = 0
                    continue
                log.warning("insert into %s failed (%s); retrying in %.1fs", table, e, delay)
                gc.collect()  # the GC is off for this batch (see _run); other threads' garbage goes now
                if self._give_up():
                    return False
                if self._stop.is_set():
                    time.sleep(min(delay, 0.5))
                else:
                    self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            if verify and not written:  # already stored before a crash or a failed answer
                self.m.inc("tracehouse_collector_writer_batches_already_stored_total", 1, signal=sig)
            else:
                self.stored[sig] += n
                self.m.inc("tracehouse_collector_written_items_total", n, signal=sig)
                self.m.observe("tracehouse_collector_writer_batch_items", n, signal=sig)
            todo.pop(0)
            failures = 0
        self.checkpoint.save(end)
        self.cursor = end
        self.wal.release(end)
        self.wal.delete_before(end)
        self.m.inc("tracehouse_collector_writer_batches_total", 1)
        self.m.observe("tracehouse_collector_writer_batch_seconds", time.monotonic() - t0)
        return True
