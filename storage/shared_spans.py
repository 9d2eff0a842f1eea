"""Zipkin's shared spans at read time: a server span that reused its client's span id was stored
with an id of its own (``shared_server_id``) under the client span; the server's own children,
which name the shared id as their parent, are put under it here, when a trace is read.

Deciding it when a trace is read makes the trace the same whatever the order its spans arrived
in: a child reported before its shared server span (or to another collector) cannot be placed
when it is written, since nothing says yet that its parent id is shared.
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["shared_server_id", "reparent_shared_children"]

_ZERO8 = b"\x00" * 8


def shared_server_id(trace_id: bytes, span_id: bytes, service: str) -> bytes:
    """The id given to the server side of a shared span: stable for a (trace, span, service), so
    that two servers joining the same client span (a proxy and the service behind it) get an id each."""
    h = hashlib.blake2b(trace_id + span_id + service.encode("utf-8", "surrogatepass"), digest_size=8,
                        person=b"zipkin-shared").digest()
    return h if h != _ZERO8 else b"\x00" * 7 + b"\x01"


def reparent_shared_children(trace_hex: str, spans: list[dict[str, Any]], servers: list[dict[str, Any]]) -> None:
    """Put each span whose parent is a shared span id under the server side of that shared span of
    its own service, when the trace holds it (in place; ``span_id``/``parent_span_id`` in hex).
    ``servers``: the spans of ``spans`` of kind SERVER, the only ones that can be such a server
    side (one hash each: a trace without shared spans costs a dictionary lookup per span)."""
    tid = bytes.fromhex(trace_hex)
    shared: dict[tuple[str, str], str] = {}
    for s in servers:
        parent = s["parent_span_id"]
        if parent and s["span_id"] == shared_server_id(tid, bytes.fromhex(parent), s["service"]).hex():
            shared[(parent, s["service"])] = s["span_id"]
    if not shared:
        return
    for s in spans:
        server = shared.get((s["parent_span_id"], s["service"]))
        if server is not None and server != s["span_id"]:
            s["parent_span_id"] = server
