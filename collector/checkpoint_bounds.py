"""A writer's checkpoint that points past the end of the WAL it belongs to, or cannot be read.

The checkpoint only ever moves to positions the WAL made durable, so one past the end of the log
as it was opened means the segments it counted are gone (deleted by hand to drop a backlog, lost
with a disk, or a ``checkpoint.json`` from another buffer directory). Before, the writer waited at
that position: everything acknowledged afterwards stayed in the WAL, never stored, uncounted by the
buffer's cap (which counts from the checkpoint), and without a log line; and where the new segment
reused the old one's number, it read from the middle of a record. Now the writer says so in the
log and stores what is appended from the end of the log at open on (what lies before it, the
checkpoint counts as stored, as always), under a new WAL identity (batch ids derive from it and from
positions, which new records may reuse: the store's deduplication would take them for replays).
"""

from __future__ import annotations

import logging
import os

from .checkpoint import DAMAGED, Checkpoint
from .wal import Pos, Wal

__all__ = ["within_wal"]

log = logging.getLogger("tracehouse.collector.writer")


def within_wal(checkpoint: Checkpoint, wal: Wal) -> tuple[Pos, tuple[Pos, Pos] | None, list[Pos]]:
    """The checkpoint (``Checkpoint.load_all``), moved back to the end the WAL had when opened
    when it points past it. Checked once per opening of the WAL (later writers on the same log, or
    the writer starting again after an error, find the checkpoint moved past that end by storing)."""
    try:
        done, pending, cuts = checkpoint.load_all()
    except DAMAGED as e:  # not JSON, or not its shape, and its copy neither
        return _unreadable(checkpoint, wal, e)
    last = pending[1] if pending else done
    start = wal.opened_end
    if start is None or max(done, last) <= start:  # checked already (a writer before), or within
        wal.opened_end = None
        return done, pending, cuts
    log.error("the checkpoint %s points past the end of the buffer %s: the WAL segments it counted are gone; "
              "storing what is appended from %s on, under a new WAL identity", max(done, last), start, start)
    wal.renew_identity()
    checkpoint.save(start)
    wal.opened_end = None
    return start, None, []


def _unreadable(checkpoint: Checkpoint, wal: Wal, e: BaseException) -> tuple[Pos, None, list[Pos]]:
    """A checkpoint file that is not one, nor its copy (damaged on disk; each is only ever replaced whole): kept
    aside, and the WAL stored from its first record, under a new identity (a batch from a position
    stored before would otherwise carry that batch's deduplication token, and the store would drop
    it whole). Segments are deleted once stored, so only the stored part of the first one is
    stored again."""
    segments = wal.segments()
    start = Pos(segments[0], 0) if segments else Pos(0, 0)
    damaged = checkpoint.path + ".damaged"
    log.error("the checkpoint %s cannot be read (%s: %s); it is kept as %s, and the buffer is stored from its first "
              "record %s under a new WAL identity (what of its first segment was stored before is stored again)",
              checkpoint.path, type(e).__name__, e, damaged, start)
    os.replace(checkpoint.path, damaged)
    wal.renew_identity()
    checkpoint.save(start)
    wal.opened_end = None
    return start, None, []
