"""The writer's checkpoint: how far the WAL is stored, and the batch being stored.

``{"done": [seg, off], "pending": [[seg, off], [seg, off]] | null}``, replaced atomically. Before a
batch is inserted its range is saved as *pending*; once every table of it is stored, ``done``
moves to its end. A pending range found at start is replayed with verification (``writer.py``).
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
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
            done = Pos(*doc["done"])
            pend = doc.get("pending")
            return done, (Pos(*pend[0]), Pos(*pend[1])) if pend else None
        except FileNotFoundError:
            return Pos(0, 0), None

    def save(self, done: Pos, pending: tuple[Pos, Pos] | None = None) -> None:
        tmp = self.path + ".tmp"
        body = json.dumps({"done": list(done), "pending": [list(pending[0]), list(pending[1])] if pending else None})
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
