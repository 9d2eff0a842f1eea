"""The agent command channel on the OTLP port: ``GET /v1/tracehouse/commands?service=S&instance=I``.

Same ingestion-token check as OTLP; open like OTLP when no ingest token is configured, which the
server allows only on loopback. A poll takes the commands it returns, so a request a browser made
(``Origin`` or a ``Sec-Fetch-Site`` other than ``none``) is refused: no web page can take an
agent's commands. Answers ``{"commands": [{"id", "kind", "reason",
"requested_by"}]}`` — the snapshot requests addressed to that instance or to any instance of
its service that it has not taken yet; answering marks them taken by that instance (see
``tracehouse.storage.queries_snapshots`` for the semantics). The store call runs in a worker
thread, so a slow store never stalls ingestion.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qs

import orjson

from tracehouse.storage import InvalidParameter, StorageError, Store
from tracehouse.storage import queries_snapshots as qsnap

from .auth import TokenCheck

__all__ = ["PATH", "CommandEndpoint"]

PATH = "/v1/tracehouse/commands"
log = logging.getLogger("tracehouse.collector")


class CommandEndpoint:
    def __init__(self, store: Store, tokens: TokenCheck):
        self.store = store
        self.tokens = tokens

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["method"] != "GET":
            await _json(send, 405, {"error": "use GET"}, [(b"allow", b"GET")])
            return
        headers = dict(scope["headers"])
        if not self.tokens.allows(headers):
            await _json(send, 401, {"error": "missing or invalid ingestion token"})
            return
        if from_browser(headers):  # polling takes the commands: no web page may do it for an agent
            await _json(send, 403, {"error": "agent commands are not for browsers"})
            return
        q = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        service = (q.get("service") or [""])[0]
        instance = (q.get("instance") or [""])[0]
        try:
            cmds = await asyncio.to_thread(qsnap.take_pending, self.store, service, instance)
        except InvalidParameter as e:
            await _json(send, 400, {"error": str(e)})
            return
        except StorageError as e:
            log.warning("command poll failed: %s", e)
            await _json(send, 503, {"error": "storage unavailable"}, [(b"retry-after", b"5")])
            return
        await _json(send, 200, {"commands": cmds})


def from_browser(headers: dict[bytes, bytes]) -> bool:
    """A request a web page made (browsers add these headers; agents and HTTP libraries do not)."""
    return b"origin" in headers or headers.get(b"sec-fetch-site", b"none") != b"none"


async def _json(send: Any, status: int, obj: Any, extra: list | None = None) -> None:
    body = orjson.dumps(obj)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})
