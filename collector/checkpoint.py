"""The writer's checkpoint: how far the WAL is stored, and the batch being stored.

``{"done": [seg, off], "pending": [[seg, off], [seg, off]] | null, "cuts": [[seg, off], ...]}``,
replaced atomically. Before a batch is inserted its range is saved as *pending*; once every table
of it is stored, ``done`` moves to its end. A pending range found at start is replayed with
verification (``writer.py``). ``cuts``: where further batches stored side by side with the first
begin (each batch's id and deduplication tokens derive from its first record, so a replay must
cut the range where the first attempt did); absent in files of earlier versions: one batch.

Each state is written twice: to ``checkpoint.json.copy``, then to ``checkpoint.json``. A file
damaged on disk (cut short, zero-filled, garbage) is replaced by the other: the copy is never
behind the state the writer acted on (a crash between the two writes leaves the copy one pending
range ahead, which is replayed with verification: harmless). Before, a damaged checkpoint made the
writer store the buffer again from its first record under a new identity, and every span of the
first segment stored before was stored twice (``checkpoint_bounds.py`` still does that when both
files are damaged). A file also carries ``crc``, the CRC-32 of the rest of it: damage that leaves
valid JSON (a digit changed) is caught too, as is a position that is not two whole numbers; files
of earlier versions have no ``crc`` and are read as they are.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib

from .wal_format import Pos

__all__ = ["Checkpoint", "DAMAGED"]

log = logging.getLogger("tracehouse.collector.writer")

#: what reading a checkpoint file that is not one raises (not JSON, or not its shape)
DAMAGED = (ValueError, TypeError, KeyError, AttributeError, IndexError)


class Checkpoint:
    def __init__(self, path: str):
        self.path = path
        self.copy = path + ".copy"

    def load(self) -> tuple[Pos, tuple[Pos, Pos] | None]:
        done, pending, _ = self.load_all()
        return done, pending

    def load_all(self) -> tuple[Pos, tuple[Pos, Pos] | None, list[Pos]]:
        """``done``, the pending range, and where batches after the range's first one begin; from
        the copy when the file is damaged (``DAMAGED`` raised when both are)."""
        try:
            return _read(self.path)
        except FileNotFoundError:
            return self._copy_of_missing()
        except DAMAGED as e:
            try:
                got = _read(self.copy)
            except (OSError, *DAMAGED):
                raise e from None
            shutil.copyfile(self.path, self.path + ".damaged")
            log.error("the checkpoint %s cannot be read (%s: %s); it is kept as %s.damaged, and its copy %s is used",
                      self.path, type(e).__name__, e, self.path, self.copy)
            self.save(got[0], got[1], got[2])
            return got

    def _copy_of_missing(self) -> tuple[Pos, tuple[Pos, Pos] | None, list[Pos]]:
        """No checkpoint file: the start of the buffer, unless its copy survived (the file deleted by
        hand, or lost with its directory entry): then the copy, so nothing stored is stored again."""
        try:
            got = _read(self.copy)
        except FileNotFoundError:  # neither: a fresh buffer
            return Pos(0, 0), None, []
        except (OSError, *DAMAGED) as e:
            log.error("the checkpoint %s is missing and its copy cannot be read (%s: %s); the buffer is stored "
                      "from its first record", self.path, type(e).__name__, e)
            return Pos(0, 0), None, []
        log.error("the checkpoint %s is missing; its copy %s is used", self.path, self.copy)
        self.save(got[0], got[1], got[2])
        return got

    def save(self, done: Pos, pending: tuple[Pos, Pos] | None = None, cuts: list[Pos] | None = None) -> None:
        tmp = self.path + ".tmp"
        doc: dict = {"done": list(done), "pending": [list(pending[0]), list(pending[1])] if pending else None}
        if pending and cuts:
            doc["cuts"] = [list(c) for c in cuts]
        doc["crc"] = _crc(doc)
        body = json.dumps(doc)
        for path in (self.copy, self.path):  # the copy first: see the module's docstring
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)


def _crc(doc: dict) -> int:
    return zlib.crc32(json.dumps({k: v for k, v in doc.items() if k != "crc"}, sort_keys=True).encode())


def _pos(v: object) -> Pos:
    """A position read back: two whole numbers, not negative (ValueError otherwise)."""
    if not isinstance(v, list) or len(v) != 2 or not all(type(x) is int and x >= 0 for x in v):
        raise ValueError(f"not a position: {str(v)[:80]}")
    return Pos(*v)


def _read(path: str) -> tuple[Pos, tuple[Pos, Pos] | None, list[Pos]]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if "crc" in doc and doc["crc"] != _crc(doc):
        raise ValueError("its CRC does not match its content")
    done = _pos(doc["done"])
    pend = doc.get("pending")
    cuts = [_pos(c) for c in doc.get("cuts") or []] if pend else []
    return done, (_pos(pend[0]), _pos(pend[1])) if pend else None, cuts
