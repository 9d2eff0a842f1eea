"""The writer's checkpoint: how far the WAL is stored, and the batch being stored.

``{"done": [seg, off], "pending": [[seg, off], [seg, off]] | null, "cuts": [[seg, off], ...]}``,
replaced atomically. Before a batch is inserted its range is saved as *pending*; once every table
of it is stored, ``done`` moves to its end. A pending range found at start is replayed with
verification (``writer.py``). ``cuts``: where further batches stored side by side with the first
begin (each batch's id and deduplication tokens derive from its first record, so a replay must
cut the range where the first attempt did); absent in files of earlier versions: one batch.
"""

from __future__ import annotations

import json
import os

from .wal_format import Pos

__all__ = ["Checkpoint"]


class Checkpoint:
    def __init__(self, path: str):
        self.path = path

    def load(self) -> tuple[Pos, tuple[Pos, Pos] | None]:
        done, pending, _ = self.load_all()
        return done, pending

    def load_all(self) -> tuple[Pos, tuple[Pos, Pos] | None, list[Pos]]:
        """``done``, the pending range, and where batches after the range's first one begin."""
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
            done = Pos(*doc["done"])
            pend = doc.get("pending")
            cuts = [Pos(*c) for c in doc.get("cuts") or []] if pend else []
            return done, (Pos(*pend[0]), Pos(*pend[1])) if pend else None, cuts
        except FileNotFoundError:
            return Pos(0, 0), None, []

    def save(self, done: Pos, pending: tuple[Pos, Pos] | None = None, cuts: list[Pos] | None = None) -> None:
        tmp = self.path + ".tmp"
        doc: dict = {"done": list(done), "pending": [list(pending[0]), list(pending[1])] if pending else None}
        if pending and cuts:
            doc["cuts"] = [list(c) for c in cuts]
        body = json.dumps(doc)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
