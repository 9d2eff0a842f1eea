"""One log line per interval, not thousands a second, while the process has no file descriptor left.

When ``accept()`` fails for want of a descriptor (EMFILE: enough idle or slow connections reach the
process's limit), CPython 3.11's event loop reports it once per accept attempt, and it makes up to
the listen backlog (uvicorn: 2,048) attempts each time the socket is readable, each with a
traceback: measured against a collector limited to 400 descriptors and held by 500 idle
connections, 149,081 reports (66 MB of log) in 25 s, spending the CPU that the connections already
open needed. ``AcceptErrors`` is the loop's exception handler: it logs that condition once per
``every`` seconds with the number of reports it left out, and hands every other error to the loop's
default handler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .sparse import Sparse

__all__ = ["AcceptErrors"]

log = logging.getLogger("tracehouse.server")

_MESSAGE = "socket.accept() out of system resource"


class AcceptErrors:
    """``registry``: a Prometheus registry that gets ``tracehouse_accept_errors_total`` (every failed
    accept, the ones left out of the log included), for an alert on descriptor exhaustion."""

    def __init__(self, every: float = 10.0, registry: Any = None):
        self._sparse = Sparse(every)
        self._count = None
        if registry is not None:
            from prometheus_client import Counter

            self._count = Counter("tracehouse_accept_errors", "Connections the servers could not accept "
                                  "(no file descriptor or memory left).", registry=registry)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _MESSAGE:
            loop.default_exception_handler(context)
            return
        if self._count is not None:
            self._count.inc()
        left_out = self._sparse.due()
        if left_out is not None:
            log.error("cannot accept connections: %s (the process's file descriptor limit, or memory, is exhausted: "
                      "many open connections?); %d more such errors since the last report", context.get("exception"),
                      left_out)
