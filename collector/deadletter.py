"""Dead letters: acknowledged records the store keeps rejecting are kept on disk, never dropped.

After the writer's last attempt at a batch part, the WAL records behind it are written, in the
WAL's own record format (``wal.encode``), to ``<buffer dir>/dead-letter/<time>-<batch id>-<signal>.wal``
and fsynced before the WAL space is released. ``tracehouse_collector_dead_letter_*`` in
``/metrics`` count them; the files stay until an operator deals with them (``records()`` reads one
back, ``requeue()`` appends its records to a WAL again, e.g. once the store's problem is fixed).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

from .wal import Record, Wal, encode, scan

__all__ = ["DeadLetters", "records", "requeue"]


class DeadLetters:
    def __init__(self, directory: str):
        self.dir = directory
        self._lock = threading.Lock()

    def keep(self, recs: list[Record], batch_id: int, signal: str) -> str:
        """Write these records to a new dead-letter file (durably); returns its path."""
        os.makedirs(self.dir, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{batch_id:016x}-{signal}.wal"
        path = os.path.join(self.dir, name)
        tmp = path + ".tmp"
        with self._lock:
            try:
                with open(tmp, "wb") as f:
                    for r in recs:
                        f.write(encode(r.kind, r.items, r.payload))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except OSError:  # a full disk: the records stay in the WAL; the writer tries again
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return path

    def files(self) -> list[str]:
        try:
            names = sorted(n for n in os.listdir(self.dir) if n.endswith(".wal"))
        except FileNotFoundError:
            return []
        return [os.path.join(self.dir, n) for n in names]

    def size(self) -> int:
        total = 0
        for p in self.files():
            try:
                total += os.path.getsize(p)
            except OSError:
                pass
        return total


def records(path: str) -> Iterator[tuple[int, int, bytes]]:
    """(kind, items, payload) of every record in a dead-letter file."""
    with open(path, "rb") as f:
        data = f.read()
    found, _ = scan(data)
    for _, end, kind, items, at in found:
        yield kind, items, data[at:end]


def requeue(path: str, wal: Wal, timeout: float = 30.0) -> int:
    """Append a dead-letter file's records to ``wal`` (durably), then delete the file; returns
    the records requeued."""
    done = threading.Semaphore(0)
    errors: list[BaseException] = []

    def cb(_pos, err):
        if err is not None:
            errors.append(err)
        done.release()

    n = 0
    for kind, items, payload in records(path):
        wal.append(kind, items, payload, cb)
        n += 1
    for _ in range(n):
        if not done.acquire(timeout=timeout):
            raise TimeoutError("the WAL did not make the requeued records durable")
    if errors:
        raise errors[0]
    os.unlink(path)
    return n
