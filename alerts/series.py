"""Compact test input, as in ``promtool test rules``: metric series (``name{l="v"}`` with values
``'0+10x30'``) and span streams (``{service, name, every, for, error_ratio, duration_ms, attrs}``),
turned into columnar batches for ``store.insert``."""

from __future__ import annotations

import os
import re
from typing import Any

from tracehouse.storage import Store

from .rules import RuleError, duration

NS = 1_000_000_000
_SERIES = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_.:]*)\s*(?:\{(.*)\})?\s*$')
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_TERM = re.compile(r"^(_|stale|-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?:([+-]\d+(?:\.\d+)?(?:e[+-]?\d+)?)?x(\d+))?$")


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    m = _SERIES.match(text)
    if not m:
        raise RuleError(f"bad series {text!r}: use name{{label=\"value\", ...}}")
    labels, body, pos = {}, m.group(2) or "", 0
    while pos < len(body):
        lm = _LABEL.match(body, pos)
        if not lm:
            raise RuleError(f"bad labels in series {text!r}")
        labels[lm.group(1)] = lm.group(2).replace('\\"', '"')
        pos = lm.end()
    return m.group(1), labels


def expand_values(text: str) -> list[float | None]:
    """``'1 2 3'``, ``'0+10x3'`` (0 10 20 30), ``'5x2'`` (5 5 5), ``'_x2'`` (missing) → values."""
    out: list[float | None] = []
    for term in str(text).split():
        m = _TERM.match(term)
        if not m:
            raise RuleError(f"bad series value {term!r}")
        first, step, times = m.groups()
        if first in ("_", "stale"):
            out.extend([None] * (int(times) + 1 if times else 1))
            continue
        if times is None:
            out.append(float(first))
            continue
        s = float(step) if step else 0.0
        out.extend(float(first) + i * s for i in range(int(times) + 1))
    return out


def metric_columns(store: Store, series: list[dict[str, Any]], base_s: int, interval_s: float) -> dict[str, list]:
    cols = store.columns_for("metric_points")
    defaults: dict[str, Any] = {"timestamp": 0, "ts_ns": 0, "start_ns": 0, "service": "", "instance": "", "name": "",
                                "description": "", "unit": "", "type": 1, "temporality": 0, "is_monotonic": 0,
                                "flags": 0, "value": 0.0, "count": 0, "sum": 0.0, "min": 0.0, "max": 0.0,
                                "scope_name": "", "scope_version": "", "exp_scale": 0, "exp_zero_count": 0,
                                "exp_positive_offset": 0, "exp_negative_offset": 0}
    for s in series:
        name, labels = parse_series(str(s.get("series", "")))
        step = duration(s["interval"], "series.interval") if "interval" in s else interval_s
        attrs = {k: v for k, v in labels.items() if k not in ("service", "instance")}
        for i, v in enumerate(expand_values(s.get("values", ""))):
            if v is None:
                continue
            ts_ns = int((base_s + i * step) * NS)
            row = dict(defaults, timestamp=ts_ns // NS, ts_ns=ts_ns, start_ns=ts_ns, name=name, value=v,
                       service=labels.get("service", ""), instance=labels.get("instance", ""))
            for c in cols:
                if c in row:
                    cols[c].append(row[c])
                elif c == "attr_keys":
                    cols[c].append(list(attrs))
                elif c == "attr_values":
                    cols[c].append(list(attrs.values()))
                elif c == "attr_types":
                    cols[c].append([1] * len(attrs))
                else:
                    cols[c].append([])
    return cols


def span_columns(store: Store, specs: list[dict[str, Any]], base_s: int) -> dict[str, list]:
    """Root server spans: one every ``every`` for ``for`` from ``start`` (offsets from ``base_s``);
    a deterministic ``error_ratio`` of them have status error."""
    cols = store.columns_for("spans")
    for spec in specs:
        every = duration(spec.get("every", "10s"), "spans.every")
        span_for = duration(spec.get("for", "5m"), "spans.for")
        start = duration(spec.get("start", 0), "spans.start")
        ratio = float(spec.get("error_ratio", 0))
        dur_ns = int(float(spec.get("duration_ms", 10)) * 1_000_000)
        attrs = {str(k): str(v) for k, v in (spec.get("attrs") or {}).items()}
        n = max(1, int(span_for // every))
        for i in range(n):
            start_ns = int((base_s + start + i * every) * NS)
            error = int((i + 1) * ratio) > int(i * ratio)
            row = {"timestamp": start_ns // NS, "trace_id": os.urandom(16), "span_id": os.urandom(8),
                   "parent_span_id": b"\x00" * 8, "trace_state": "", "service": str(spec.get("service", "")),
                   "name": str(spec.get("name", "GET /")), "kind": int(spec.get("kind", 2)),
                   "status_code": 2 if error else 0, "status_message": "", "start_ns": start_ns,
                   "duration_ns": dur_ns, "attr_keys": list(attrs), "attr_values": list(attrs.values()),
                   "attr_types": [1] * len(attrs), "scope_name": "", "scope_version": ""}
            for c in cols:
                cols[c].append(row.get(c, []))
    return cols


def insert_input(store: Store, spans: list[dict[str, Any]], series: list[dict[str, Any]], base_s: int,
                 interval_s: float = 60.0) -> None:
    if spans:
        store.insert("spans", span_columns(store, spans, base_s))
    if series:
        store.insert("metric_points", metric_columns(store, series, base_s, interval_s))
