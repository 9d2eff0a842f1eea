"""Snapshots leave the process as OTLP log records with event name ``tracehouse.snapshot``.

Body (a JSON object as the record's string body)::

    {"kind": "threads" | "memory", "trigger": "slow_request" | "exception" | "memory_threshold" | "command",
     "reason": str, "captured_at": float (unix seconds), "capture_ms": float,
     "threads": [{"name", "id", "native_id", "daemon", "stack": [{"file", "line", "function", "code",
                  "locals"?}], "request"?: true}],            # stacks innermost frame first
     "groups": [{"count", "thread_names", "stack"}],         # identical stacks, biggest first
     "tasks": [{"name", "coro", "done", "stack"}],           # asyncio tasks of the running loop
     "request": {"thread_id", "task", "elapsed_ms", "method", "path", "trace_id", "span_id", "stack"?},
     "exception": {"type", "message", "thread", "stack"},
     "memory": {"rss", "uss", "vms", "rss_after", "gc": {...}, "tracemalloc", "window_s",
                "top": [{"file", "line", "size", "count"}],
                "growth": [{"file", "line", "size_diff", "count_diff", "size"}]},
     "truncated": bool, "dropped": {"threads": n, "frames": n, "tasks": n, ...}}

Attributes: ``event.name``, ``snapshot.id``, ``snapshot.kind``, ``snapshot.trigger``,
``snapshot.reason``, ``snapshot.truncated``, ``snapshot.request_id`` (on demand),
``snapshot.requested_by``, and the slow request's trace/span ids as the record's trace context
(plus ``snapshot.trace_id``/``snapshot.span_id``). Emission goes through the agent's batch log
processor: never blocks the caller, bounded, drops counted.
"""

from __future__ import annotations

import json
import time
import uuid

from tracehouse.agent import counters
from tracehouse.agent.snapshot_redact import MASK, is_secret_name

__all__ = ["EVENT_NAME", "DEFAULT_MAX_BYTES", "SnapshotEmitter", "fit", "new_id"]

EVENT_NAME = "tracehouse.snapshot"
DEFAULT_MAX_BYTES = 256 * 1024


def new_id() -> str:
    return uuid.uuid4().hex


def _dumps(body: dict) -> str:
    return json.dumps(body, separators=(",", ":"), default=str, ensure_ascii=False)


def _cut_stacks(body: dict, frames: int) -> None:
    dropped = 0
    for key in ("threads", "groups", "tasks"):
        for item in body.get(key) or ():
            stack = item.get("stack") or []
            if len(stack) > frames:
                dropped += len(stack) - frames
                item["stack"] = stack[:frames]
    for part in ("request", "exception"):
        item = body.get(part)
        if isinstance(item, dict) and len(item.get("stack") or ()) > frames:
            dropped += len(item["stack"]) - frames
            item["stack"] = item["stack"][:frames]
    body.setdefault("dropped", {})["frames"] = body.get("dropped", {}).get("frames", 0) + dropped


def _drop_locals(body: dict) -> None:
    for k in ("threads", "groups", "tasks"):
        for t in body.get(k) or ():
            for f in t.get("stack") or ():
                f.pop("locals", None)


def _cut_lists(body: dict, n: int) -> None:
    """At most ``n`` threads, groups and tasks, the rest counted in ``dropped``."""
    for key in ("threads", "groups", "tasks"):
        items = body.get(key) or []
        if len(items) > n:
            body["dropped"][key] = body["dropped"].get(key, 0) + len(items) - n
            body[key] = items[:n]


def _cut_memory(body: dict, n: int) -> None:
    """At most ``n`` entries of the memory snapshot's lists (and no gc figures at 0)."""
    mem = body.get("memory")
    if isinstance(mem, dict):
        for key in ("top", "growth"):
            if len(mem.get(key) or ()) > n:
                mem[key] = mem[key][:n]
        if n == 0:
            mem.pop("gc", None)


#: the cuts :func:`fit` makes in turn, each keeping more of the body than the next
_CUTS = ([_drop_locals] + [lambda body, n=n: _cut_stacks(body, n) for n in (32, 16, 8, 4)]
         + [lambda body, n=n: _cut_lists(body, n) for n in (100, 50, 20, 10, 5, 2, 1)]
         + [lambda body, n=n: _cut_memory(body, n) for n in (10, 3, 0)])


def fit(body: dict, max_bytes: int) -> str:
    """Serialize ``body``, shrinking it step by step (locals, groups' duplicates, frames, threads,
    memory lists) until it fits ``max_bytes``; every cut sets ``truncated``."""
    text = _dumps(body)
    if len(text.encode()) <= max_bytes:
        return text
    body["truncated"] = True
    body.setdefault("dropped", {})
    for cut in _CUTS:
        cut(body)
        text = _dumps(body)
        if len(text.encode()) <= max_bytes:
            return text
    return _dumps({k: body.get(k) for k in ("kind", "trigger", "reason", "captured_at")} |
                  {"truncated": True, "dropped": {"all": True}})


class SnapshotEmitter:
    """Turns a snapshot body into one log record on the agent's logger provider."""

    def __init__(self, logger_provider, max_bytes: int = DEFAULT_MAX_BYTES):
        from tracehouse.agent import __version__

        self._logger = logger_provider.get_logger("tracehouse.agent.snapshots", __version__)
        self.max_bytes = max_bytes

    def emit(self, body: dict, attributes: dict | None = None, trace_id: int = 0, span_id: int = 0) -> str:
        from opentelemetry import trace
        from opentelemetry._logs import SeverityNumber
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        sid = (attributes or {}).get("snapshot.id") or new_id()
        body.setdefault("captured_at", time.time())
        body.setdefault("truncated", False)
        text = fit(body, self.max_bytes)
        attrs = {"event.name": EVENT_NAME, "snapshot.id": sid, "snapshot.kind": str(body.get("kind", "")),
                 "snapshot.trigger": str(body.get("trigger", "")), "snapshot.reason": str(body.get("reason", "")),
                 "snapshot.truncated": bool(body.get("truncated"))}
        for k, v in (attributes or {}).items():
            if v is not None and v != "":
                attrs[k] = v
        for k in list(attrs):
            if is_secret_name(k.rsplit(".", 1)[-1]) and not k.startswith("snapshot.") and k != "event.name":
                attrs[k] = MASK
        context = None
        if trace_id and span_id:
            attrs["snapshot.trace_id"] = f"{trace_id:032x}"
            attrs["snapshot.span_id"] = f"{span_id:016x}"
            ctx = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
            context = trace.set_span_in_context(NonRecordingSpan(ctx))
        self._logger.emit(body=text, attributes=attrs, event_name=EVENT_NAME, context=context,
                          severity_number=SeverityNumber.INFO, severity_text="INFO",
                          timestamp=time.time_ns())
        counters.add("snapshots.emitted")
        return sid
