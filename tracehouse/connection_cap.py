"""A cap on the connections the process's HTTP servers hold at once.

Measured before the cap: a ``tracehouse collector`` held by 15,000 idle connections (opened, nothing
sent, each kept until the request-head deadline) grew by 66 MB, and with the file descriptor limit
reached the embedded engine could open none of its part files, so nothing acknowledged was stored
until the connections went. With the cap, a connection past it is answered ``503`` with
``Retry-After`` (the OTLP exporters retry on it) and closed at once: descriptors stay for the WAL
and the store, and memory stays bounded. Past the cap every new client is refused, the legitimate
ones too (as with any connection limit); the clients already connected are served.
"""

from __future__ import annotations

import logging
from typing import Any

from .sparse import Sparse

__all__ = ["ConnectionCap", "default_limit", "BUSY"]

log = logging.getLogger("tracehouse.server")

_REASON = b"too many connections; retry in a while\n"
#: what a connection past the cap gets before it is closed
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_REASON), _REASON))


def default_limit(fd_limit: int | None = None) -> int:
    """10,000, or half the descriptor limit when that is lower, and at least 1,024 descriptors
    under the limit when it is large enough to leave them (the store's files, the WAL, pipes)."""
    if fd_limit is None:
        try:
            import resource

            fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, ValueError, OSError):
            fd_limit = 1024
    if fd_limit <= 0:  # RLIM_INFINITY (-1)
        return 10_000
    return max(1, min(10_000, max(fd_limit // 2, fd_limit - 1024)))


class ConnectionCap:
    """Counts the open connections of every server given it; ``admit`` says whether one more fits."""

    def __init__(self, limit: int, registry: Any = None, every: float = 10.0):
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._sparse = Sparse(every)
        self._count = None
        if registry is not None:
            from prometheus_client import Counter, Gauge

            self._count = Counter("tracehouse_connections_refused", "Connections answered 503 and closed at "
                                  "once because the servers held TRACEHOUSE_MAX_CONNECTIONS already.",
                                  registry=registry)
            Gauge("tracehouse_connections_open", "Connections the HTTP servers hold.",
                  registry=registry).set_function(lambda: self.open)

    def admit(self) -> bool:
        if self.open < self.limit:
            self.open += 1
            return True
        self.refused += 1
        if self._count is not None:
            self._count.inc()
        left_out = self._sparse.due()
        if left_out is not None:
            log.error("refusing connections: the servers hold %d, TRACEHOUSE_MAX_CONNECTIONS; %d more refused "
                      "since the last report", self.open, left_out)
        return False

    def release(self) -> None:
        self.open -= 1
