"""A cap on request bodies for the dashboard and its API.

Starlette reads a form or JSON body whole into memory, and caps a form field at 1 MB but not the
number of them; ``POST /login`` reads its form before anything else, so without a cap anyone who can
reach the port could make the process (the collector and its buffer included) hold hundreds of MB
per request (measured: a 300 MB form of 1,000 KB fields took the server from 251 to 541 MB).
Every body the dashboard takes is a small form or JSON document (sign-in, rules, silences,
retention, snapshot requests). A declared ``Content-Length`` over the cap is answered 413 before
anything is read; a chunked body is counted as it arrives and refused at the cap. A body must also
arrive within ``timeout`` seconds of its head, or is answered 408 (uvicorn has no such deadline: a
client sending a byte now and then would hold its connection and task for ever)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

__all__ = ["BodyLimit", "MAX_BODY_BYTES"]

MAX_BODY_BYTES = 1 << 20


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES, timeout: float = 60.0):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _declared_refusal(scope.get("headers", ()), self.max_bytes)
        if declared is not None:
            return await _refuse(send, *declared)
        guard = _Guard(receive, send, self.max_bytes, self.timeout)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            # past the cap or the deadline: the ClientDisconnect (or what wraps it) that the
            # disconnect the guard made up caused; the refusal below answers it
            if not guard.over:
                raise
        if guard.refusal is not None and not guard.started:
            await _refuse(send, *guard.refusal)


def _declared_refusal(headers: Any, limit: int) -> tuple[int, str] | None:
    """The answer to a request whose ``Content-Length`` is not a number or is over ``limit``."""
    for k, v in headers:
        if k == b"content-length":
            if not v.strip().isdigit():
                return 400, "invalid Content-Length"
            if int(v) > limit:
                return 413, f"request body larger than {limit} bytes"
    return None


class _Guard:
    """One request's body, counted as the app reads it. Past the cap or the deadline the app is told
    the client left (Starlette raises ClientDisconnect where it reads), whatever it answers is
    dropped, and the client gets the 413 or 408; once the body is whole, receive() is the server's
    own again (a streaming answer waits on it for the disconnect)."""

    def __init__(self, receive: Any, send: Any, limit: int, timeout: float):
        self._receive, self._send, self.limit, self.timeout = receive, send, limit, timeout
        self.deadline = time.monotonic() + timeout
        self.seen = 0
        self.over = self.started = self.done = False
        self.refusal: tuple[int, str] | None = None

    def _refused(self, status: int, message: str) -> dict:
        self.over, self.refusal = True, (status, message)
        return {"type": "http.disconnect"}

    async def receive(self) -> dict:
        if self.over:
            return {"type": "http.disconnect"}
        if self.done:
            return await self._receive()
        try:
            msg = await asyncio.wait_for(self._receive(), max(0.0, self.deadline - time.monotonic()))
        except asyncio.TimeoutError:
            return self._refused(408, f"request body not received within {self.timeout:g} s")
        if msg["type"] == "http.request":
            self.seen += len(msg.get("body", b""))
            if self.seen > self.limit:
                return self._refused(413, f"request body larger than {self.limit} bytes")
            self.done = not msg.get("more_body", False)
        return msg

    async def send(self, msg: dict) -> None:
        if self.over:
            return
        self.started = self.started or msg["type"] == "http.response.start"
        await self._send(msg)


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
