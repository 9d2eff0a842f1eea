"""Time ranges from API parameters: RFC 3339 or relative (``15m``, ``2h``, ``7d``, ``now``)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .errors import InvalidParameter

NS = 1_000_000_000
_REL = re.compile(r"^(?:now-)?(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_RANGE_NS = 400 * 86400 * NS
#: the longest bucket a series may ask for: the longest range (steps reach SQL as UInt32 seconds, so
#: a longer one wrapped round and put the buckets at times outside the range)
MAX_STEP_S = MAX_RANGE_NS // NS
#: the stored times' range: seconds since 1970 in a UInt32 (ClickHouse's DateTime), up to 2106-02-07
UINT32_MAX = 2**32 - 1
MAX_TIME_NS = UINT32_MAX * NS


def is_digits(text: str, max_len: int = 30) -> bool:
    """``text`` is a whole number ``int()`` reads: ASCII digits only, at most ``max_len`` of them.
    (``str.isdigit`` also admits digits ``int()`` refuses, such as ``²``, and ``int()`` refuses
    more than 4,300 digits: either made a bad parameter a 500.)"""
    return text.isascii() and text.isdigit() and len(text) <= max_len


def parse_step(text: str | None) -> int | None:
    """A step a user gave, in seconds: digits (``300``) or a duration (``5m``); None when empty.
    At most :data:`MAX_STEP_S` (``InvalidParameter`` past it)."""
    if text is None or not text.strip():
        return None
    t = text.strip()
    step_s = int(t) if is_digits(t) else int(parse_duration(t))
    if step_s > MAX_STEP_S:
        raise InvalidParameter("step longer than 400 days (the longest time range)")
    return step_s


@dataclass(frozen=True)
class TimeRange:
    start_ns: int
    end_ns: int

    @property
    def seconds(self) -> float:
        return max(1e-9, (self.end_ns - self.start_ns) / NS)

    @property
    def start_s(self) -> int:
        return self.start_ns // NS

    @property
    def end_s(self) -> int:
        return -(-self.end_ns // NS)


def parse_duration(text: str) -> float:
    """``30s`` / ``5m`` / ``1h`` / ``0s`` → seconds."""
    m = _REL.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise InvalidParameter(f"bad duration {text!r}: use a number and one of ms, s, m, h, d, w (e.g. 15m)")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if not seconds <= UINT32_MAX:  # 310 digits made it infinite: converting it to ns answered 500
        raise InvalidParameter(f"duration {text[:40]!r} longer than 136 years (the longest time stored)")
    return seconds


def parse_time(text: str | None, now_ns: int, default_ns: int) -> int:
    if text is None or text == "":
        return default_ns
    t = text.strip()
    if t == "now":
        return now_ns
    if _REL.match(t):
        return now_ns - int(parse_duration(t) * NS)
    if is_digits(t):  # epoch seconds, milliseconds or nanoseconds
        v = int(t)
        if v < 10**11:
            return v * NS
        if v < 10**14:
            return v * 1_000_000
        return v
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidParameter(f"bad time {text!r}: use RFC 3339 (2026-01-02T15:04:05Z) or relative (15m, 2h, now)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1_000_000) * 1000


def parse_range(since: str | None, until: str | None, now_ns: int | None = None, default: str = "15m") -> TimeRange:
    now = time.time_ns() if now_ns is None else now_ns
    end = parse_time(until, now, now)
    start = parse_time(since, now, end - int(parse_duration(default) * NS))
    if start < 0 or end < 0:
        raise InvalidParameter("time range starts before 1970-01-01")
    if end > MAX_TIME_NS:
        raise InvalidParameter("time range ends after 2106-02-07 (the latest time stored)")
    if start >= end:
        raise InvalidParameter("since must be before until")
    if end - start > MAX_RANGE_NS:
        raise InvalidParameter("time range longer than 400 days")
    return TimeRange(start, end)
