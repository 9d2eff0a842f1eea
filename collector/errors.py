"""The exceptions of ``tracehouse.collector``: one family, rooted at :class:`CollectorError`.

::

    CollectorError       anything the collector refuses or fails at on its own
     ├── BadRequest      a request body that cannot be accepted; ``status`` is the HTTP status
     │                   to answer (decode.py, zipkin.py)
     ├── ClientGone      the client disconnected before its request's body ended (ingest.py)
     ├── WalClosed       the durable buffer is closed (shutting down); the record was not written
     └── WalLocked       another process uses the buffer directory (also RuntimeError)

Each class stays in the module that raises it; this module holds the root. Storage failures are not
wrapped: the writer sees :class:`~tracehouse.storage.StorageError` and keeps the data in the buffer.
"""

from __future__ import annotations

__all__ = ["CollectorError"]


class CollectorError(Exception):
    """The root of every exception the collector raises on its own."""
