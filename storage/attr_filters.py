"""Attribute filters with operators, shared by trace, log and metric search.

One filter is one string, so a list of them travels in a URL as repeated ``attr=`` parameters:

==================  ===========================================================================
``key=value``       the attribute is present and equals ``value``
``key!=value``      the attribute is present and differs from ``value``
``key~value``       the attribute is present and contains ``value`` (case-insensitive)
``key>n`` ``key<n`` the attribute is a number greater / less than ``n`` (also ``>=``, ``<=``)
``key exists``      the attribute is present, whatever its value
==================  ===========================================================================

The first operator from the left splits key from value (``a=b=c`` is ``a`` = ``b=c``); spaces
around the key (and around numbers) are ignored, a text value is taken as written. A filter matches a record when its own attributes or its
resource's attributes satisfy it. Values reach SQL only as bound parameters.

A key holding an operator (``le<5``, ``k=v``) or spaces at its ends cannot be written that way, so
there is a quoted form: ``=`` and a JSON array, ``=["key", "op", "value"]`` or ``=["key", "exists"]``
(``=["le<5", "=", "a"]``), key and value taken exactly. Every text starting ``=[`` and ending ``]``
was refused before (an empty key), so no filter that worked changes meaning. :func:`format_filter`
writes the plain form when it reads back as the same filter, else the quoted one: links built from
stored labels use it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import orjson

from .errors import InvalidParameter

__all__ = ["AttrFilter", "OPS", "MAX_FILTERS", "parse_filter", "parse_filters", "format_filter", "condition",
           "column_condition"]

#: operator → its label in forms
OPS = {"=": "=", "!=": "≠", "~": "contains", ">": ">", "<": "<", ">=": "≥", "<=": "≤", "exists": "exists"}
NUMERIC = (">", "<", ">=", "<=")
MAX_FILTERS = 20
MAX_LEN = 1000
_SPLIT = re.compile(r"(!=|>=|<=|=|~|>|<)")

#: where a record keeps its attributes: (keys column, values column)
SPAN_MAPS = (("attr_keys", "attr_values"), ("resource_keys", "resource_values"))


@dataclass(frozen=True)
class AttrFilter:
    key: str
    op: str
    value: str = ""

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise InvalidParameter(f"unknown attribute operator {self.op!r}: one of {', '.join(OPS)}")
        if not self.key:
            raise InvalidParameter("attribute filter without a key")
        if len(self.key) > MAX_LEN or len(self.value) > MAX_LEN:
            raise InvalidParameter(f"attribute filter longer than {MAX_LEN} characters")
        if self.op in NUMERIC:
            number(self.value)

    @property
    def text(self) -> str:
        """The filter as it is written in a URL: plain when that reads back as this filter, else quoted."""
        plain = f"{self.key} exists" if self.op == "exists" else f"{self.key}{self.op}{self.value}"
        try:
            if parse_filter(plain) == self:
                return plain
        except InvalidParameter:
            pass
        parts = [self.key, "exists"] if self.op == "exists" else [self.key, self.op, self.value]
        return "=" + orjson.dumps(parts).decode()


def number(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InvalidParameter(f"{text!r} is not a number (the operators > < >= <= compare numbers)") from None
    if not math.isfinite(v):
        raise InvalidParameter(f"{text!r} is not a finite number")
    return v


def format_filter(key: str, op: str, value: str = "") -> str | None:
    """The text of the filter ``key op value`` (see :attr:`AttrFilter.text`), or None when there is
    none: a key or value longer than the limit."""
    try:
        return AttrFilter(key, op, value).text
    except InvalidParameter:
        return None


def _quoted(text: str) -> AttrFilter:
    try:
        parts = orjson.loads(text[1:])
    except orjson.JSONDecodeError as e:
        raise InvalidParameter(f"bad quoted attribute filter: {e}") from None
    if (isinstance(parts, list) and all(isinstance(p, str) for p in parts)
            and (len(parts) == 3 and parts[1] != "exists" or len(parts) == 2 and parts[1] == "exists")):
        return AttrFilter(*parts)
    raise InvalidParameter('a quoted attribute filter is =["key", "op", "value"] or =["key", "exists"], '
                           "all of them strings")


def parse_filter(text: str) -> AttrFilter:
    quoted = text.strip()
    if quoted.startswith("=[") and quoted.endswith("]"):
        return _quoted(quoted)
    m = _SPLIT.search(text)
    if m is None or not text[: m.start()].strip():
        key = _exists_key(text)
        if key:
            return AttrFilter(key, "exists")
        raise InvalidParameter(f"bad attribute filter {text!r}: use key=value, key!=value, key~text, key>n, "
                               "key<n or 'key exists'")
    key, op, value = text[: m.start()].strip(), m.group(1), text[m.end():]
    return AttrFilter(key, op, value.strip() if op in NUMERIC else value)


def _exists_key(text: str) -> str:
    """The key of ``key exists`` (spaces around it, at least one before ``exists``), or ''. Not a
    regular expression: ``^(.+?)\\s+exists\\s*$`` was quadratic in a run of spaces (a 16 kB filter,
    all a request head can hold, took 0.9 s of the process's time)."""
    t = text.rstrip()
    if not t.endswith("exists") or not t[:-6][-1:].isspace():
        return ""
    return t[:-6].strip()


def parse_filters(values: list[str] | None) -> list[AttrFilter]:
    """Filters from repeated URL parameters; empty strings are skipped."""
    out = [parse_filter(v) for v in values or [] if v.strip()]
    if len(out) > MAX_FILTERS:
        raise InvalidParameter(f"at most {MAX_FILTERS} attribute filters")
    return out


def _one(f: AttrFilter, keys: str, values: str, k: str, v: str) -> str:
    val = f"{values}[indexOf({keys}, {{{k}:String}})]"
    if f.op == "exists":
        return f"has({keys}, {{{k}:String}})"
    if f.op == "=":
        return f"(has({keys}, {{{k}:String}}) AND {val} = {{{v}:String}})"
    if f.op == "!=":
        return f"(has({keys}, {{{k}:String}}) AND {val} != {{{v}:String}})"
    if f.op == "~":
        return f"(has({keys}, {{{k}:String}}) AND positionCaseInsensitiveUTF8({val}, {{{v}:String}}) > 0)"
    # numbers: text that does not parse is NULL, and NULL never matches; has() first lets the
    # engine skip parsing the rows without the key
    return f"(has({keys}, {{{k}:String}}) AND ifNull(toFloat64OrNull({val}) {f.op} {{{v}:Float64}}, 0))"


def condition(f: AttrFilter, name: str, params: dict, maps: tuple[tuple[str, str], ...] = SPAN_MAPS) -> str:
    """SQL for one filter over the given (keys, values) column pairs, OR-ed; binds its values
    into ``params`` under ``<name>k`` and ``<name>v``."""
    k, v = f"{name}k", f"{name}v"
    params[k] = f.key
    if f.op != "exists":
        params[v] = number(f.value) if f.op in NUMERIC else f.value
    parts = [_one(f, keys, values, k, v) for keys, values in maps]
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


def column_condition(f: AttrFilter, column: str, name: str, params: dict) -> str:
    """SQL for one filter on a plain String column (a metric's ``service`` or ``instance``)."""
    v = f"{name}v"
    if f.op == "exists":
        return f"{column} != ''"
    params[v] = number(f.value) if f.op in NUMERIC else f.value
    if f.op in ("=", "!="):
        return f"{column} {f.op} {{{v}:String}}"
    if f.op == "~":
        return f"positionCaseInsensitiveUTF8({column}, {{{v}:String}}) > 0"
    return f"ifNull(toFloat64OrNull({column}) {f.op} {{{v}:Float64}}, 0)"
