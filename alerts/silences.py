"""Silences (label matchers over a time window, stored in ClickHouse) and inhibition rules
(a firing alert matching ``source_match`` mutes alerts matching ``target_match`` that share the
``equal`` labels), as in Alertmanager."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import re2

from tracehouse.storage import InvalidParameter, parse_duration
from tracehouse.storage.timerange import MAX_TIME_NS, parse_time

from .rules import RuleError, sound_values, text_field

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*\"?(.*?)\"?\s*$")
NS = 1_000_000_000


@dataclass(frozen=True)
class Matcher:
    name: str
    value: str
    op: str = "="  # = != =~ !~

    def matches(self, labels: dict[str, str]) -> bool:
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = _regex(self.value).fullmatch(v) is not None
        return hit if self.op == "=~" else not hit

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "isRegex": "~" in self.op, "isEqual": not self.op.startswith("!")}


def parse_matcher(m: Any) -> Matcher:
    """``'service=payments'`` / ``'severity=~"warn|info"'`` or ``{name, value, isRegex, isEqual}``."""
    if isinstance(m, str):
        if len(m) > MAX_REGEX_CHARS + 200:
            raise RuleError("matcher too long")
        hit = _MATCHER.match(m)
        if not hit:
            raise RuleError(f"bad matcher {m!r}: use name=value, name!=value, name=~regex or name!~regex")
        name, op, value = hit.groups()
    elif isinstance(m, dict) and "name" in m:
        name, value = m["name"], m.get("value", "")
        regex, equal = m.get("isRegex", False), m.get("isEqual", True)
        if not (isinstance(name, str) and _NAME.match(name) and isinstance(value, str)
                and isinstance(regex, bool) and isinstance(equal, bool)):
            raise RuleError("bad matcher: name and value are texts (a label name and its value), "
                            "isRegex and isEqual true or false")
        if len(value) > MAX_REGEX_CHARS + 200:
            raise RuleError("matcher too long")
        op = ("=~" if equal else "!~") if regex else ("=" if equal else "!=")
    else:
        raise RuleError(f"bad matcher {str(m)[:100]!r}")
    if "~" in op:
        if len(value) > MAX_REGEX_CHARS:
            raise RuleError(f"regex in matcher {name} longer than {MAX_REGEX_CHARS} characters")
        try:
            _regex(value)
        except re2.error as e:
            reason = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
            raise RuleError(f"bad regex in matcher {name} (RE2 syntax, as in Alertmanager): {reason}") from None
    return Matcher(name, value, op)


#: matcher regexes run on RE2 (linear time, as Alertmanager's Go regexp): no backreferences or
#: lookarounds, so an editor cannot write one that takes exponential time on a label value
MAX_REGEX_CHARS = 1000
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@lru_cache(maxsize=1024)
def _regex(pattern: str):
    return re2.compile(pattern, options=_RE2_OPTIONS)


@dataclass
class Silence:
    id: str
    matchers: list[Matcher]
    starts_ns: int
    ends_ns: int
    created_by: str = ""
    comment: str = ""

    def active(self, now_ns: int) -> bool:
        return self.starts_ns <= now_ns < self.ends_ns

    def mutes(self, labels: dict[str, str], now_ns: int) -> bool:
        return self.active(now_ns) and all(m.matches(labels) for m in self.matchers)

    def to_dict(self, now_ns: int | None = None) -> dict[str, Any]:
        d = {"id": self.id, "matchers": [m.to_dict() for m in self.matchers], "starts_ns": self.starts_ns,
             "ends_ns": self.ends_ns, "createdBy": self.created_by, "comment": self.comment}
        if now_ns is not None:
            d["status"] = "active" if self.active(now_ns) else ("pending" if now_ns < self.starts_ns else "expired")
        return d


def _ns(v: Any, what: str) -> int:
    """A time in nanoseconds since 1970 that the store can hold."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= MAX_TIME_NS:
        raise RuleError(f"{what} must be nanoseconds since 1970, before 2106")
    return int(v)


def parse_silence(d: Any, now_ns: int) -> Silence:
    if not isinstance(d, dict):
        raise RuleError("a silence must be a mapping")
    sound_values(d, "silence")
    given = d.get("matchers") or []
    if not isinstance(given, list):
        raise RuleError("a silence's matchers must be a list")
    matchers = [parse_matcher(m) for m in given]
    if not matchers:
        raise RuleError("a silence needs at least one matcher")
    try:
        if "starts_ns" in d or "ends_ns" in d:
            start = _ns(d["starts_ns"], "starts_ns") if d.get("starts_ns") is not None else now_ns
            end = _ns(d.get("ends_ns") or 0, "ends_ns")
        else:
            starts = text_field(d, "startsAt", "silence")
            start = parse_time(starts, now_ns, now_ns) if starts else now_ns
            ends = text_field(d, "endsAt", "silence") or text_field(d, "duration", "silence") or "2h"
            try:  # a duration ("2h") counts from the start; anything else is a time
                end = start + int(parse_duration(ends) * NS)
            except ValueError:
                end = parse_time(ends, now_ns, now_ns)
            start, end = _ns(start, "startsAt"), _ns(end, "endsAt")
    except InvalidParameter as e:
        raise RuleError(str(e)) from None
    if end <= start:
        raise RuleError("a silence must end after it starts")
    return Silence(text_field(d, "id", "silence") or uuid.uuid4().hex, matchers, start, end,
                   text_field(d, "createdBy", "silence"), text_field(d, "comment", "silence"))


def silence_from_doc(doc: dict[str, Any]) -> Silence:
    return Silence(doc["id"], [parse_matcher(m) for m in doc.get("matchers", [])], int(doc["starts_ns"]),
                   int(doc["ends_ns"]), doc.get("createdBy", ""), doc.get("comment", ""))


@dataclass
class InhibitRule:
    source: list[Matcher] = field(default_factory=list)
    target: list[Matcher] = field(default_factory=list)
    equal: list[str] = field(default_factory=list)


def parse_inhibit_rule(d: Any) -> InhibitRule:
    if not isinstance(d, dict):
        raise RuleError("an inhibit rule must be a mapping")

    def ms(key: str, op: str) -> list[Matcher]:
        v = d.get(key) or {}
        if not isinstance(v, dict):
            raise RuleError(f"inhibit_rules.{key} must be a mapping")
        return [parse_matcher({"name": k, "value": str(x), "isRegex": op == "=~"}) for k, x in v.items()]

    src = ms("source_match", "=") + ms("source_match_re", "=~") + [parse_matcher(m) for m in d.get("source_matchers") or []]
    tgt = ms("target_match", "=") + ms("target_match_re", "=~") + [parse_matcher(m) for m in d.get("target_matchers") or []]
    if not src or not tgt:
        raise RuleError("an inhibit rule needs source and target matchers")
    return InhibitRule(src, tgt, [str(x) for x in d.get("equal") or []])


def inhibited(labels: dict[str, str], firing: list[dict[str, str]], rules: list[InhibitRule]) -> bool:
    """Is an alert with ``labels`` muted by one of the ``firing`` alerts' labels?"""
    for r in rules:
        if not all(m.matches(labels) for m in r.target):
            continue
        for src in firing:
            if src is labels or src == labels:
                continue
            if all(m.matches(src) for m in r.source) and all(src.get(k, "") == labels.get(k, "") for k in r.equal):
                return True
    return False
