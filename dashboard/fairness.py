"""Fair turns at the store for the dashboard's requests, per principal.

Every page and API request that may query the store (everything but sign-in, static files, probes,
``/metrics`` and the API's own description) takes a turn here first. At most ``running`` such
requests run at once in all, and at most ``per_principal`` of one principal; the others wait in
a queue of their principal's, of at most ``queue`` requests. When a turn ends, the next one goes
to the waiting principal with the fewest requests running (among equals, the one served longest
ago), so
one viewer's twenty heavy reads cannot make another viewer's light one wait for all of them:
measured before (one store slot on 2 cores, 10,000-span trace reads), a light ``/api/services``
waited 14 s behind one viewer's twenty full-trace reads.

A principal is the signed-in user or API token (``request.state.user``, set by the auth gate),
else the client's address (an IPv6 one as its /64): the address uvicorn reports, which takes
``X-Forwarded-For`` only from the declared trusted proxies. Past its queue a request is answered
429 with ``Retry-After``; a wait is bounded by ``wait_s`` (then 503 with ``Retry-After``); at most
``max_principals`` principals are tracked (one with nothing running or waiting is forgotten), a
new one past that is answered 503. Browser pages load their panels at once: they wait their turn,
they are not refused while the queue has room.

All state lives on the event loop's thread: the middleware is the only user of the gate.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from .auth import OPEN_PATHS
from .loginlimit import address_key
from .render import render

__all__ = ["FairGate", "FairAdmission", "Refused", "running_for"]

#: paths that never query the store: no turn needed
UNGATED = OPEN_PATHS + ("/login", "/metrics", "/api/openapi.json", "/api/auth/")


class Refused(Exception):
    def __init__(self, status: int, reason: str, message: str, retry_after: int):
        super().__init__(message)
        self.status, self.reason, self.retry_after = status, reason, retry_after


@dataclass
class _Principal:
    running: int = 0
    waiting: deque = field(default_factory=deque)  # futures, first come first
    served: int = 0  # the gate's count of turns when this principal last got one (0: never)


class FairGate:
    """Turns at the store: :meth:`enter` waits for one (or raises :class:`Refused`), :meth:`leave`
    gives it back. Only ever used from one event loop."""

    def __init__(self, running: int = 2, per_principal: int = 2, queue: int = 16, max_principals: int = 1000,
                 wait_s: float = 15.0, clock=time.monotonic):
        self.running, self.per_principal = max(1, int(running)), max(1, int(per_principal))
        self.queue, self.max_principals, self.wait_s = max(0, int(queue)), max(1, int(max_principals)), float(wait_s)
        self.clock = clock
        self._total = self._turns = 0
        self._principals: dict[str, _Principal] = {}

    def __len__(self) -> int:
        """Principals tracked now (each has a request running or waiting)."""
        return len(self._principals)

    def waiting(self) -> int:
        return sum(len(p.waiting) for p in self._principals.values())

    async def enter(self, key: str) -> float:
        """Wait for a turn of ``key``'s; returns the seconds waited."""
        p = self._principals.get(key)
        if p is None:
            if len(self._principals) >= self.max_principals:
                raise Refused(503, "principals", "too many clients are waiting for the store; try again shortly", 5)
            p = self._principals[key] = _Principal()
        if not p.waiting and p.running < self.per_principal and self._total < self.running:
            self._grant(p)
            return 0.0
        if len(p.waiting) >= self.queue:
            self._forget_if_idle(key, p)
            raise Refused(429, "queue", f"too many of your requests are waiting (running {p.running}, waiting "
                          f"{len(p.waiting)}); try again when some have answered", 2)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        t0 = self.clock()
        p.waiting.append(fut)
        try:
            await asyncio.wait({fut}, timeout=self.wait_s)
        except BaseException:  # cancelled (the client went away): give back a turn given meanwhile
            self._withdraw(key, p, fut)
            raise
        if not fut.done():
            self._withdraw(key, p, fut)
            raise Refused(503, "deadline", f"no turn at the store within {self.wait_s:g} s; try again shortly",
                          max(1, int(self.wait_s // 3)))
        return self.clock() - t0

    def leave(self, key: str) -> None:
        p = self._principals[key]
        p.running -= 1
        self._total -= 1
        self._dispatch()
        self._forget_if_idle(key, p)

    def _grant(self, p: _Principal) -> None:
        p.running += 1
        self._total += 1
        self._turns += 1
        p.served = self._turns

    def _withdraw(self, key: str, p: _Principal, fut: asyncio.Future) -> None:
        if fut.done() and not fut.cancelled():  # granted, never used
            self.leave(key)
            return
        fut.cancel()
        if fut in p.waiting:
            p.waiting.remove(fut)
        self._forget_if_idle(key, p)

    def _dispatch(self) -> None:
        """Turns free → the waiting principals with the fewest running, among equals the one served
        longest ago (round robin: one whose requests all came first does not keep the turn)."""
        while self._total < self.running:
            ready = [p for p in self._principals.values() if p.waiting and p.running < self.per_principal]
            if not ready:
                return
            p = min(ready, key=lambda q: (q.running, q.served))
            fut = p.waiting.popleft()
            self._grant(p)
            fut.set_result(None)

    def _forget_if_idle(self, key: str, p: _Principal) -> None:
        if not p.running and not p.waiting and self._principals.get(key) is p:
            del self._principals[key]


def principal_key(scope: dict[str, Any]) -> str:
    user = (scope.get("state") or {}).get("user")
    if isinstance(user, dict) and user.get("u"):
        return "u:" + str(user["u"])
    client = scope.get("client")
    return "a:" + address_key(client[0] if client else "")


def running_for(store: Any, settings: Any) -> int:
    """Requests running at once in all: the setting, else twice the store's concurrent user
    queries on an embedded engine (a request renders between its queries), a server's pool."""
    configured = int(getattr(settings, "dashboard_max_running", 0) or 0)
    if configured:
        return configured
    if store is not None and getattr(getattr(store, "backend", None), "kind", "") == "chdb":
        return 2 * store.limits.concurrent()
    return 4


class FairAdmission:
    """Pure ASGI middleware giving each gated request a turn of :class:`FairGate`."""

    def __init__(self, app, gate: FairGate, metrics: Any = None):
        self.app, self.gate, self.metrics = app, gate, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(UNGATED):
            return await self.app(scope, receive, send)
        key = principal_key(scope)
        try:
            waited = await self.gate.enter(key)
        except Refused as e:
            if self.metrics is not None:
                self.metrics.admission_refused.labels(reason=e.reason).inc()
            return await _refuse(scope, receive, send, e)
        if self.metrics is not None:
            self.metrics.admission_wait.observe(waited)
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.leave(key)


async def _refuse(scope, receive, send, e: Refused) -> None:
    """JSON under /api; a page for a browser (its ``Accept`` names HTML: the error page, which loads
    itself again after Retry-After); plain text for anything else."""
    if scope["path"].startswith("/api"):
        body, kind = json.dumps({"error": str(e)}).encode(), b"application/json"
    elif b"text/html" in dict(scope.get("headers") or ()).get(b"accept", b""):
        page = render(Request(scope, receive), "error.html", None, status_code=e.status,
                      title="Busy" if e.status == 503 else "Too many requests", message=str(e),
                      retry_after=e.retry_after)
        page.headers["retry-after"] = str(e.retry_after)
        return await page(scope, receive, send)
    else:
        body, kind = (str(e) + "\n").encode(), b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": e.status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(e.retry_after).encode())]})
    await send({"type": "http.response.body", "body": body})
