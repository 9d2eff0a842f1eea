"""uvicorn's HTTP/1.1 protocol with a deadline for the request head.

uvicorn closes an idle kept-alive connection, but not one that has sent part of a request head (or
nothing at all) since it connected: a client trickling header bytes (slowloris) holds a socket and
its buffers for as long as it likes, and enough of them exhaust the process's file descriptors,
the WAL's included. Here a connection must complete each request head within ``seconds`` of
connecting or of the previous answer, or is closed. (Bodies have their own deadline where they are
read: ``collector/app.py``.) On h11, as uvicorn without its extras: httptools' C parser measured no
faster here (the ingest benchmark's 117 kB bodies: collector CPU 4.8 / 6.0 against 4.9 / 4.7 s for
300k spans, two alternating runs each).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from .connection_cap import BUSY, ConnectionCap

__all__ = ["with_head_timeout"]


def with_head_timeout(seconds: float, base: type = H11Protocol, cap: ConnectionCap | None = None) -> type:
    """A subclass of uvicorn's protocol class ``base`` (h11's or httptools') that closes a
    connection whose request head takes longer than ``seconds``. The deadline is set when the
    connection is made and again when an answer is complete; when it passes, the connection is
    closed unless a request (its head complete) is in progress. With ``cap``, a connection past it
    is answered 503 and closed at once (``connection_cap.py``)."""
    class HeadDeadline(base):  # type: ignore[misc, valid-type]
        _head_timer: asyncio.TimerHandle | None = None
        _admitted = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if cap is not None:
                self._admitted = cap.admit()
                if not self._admitted:
                    transport.write(BUSY)
                    transport.close()
                    return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if self._admitted and cap is not None:
                self._admitted = False
                cap.release()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            self._arm()
            super().on_response_complete()

        def _arm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(seconds, self._head_late)

        def _head_late(self) -> None:
            self._head_timer = None
            if self.cycle is None or self.cycle.response_complete:  # no request head since
                self.transport.close()

    HeadDeadline.__name__ = f"HeadDeadline{base.__name__}"
    return HeadDeadline
