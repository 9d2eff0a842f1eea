"""Fault snapshots (log records with event name ``tracehouse.snapshot``) → what the pages show.

The body format is owned by the agent and still moving, so everything here is defensive: known
parts (threads, groups, memory) are summarised; anything else is shown as pretty JSON.

Snapshot ids in URLs are ``<ts_ns>-<service>`` (the record's timestamp in nanoseconds and its
service): every log record has both, they are what ``queries_telemetry.logs`` can look up, and
they need no agreement with the agent. A ``snapshot.id`` attribute, when the agent sends one, is
shown on the page but not used for addressing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from tracehouse.storage import is_digits, json_body

EVENT = "tracehouse.snapshot"

#: Caps on what one snapshot's page shows. A body may hold up to 1 MiB (the collector's cap) and is
#: written by any ingest client: a million one-letter frames, or thousands of distinct stacks, made
#: a 20 MB page that took 3 s to render. The agent sends at most 64 frames a thread and 200 threads.
MAX_FRAMES = 256  # frames kept per stack, innermost first (where the thread is)
MAX_GROUPS = 50  # distinct stacks listed on the page, biggest groups first
MAX_RAW_CHARS = 256 << 10  # characters of the raw body shown
OUTER = "… outer frames not shown"


def snapshot_id(rec: dict[str, Any]) -> str:
    return f"{rec['time_ns']}-{rec['service']}"


def parse_id(sid: str) -> tuple[int, str] | None:
    ts, sep, service = sid.partition("-")
    if not sep or not is_digits(ts) or not service:
        return None
    return int(ts), service


def parse_body(body: str) -> tuple[Any, str | None]:
    """The body's JSON, or why not. Any client holding an ingest token can write a snapshot
    record, so the body is read as the APIs read theirs (``storage.json_body``): a ``\\ud800``
    escape (a lone surrogate, which no page can carry) or nesting past 1024 levels is refused,
    and the page shows the raw text. The standard library's parser accepted both, and every
    snapshot page in range answered 500."""
    try:
        return json_body.parse(body), None
    except json_body.BodyError as e:
        return None, str(e)


def _pretty(body: Any) -> str | None:
    """``body`` as indented JSON, or None when it cannot be written (nested past 255 levels)."""
    try:
        return orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        return None


def _line(v: Any) -> int | str:
    """A frame's line as a number or a text: any other value would not group or sort."""
    return v if isinstance(v, int) and not isinstance(v, bool) else "" if v is None else str(v)


def frames(stack: Any) -> list[dict[str, Any]]:
    """A stack's frames as the pages show them, innermost first: at most ``MAX_FRAMES``, then one
    frame named ``OUTER`` when there were more (the same for every cut stack, so a flame graph
    merges them)."""
    stack = stack if isinstance(stack, list) else []
    out = []
    for f in stack[:MAX_FRAMES]:
        if isinstance(f, dict):
            out.append({"file": str(f.get("file", "")), "line": _line(f.get("line", "")),
                        "function": str(f.get("function", "")), "code": str(f.get("code", "") or "")})
        else:
            out.append({"file": "", "line": "", "function": str(f), "code": ""})
    if len(stack) > MAX_FRAMES:
        out.append({"file": "", "line": "", "function": OUTER, "code": f"{len(stack) - MAX_FRAMES} frames"})
    return out


def thread_groups(threads: Any) -> list[dict[str, Any]]:
    """Threads grouped by identical stack, biggest group first; each group's frames innermost first."""
    groups: dict[tuple, dict[str, Any]] = {}
    for t in threads if isinstance(threads, list) else []:
        if not isinstance(t, dict):
            continue
        fr = frames(t.get("stack"))
        key = tuple((f["file"], f["line"], f["function"]) for f in fr)
        g = groups.setdefault(key, {"frames": fr, "threads": []})
        g["threads"].append({"name": str(t.get("name", "")), "id": t.get("id", ""), "daemon": bool(t.get("daemon"))})
    out = sorted(groups.values(), key=lambda g: -len(g["threads"]))
    for g in out:
        g["count"] = len(g["threads"])
    return out


def hot_frames(threads: Any, top: int = 10) -> list[tuple[str, int]]:
    """Frames (function file:line) by how many thread stacks they appear in."""
    c: Counter[str] = Counter()
    for t in threads if isinstance(threads, list) else []:
        if isinstance(t, dict):
            c.update({f"{f['function']} ({f['file']}:{f['line']})" for f in frames(t.get("stack"))})
    return c.most_common(top)


def summarize(rec: dict[str, Any]) -> dict[str, Any]:
    body, error = parse_body(rec.get("body", ""))
    raw = _pretty(body) if body is not None else None
    if body is not None and raw is None:
        error = "the body is nested too deep to be shown formatted: shown as sent"
    raw = raw or rec.get("body", "")
    out: dict[str, Any] = {"id": snapshot_id(rec), "record": rec, "error": error, "kind": "unknown",
                           "raw": raw[:MAX_RAW_CHARS], "raw_cut": max(0, len(raw) - MAX_RAW_CHARS),
                           "snapshot_attr_id": (rec.get("attributes") or {}).get("snapshot.id")}
    if not isinstance(body, dict):
        return out
    out["kind"] = str(body.get("kind") or ("threads" if "threads" in body else "memory" if "memory" in body
                                            else "unknown"))
    if isinstance(body.get("threads"), list):
        groups = thread_groups(body["threads"])
        out["groups"], out["groups_hidden"] = groups[:MAX_GROUPS], max(0, len(groups) - MAX_GROUPS)
        out["hot"] = hot_frames(body["threads"])
        out["thread_count"] = len(body["threads"])
    mem = body.get("memory")
    if isinstance(mem, dict):
        out["memory"] = {
            "rss": mem.get("rss") if isinstance(mem.get("rss"), (int, float)) else None,
            "top": [m for m in mem.get("top", []) if isinstance(m, dict)][:50]
            if isinstance(mem.get("top"), list) else [],
            "growth": [m for m in mem.get("growth", []) if isinstance(m, dict)][:50]
            if isinstance(mem.get("growth"), list) else [],
        }
    known = {"kind", "threads", "memory", "groups"}
    out["other"] = {k: v for k, v in body.items() if k not in known}
    return out


def brief(rec: dict[str, Any]) -> dict[str, Any]:
    """One list row: id, time, service, kind, reason."""
    body, _ = parse_body(rec.get("body", ""))
    kind = body.get("kind") if isinstance(body, dict) else None
    attrs = rec.get("attributes") or {}
    threads = body.get("threads") if isinstance(body, dict) else None
    return {"id": snapshot_id(rec), "time_ns": rec["time_ns"], "service": rec["service"],
            "instance": rec.get("instance", ""), "kind": str(kind or "unknown"),
            "reason": str(attrs.get("snapshot.reason") or attrs.get("reason") or
                          (body.get("reason", "") if isinstance(body, dict) else "")),
            "threads": len(threads) if isinstance(threads, list) else None,
            "trace_id": rec.get("trace_id")}
