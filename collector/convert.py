"""OTLP messages → columnar batches for ``Store.insert``: pure functions, the collector's hot path.

Rows are built as plain tuples and transposed once per batch (``zip``), which costs less than
appending to thirty lists per span. Each converter's tuple order is declared once, by column name,
as a row layout that storage checks against the table at import (``SPAN_ROW`` and its siblings,
beside the code that builds the tuples); columns are bound to the table by those names. Attribute values become (text, type
code) as in ``tracehouse.storage.attrs``; arrays and kvlists become JSON. Limits truncate absurd
attribute counts and lengths, and ``Stats`` counts what was truncated. Redaction happens here,
so nothing credential-like reaches the store.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from sys import intern as _intern
from typing import Any

import orjson

from tracehouse.storage.attrs import ARRAY, BOOL, BYTES, DOUBLE, EMPTY, INT, KVLIST, STR
from tracehouse.storage.tables import LOGS, METRIC_POINTS, SPANS, RowLayout

from .redact import MASK, Redactor

__all__ = ["Limits", "Stats", "Batch", "convert_traces", "convert_logs", "convert_metrics", "CONVERTERS"]

_ZERO16 = b"\x00" * 16
_ZERO8 = b"\x00" * 8
_NS = 1_000_000_000


@dataclass(frozen=True)
class Limits:
    max_attributes: int = 256  # per item; the rest are dropped
    max_value_len: int = 16384  # characters per attribute value, name, body
    max_key_len: int = 256
    max_events: int = 256
    max_links: int = 128
    max_snapshot_body_len: int = 1 << 20  # bodies of ``tracehouse.snapshot`` records (JSON; not cut at 16 KiB)


@dataclass
class Stats:
    truncated: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, n: int = 1) -> None:
        self.truncated[what] = self.truncated.get(what, 0) + n


class Batch:
    """Rows of one table, accumulated over many requests and turned into columns once."""

    def __init__(self, table: str, layout: RowLayout):
        self.table = table
        self.layout = layout
        self.names = list(layout.names)
        self.rows: list[tuple] = []
        self.positions: list = []  # the WAL records converted into it (for dead letters)

    def __len__(self) -> int:
        return len(self.rows)

    def columns(self) -> dict[str, list]:
        return self.layout.columns(self.rows)


def new_batch(table: str) -> Batch:
    return Batch(table, _LAYOUTS[table])


# --- values ------------------------------------------------------------------------------------


#: How deep arrays and key-value lists nest before deeper values become ``null`` (counted).
MAX_NESTING = 16


def _py(v, red: Redactor, depth: int = 0, cap: _Cap | None = None) -> Any:
    """An AnyValue as a plain Python value (for JSON). With ``cap``, strings at any depth are cut
    to its length (event and link attributes, which have no overall cut)."""
    k = v.WhichOneof("value")
    if k == "string_value":
        s = red.text(v.string_value)
        return cap.value(s) if cap is not None else s
    if k in ("int_value", "bool_value", "double_value"):
        return getattr(v, k)
    if k == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if depth > MAX_NESTING:
        return None
    if k == "array_value":
        return [_py(x, red, depth + 1, cap) for x in v.array_value.values]
    if k == "kvlist_value":
        return {kv.key: (MASK if red.key_is_secret(kv.key) else _py(kv.value, red, depth + 1, cap))
                for kv in v.kvlist_value.values}
    return None


class _Cap:
    """Length limits for the attributes of events and links, counted under ``what``."""

    __slots__ = ("lim", "st", "what")

    def __init__(self, lim: Limits, st: Stats, what: str):
        self.lim, self.st, self.what = lim, st, what

    def value(self, s: str) -> str:
        if len(s) > self.lim.max_value_len:
            self.st.add(f"{self.what} attribute values")
            return s[: self.lim.max_value_len]
        return s

    def key(self, k: str) -> str:
        if len(k) > self.lim.max_key_len:
            self.st.add(f"{self.what} attribute keys")
            return k[: self.lim.max_key_len]
        return k


#: What orjson writes otherwise than the engine's ``toJSONString`` (the native decoders' JSON,
#: ``native_sql.json_str``): ``\u00xx`` escapes in small letters, U+2028/U+2029 unescaped. An
#: escaped backslash is matched as a whole, so text that only looks like an escape is left alone.
_ENGINE_JSON = re.compile(rb"\\\\|\\u00(?:0[bef]|1[a-f])|\xe2\x80[\xa8\xa9]")


def _engine_escape(m: re.Match) -> bytes:
    s = m.group()
    if s[0] == 0x5C:  # backslash
        return s if s[1] == 0x5C else s[:4] + s[4:].upper()
    return b"\\u2028" if s[2] == 0xA8 else b"\\u2029"


def _json(obj: Any) -> str:
    """JSON text as the engine writes it, so both decoders store the same bytes."""
    if obj is None:
        return ""
    out = orjson.dumps(obj)
    if b"\\u00" in out or b"\xe2\x80" in out:
        out = _ENGINE_JSON.sub(_engine_escape, out)
    return out.decode()


def _value(v, k: str | None, red: Redactor) -> tuple[str, int]:
    """A non-string AnyValue → (text, type code)."""
    if k == "int_value":
        return str(v.int_value), INT
    if k == "bool_value":
        return ("true" if v.bool_value else "false"), BOOL
    if k == "double_value":
        return repr(v.double_value), DOUBLE
    if k == "bytes_value":
        return base64.b64encode(v.bytes_value).decode(), BYTES
    if k == "array_value":
        return _json([_py(x, red) for x in v.array_value.values]), ARRAY
    if k == "kvlist_value":
        return _json(_py(v, red)), KVLIST
    return "", EMPTY


def _attrs(attrs, red: Redactor, lim: Limits, st: Stats) -> tuple[tuple[str, ...], list[str], tuple[int, ...]]:
    n = len(attrs)
    if n > lim.max_attributes:
        st.add("attributes", n - lim.max_attributes)
        attrs = attrs[: lim.max_attributes]
    keys: list[str] = []
    vals: list[str] = []
    types: list[int] = []
    secret = red.secret_keys  # key → bool, filled by red.key_is_secret
    maxv = lim.max_value_len
    maxk = lim.max_key_len
    for kv in attrs:
        key = _intern(kv.key)  # a handful of distinct keys repeat on every span: keep one copy each
        v = kv.value
        s = v.string_value  # most values are strings: one upb call instead of two
        if s:
            t = STR
            if "=" in s or "@" in s:
                s = red.text(s)
        else:
            k = v.WhichOneof("value")
            if k == "string_value":
                t = STR
            else:
                s, t = _value(v, k, red)
        if len(s) > maxv:
            st.add("attribute values")
            s = s[:maxv]
        if len(key) > maxk:
            st.add("attribute keys")
            key = key[:maxk]
        hit = secret.get(key)
        if hit is None:
            hit = red.key_is_secret(key)
        if hit:
            s = MASK
        keys.append(key)
        vals.append(s)
        types.append(t)
    return shared_tuple(tuple(keys)), vals, shared_tuple(tuple(types))


_SHAPES: dict[tuple, tuple] = {}


def shared_tuple(t: tuple) -> tuple:
    """One object per distinct key list (and type-code list). Spans from one instrumentation carry
    the same keys in the same order, so a batch holds a few dozen distinct lists, and the store
    converts each once instead of once per span. Bounded: cleared past 4096 shapes."""
    s = _SHAPES.get(t)
    if s is None:
        if len(_SHAPES) >= 4096:
            _SHAPES.clear()
        _SHAPES[t] = s = t
    return s


def _attr_dict(attrs, red: Redactor, lim: Limits, st: Stats, what: str, extra: tuple | None = None) -> str:
    """Attributes of an event or a link as a JSON object: at most ``max_attributes``, keys and
    string values cut like span attributes (counted as ``"<what> attribute keys/values"``); a
    repeated key keeps its first place and its last value; ``extra`` is one more (key, value)."""
    if not attrs and extra is None:
        return "{}"
    if len(attrs) > lim.max_attributes:
        st.add(f"{what} attributes", len(attrs) - lim.max_attributes)
        attrs = attrs[: lim.max_attributes]
    cap = _Cap(lim, st, what)
    d = {}
    for kv in attrs:
        key = cap.key(kv.key)
        d[key] = MASK if red.key_is_secret(key) else _py(kv.value, red, 0, cap)
    if extra is not None:
        d[extra[0]] = extra[1]
    return _json(d)


def _resource(resource, red: Redactor, lim: Limits, st: Stats) -> tuple[tuple[str, ...], list[str], str, str]:
    keys, vals, _ = _attrs(resource.attributes, red, lim, st)
    service = instance = ""
    for k, v in zip(keys, vals, strict=True):
        if k == "service.name":
            service = v
        elif k == "service.instance.id":
            instance = v
    return keys, vals, service or "unknown_service", instance


def _text(s: str, lim: Limits, st: Stats, what: str) -> str:
    if len(s) > lim.max_value_len:
        st.add(what)
        return s[: lim.max_value_len]
    return s


SNAPSHOT_EVENT = "tracehouse.snapshot"


def _snapshot_text(s: str, lim: Limits, st: Stats) -> str:
    if len(s) > lim.max_snapshot_body_len:
        st.add("snapshot bodies")
        return s[: lim.max_snapshot_body_len]
    return s


# --- spans -------------------------------------------------------------------------------------

_NONE3: tuple = ((), (), ())  # shared by every span without events or links: no per-span empty lists


def _events(evs, red: Redactor, lim: Limits, st: Stats) -> tuple[list[int], list[str], list[str]]:
    if len(evs) > lim.max_events:
        st.add("events", len(evs) - lim.max_events)
        evs = evs[: lim.max_events]
    ts, names, attrs = [], [], []
    for e in evs:
        ts.append(e.time_unix_nano)
        names.append(_text(e.name, lim, st, "event names"))
        attrs.append(_attr_dict(e.attributes, red, lim, st, "event"))
    return ts, names, attrs


def _links(links, red: Redactor, lim: Limits, st: Stats) -> tuple[list[bytes], list[bytes], list[str]]:
    if len(links) > lim.max_links:
        st.add("links", len(links) - lim.max_links)
        links = links[: lim.max_links]
    tids, sids, attrs = [], [], []
    for lk in links:
        tids.append(lk.trace_id)
        sids.append(lk.span_id)
        attrs.append(_attr_dict(lk.attributes, red, lim, st, "link",
                                ("trace_state", lk.trace_state) if lk.trace_state else None))
    return tids, sids, attrs


_MAX_SECONDS = 0xFFFFFFFF  # the DateTime column's range: later times sit at its end

#: The fields of a span row, in the order ``convert_traces`` builds them.
SPAN_ROW = SPANS.row_layout(
    "timestamp", "trace_id", "span_id", "parent_span_id", "trace_state",
    "service", "name", "kind", "status_code",
    "status_message", "start_ns",
    "duration_ns", "attr_keys", "attr_values", "attr_types", "resource_keys", "resource_values", "scope_name",
    "scope_version",
    "events_time_ns", "events_name", "events_attrs", "links_trace_id", "links_span_id", "links_attrs",
)


def convert_traces(req, batch: Batch, red: Redactor, lim: Limits, st: Stats) -> int:
    """Append the spans of an ExportTraceServiceRequest to ``batch``; returns spans added. A
    resource without spans adds nothing, not even to the truncation counters."""
    rows = batch.rows
    before = len(rows)
    append = rows.append
    for rs in req.resource_spans:
        res = None
        for ss in rs.scope_spans:
            if not ss.spans:
                continue
            if res is None:
                res = _resource(rs.resource, red, lim, st)
            rkeys, rvals, service, _ = res
            scope = ss.scope
            sname, sver = scope.name, scope.version
            for s in ss.spans:
                start = s.start_time_unix_nano
                end = s.end_time_unix_nano
                ak, av, at = _attrs(s.attributes, red, lim, st)
                ev = _events(s.events, red, lim, st) if s.events else _NONE3
                lk = _links(s.links, red, lim, st) if s.links else _NONE3
                name = s.name
                if len(name) > lim.max_value_len:
                    name = _text(name, lim, st, "span names")
                status = s.status
                kind, code = s.kind, status.code
                append((
                    min(start // _NS, _MAX_SECONDS), s.trace_id, s.span_id, s.parent_span_id or _ZERO8, s.trace_state,
                    service, name, kind if 0 <= kind <= 5 else 0, code if 0 <= code <= 2 else 0,
                    _text(status.message, lim, st, "status messages"), start,
                    end - start if end > start else 0, ak, av, at, rkeys, rvals, sname, sver,
                    *ev, *lk,
                ))
    return len(rows) - before


# --- logs --------------------------------------------------------------------------------------

#: The fields of a log row, in the order ``convert_logs`` builds them.
LOG_ROW = LOGS.row_layout(
    "timestamp", "ts_ns", "observed_ns", "trace_id", "span_id",
    "flags", "severity_number", "severity_text", "service", "instance",
    "event_name",
    "body",
    "attr_keys", "attr_values", "attr_types", "resource_keys", "resource_values", "scope_name", "scope_version",
)


def convert_logs(req, batch: Batch, red: Redactor, lim: Limits, st: Stats) -> int:
    """Append the records of an ExportLogsServiceRequest to ``batch``; returns records added. As for
    spans, a resource without records adds nothing, not even to the truncation counters; times
    past the DateTime column's range sit at its end, and severities outside 0..255 at its bounds
    (the column is UInt8: a negative enum value used to fail the whole batch's insert). A severity
    text is cut like a body (counted as ``severity texts``): it was stored whole, and every page of
    the Logs page repeated it per record."""
    rows = batch.rows
    before = len(rows)
    for rl in req.resource_logs:
        res = None
        for sl in rl.scope_logs:
            if not sl.log_records:
                continue
            if res is None:
                res = _resource(rl.resource, red, lim, st)
            rkeys, rvals, service, instance = res
            sname, sver = sl.scope.name, sl.scope.version
            for r in sl.log_records:
                ts = r.time_unix_nano or r.observed_time_unix_nano
                event = r.event_name
                if not event:
                    for kv in r.attributes:
                        if kv.key == "event.name":
                            event = kv.value.string_value
                            break
                body = r.body
                k = body.WhichOneof("value")
                if k == "string_value":
                    text = red.text(body.string_value)
                elif k is None:
                    text = ""
                else:
                    text = _json(_py(body, red))
                ak, av, at = _attrs(r.attributes, red, lim, st)
                rows.append((
                    min(ts // _NS, _MAX_SECONDS), ts, r.observed_time_unix_nano, r.trace_id or _ZERO16,
                    r.span_id or _ZERO8, r.flags, min(max(r.severity_number, 0), 255),
                    _text(r.severity_text, lim, st, "severity texts"), service,
                    instance,
                    _text(event, lim, st, "event names"),
                    _snapshot_text(text, lim, st) if event == SNAPSHOT_EVENT else _text(text, lim, st, "log bodies"),
                    ak, av, at, rkeys, rvals, sname, sver,
                ))
    return len(rows) - before


# --- metrics -----------------------------------------------------------------------------------

_TYPES = {"gauge": 1, "sum": 2, "histogram": 3, "exponential_histogram": 4, "summary": 5}

#: The fields of a metric point row, in the order ``convert_metrics`` builds them.
METRIC_ROW = METRIC_POINTS.row_layout(
    "timestamp", "ts_ns", "start_ns",
    "service", "instance", "name", "description", "unit", "type", "temporality", "is_monotonic",  # head
    "flags", "attr_keys", "attr_values", "attr_types", "resource_keys", "resource_values",
    "scope_name", "scope_version", "value", "count", "sum", "min", "max", "bucket_counts", "explicit_bounds",
    "exp_scale", "exp_zero_count", "exp_positive_offset", "exp_positive_counts", "exp_negative_offset",
    "exp_negative_counts",
    "quantiles", "quantile_values",
    "exemplar_trace_ids", "exemplar_span_ids", "exemplar_values", "exemplar_times_ns",  # ex
)


def _exemplars(p) -> tuple[list[bytes], list[bytes], list[float], list[int]]:
    tids, sids, vals, times = [], [], [], []
    for e in p.exemplars:
        tid, sid = e.trace_id, e.span_id
        tids.append(tid if len(tid) == 16 else _ZERO16)
        sids.append(sid if len(sid) == 8 else _ZERO8)
        vals.append(float(e.as_int) if e.WhichOneof("value") == "as_int" else e.as_double)
        times.append(e.time_unix_nano)
    return tids, sids, vals, times


def convert_metrics(req, batch: Batch, red: Redactor, lim: Limits, st: Stats) -> int:
    """Append the points of an ExportMetricsServiceRequest to ``batch``; returns points added. A
    metric's name, description and unit are cut at the value length (counted once per metric as
    ``metric names|descriptions|units``): every point's row repeats them, and a 100 kB description
    on 2,000 points (a 140 kB body) was stored as 200 MB and took the writer 1.7 GB to insert."""
    rows = batch.rows
    before = len(rows)
    for rm in req.resource_metrics:
        rkeys, rvals, service, instance = _resource(rm.resource, red, lim, st)
        for sm in rm.scope_metrics:
            sname, sver = sm.scope.name, sm.scope.version
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is None:
                    continue
                data = getattr(m, kind)
                mtype = _TYPES[kind]
                temporality = getattr(data, "aggregation_temporality", 0)
                if not 0 <= temporality <= 2:  # an open enum: OTLP/JSON may carry any number
                    temporality = 0
                mono = int(getattr(data, "is_monotonic", False))
                head = (service, instance, _text(m.name, lim, st, "metric names"),
                        _text(m.description, lim, st, "metric descriptions"), _text(m.unit, lim, st, "metric units"),
                        mtype, temporality, mono)
                for p in data.data_points:
                    ts = p.time_unix_nano
                    ak, av, at = _attrs(p.attributes, red, lim, st)
                    value = 0.0
                    count = 0
                    total = mn = mx = 0.0
                    bc: list[int] = []
                    bounds: list[float] = []
                    scale = zero = poff = noff = 0
                    pc: list[int] = []
                    nc: list[int] = []
                    qs: list[float] = []
                    qv: list[float] = []
                    if mtype <= 2:
                        value = float(p.as_int) if p.WhichOneof("value") == "as_int" else p.as_double
                    elif mtype == 5:
                        count, total = p.count, p.sum
                        for q in p.quantile_values:
                            qs.append(q.quantile)
                            qv.append(q.value)
                    else:
                        count, total = p.count, p.sum
                        mn = p.min if p.HasField("min") else 0.0
                        mx = p.max if p.HasField("max") else 0.0
                        if mtype == 3:
                            bc = list(p.bucket_counts)
                            bounds = list(p.explicit_bounds)
                        else:
                            scale, zero = p.scale, p.zero_count
                            poff, pc = p.positive.offset, list(p.positive.bucket_counts)
                            noff, nc = p.negative.offset, list(p.negative.bucket_counts)
                    ex = _exemplars(p) if mtype != 5 else ([], [], [], [])
                    rows.append((
                        min(ts // _NS, _MAX_SECONDS), ts, p.start_time_unix_nano, *head, p.flags, ak, av, at, rkeys, rvals,
                        sname, sver, value, count, total, mn, mx, bc, bounds, scale, zero, poff, pc, noff, nc,
                        qs, qv, *ex,
                    ))
    return len(rows) - before


_LAYOUTS = {"spans": SPAN_ROW, "logs": LOG_ROW, "metric_points": METRIC_ROW}

# signal name → (table, converter)
CONVERTERS = {
    "traces": ("spans", convert_traces),
    "metrics": ("metric_points", convert_metrics),
    "logs": ("logs", convert_logs),
}
