"""What an OTLP protobuf body may cost to parse: a wire-level count of its list elements.

upb parses a body with no limit on how many messages it holds, and each costs far more parsed
than sent: an empty span is two bytes on the wire (``12 00``) and ~160 bytes parsed and checked,
so 20 MiB of them (a 20 kB gzip body, or one gRPC message) took ~1.8 GB and 15 s. A body over
``SMALL_BODY`` bytes is first walked here, at the list levels only (resources, scopes, spans /
log records / metrics, data points), and refused (413) as soon as its elements pass a budget: each
element is charged the bytes a real one at least takes (``MIN_BYTES``), and the charges of the
elements up to any point may not pass the bytes before it by more than ``SLACK``. A real body is charged a fraction of its size (spans with attributes: ~400 bytes
each, charged 32), so only a body of countless tiny elements is refused, in milliseconds. Field
numbers come from the generated descriptors.

Inside spans, log records and data points (attributes, events, links, exemplars, values in values)
the body is walked only when a sample of it holds many empty messages (``wire_inside``): 16 MiB of
empty attributes in one span took +430 MB to parse, empty links +690 MB; each such message is
then charged what a real one at least takes, as the list elements are.
"""

from __future__ import annotations

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans
from py_zipkin.encoding.protobuf import zipkin_pb2

from .errors import CollectorError
from .wire_inside import CHARGES, ELEMENTS, POINTS, Table, needs_inner_walk

__all__ = ["SMALL_BODY", "MIN_BYTES", "OverBudget", "over_budget"]

#: bodies up to this size are parsed as they come: the worst shape of 1 MiB costs < ~100 MB parsed
SMALL_BODY = 1 << 20

#: the charge of a field the walk steps over (a span's or metric's own fields are not walked)
OTHER = 4

#: how far the charges of the elements up to a point of a body may pass the bytes before it
SLACK = 64 << 10

#: the bytes a real element at each list level at least takes on the wire, with its tag and length
MIN_BYTES = {"resources": 16, "scopes": 16, "spans": 32, "log_records": 16, "metrics": 24, "data_points": 12,
             "resource attributes": 8, "other fields": OTHER,
             "Zipkin spans": 20}  # a Zipkin v2 proto3 span: its trace id and span id, 8 bytes each
#: the same inside a span, a log record or a data point (``wire_inside``)
_ALL_BYTES = {**MIN_BYTES, **dict(CHARGES.values())}
#: how deep the inner walk follows values in values (the parser refuses a body nested past 100)
_DEPTH = 100


def _levels(request: type[Message], path: tuple[str, ...]) -> list[tuple[int, str]]:
    desc, out = request.DESCRIPTOR, []
    for i, name in enumerate(path):
        f = desc.fields_by_name[name]
        out.append((f.number, ("resources", "scopes")[i] if i < 2 else name))
        desc = f.message_type
    return out


#: the path from each request to its list levels: (field number, name of the level) per level
_LEVELS = {
    "traces": _levels(ExportTraceServiceRequest, ("resource_spans", "scope_spans", "spans")),
    "logs": _levels(ExportLogsServiceRequest, ("resource_logs", "scope_logs", "log_records")),
    "metrics": _levels(ExportMetricsServiceRequest, ("resource_metrics", "scope_metrics", "metrics")),
}
#: a metric's data fields (gauge, sum, histogram, …), each a message whose field 1 is data_points
_METRIC_DATA = frozenset(f.number for f in Metric.DESCRIPTOR.oneofs_by_name["data"].fields)
_POINTS_FIELDS = {f.message_type.fields_by_name["data_points"].number
                  for f in Metric.DESCRIPTOR.oneofs_by_name["data"].fields}
assert len(_POINTS_FIELDS) == 1, "every metric data type has data_points at one field number"
_POINTS = _POINTS_FIELDS.pop()


#: a resource's attributes are walked too (few in a real body; every one read to find service.name)
_RESOURCE = frozenset({ResourceSpans.DESCRIPTOR.fields_by_name["resource"].number})
_RESOURCE_ATTRS = Resource.DESCRIPTOR.fields_by_name["attributes"].number
#: a Zipkin body (``ListOfSpans``) is one list level: its spans
_ZIPKIN_SPANS = zipkin_pb2.ListOfSpans.DESCRIPTOR.fields_by_name["spans"].number


class OverBudget(CollectorError):
    """The body's elements passed the budget at the level named."""


class _Walk:
    """Charges the elements of one body as they come: the charges up to any point of the body may
    pass the bytes before that point by ``SLACK`` at most, so a body of tiny elements is refused
    within its first ~``SLACK`` bytes. Stops at the first malformed field (the parser then names it)."""

    def __init__(self, body: bytes):
        self.buf = body
        self.used = 0
        self.last = 0  # the number of the field ``elements`` yielded last
        self.pos = 0  # where the field after the one ``elements(one=True)`` walked starts
        self.count: dict[str, int] = {}

    def elements(self, level: str | None, start: int, end: int, wanted: frozenset[int], leaves: bool = False,
                 one: bool = False):
        """(start, end) of each length-delimited field of ``buf[start:end]`` whose number is in
        ``wanted``, each charged to ``level`` (None: not charged); ``leaves``: charged, not yielded;
        ``one``: the first field only, where the next starts left in ``pos``."""
        buf, cost, used, pos, n = self.buf, MIN_BYTES[level] if level else 0, self.used, start, 0
        try:
            while pos < end:
                key = buf[pos]
                pos += 1
                if key & 0x80:
                    key, pos = self._varint(key, pos)
                wire = key & 7
                if wire == 2:
                    size = buf[pos] if pos < end else 0
                    pos += 1
                    if size & 0x80:  # two bytes (128 to 16,383: most elements) without a call
                        if pos < end and not buf[pos] & 0x80:
                            size = size & 0x7F | buf[pos] << 7
                            pos += 1
                        else:
                            size, pos = self._varint(size, pos)
                    if pos + size > end:
                        pos = end
                        return
                    if key >> 3 in wanted:
                        n += 1
                        used += cost
                        if cost and used > pos + SLACK:
                            raise OverBudget(level, pos)
                        if not leaves:
                            self.used, self.last = used, key >> 3
                            yield pos, pos + size
                            used = self.used
                        pos += size
                        if one:
                            return
                        continue
                    pos += size
                else:
                    pos = _skip(buf, wire, pos, end)
                    if pos < 0:
                        pos = end
                        return
                # any other field costs the walk a step, however small: charged too
                self.count["other fields"] = self.count.get("other fields", 0) + 1
                used += OTHER
                if used > pos + SLACK:
                    raise OverBudget("other fields", pos)
                if one:
                    return
        finally:
            self.pos = pos
            self.used = used
            if level:
                self.count[level] = self.count.get(level, 0) + n

    def leaves(self, level: str, start: int, end: int, number: int) -> None:
        """Charge the fields ``number`` of ``buf[start:end]`` to ``level``: those with a one-byte key
        and a length under 16,384 (nearly all) are read here in fewer steps than ``elements`` takes,
        any other field through it."""
        buf, tag, cost, used, pos, n = self.buf, number << 3 | 2, MIN_BYTES[level], self.used, start, 0
        while pos < end:
            if buf[pos] == tag and pos + 1 < end:
                size = buf[pos + 1]
                if not size & 0x80:
                    pos += 2 + size
                elif pos + 2 < end and not buf[pos + 2] & 0x80:
                    pos += 3 + (size & 0x7F | buf[pos + 2] << 7)
                else:
                    pos = self._one(level, pos, end, number, used)
                    used = self.used
                    continue
                n += 1
                used += cost
                if used > pos + SLACK:
                    self.used, self.count[level] = used, self.count.get(level, 0) + n
                    raise OverBudget(level, pos)
            else:
                pos = self._one(level, pos, end, number, used)
                used = self.used
        self.used, self.count[level] = used, self.count.get(level, 0) + n

    def _one(self, level: str, pos: int, end: int, number: int, used: int) -> int:
        """Walk the one field at ``pos`` through ``elements`` (charged if it is ``number``); where
        the next one starts (``end`` when it is malformed)."""
        self.used = used
        for _ in self.elements(level, pos, end, frozenset({number}), leaves=True, one=True):
            pass
        return self.pos

    def _varint(self, first: int, pos: int) -> tuple[int, int]:
        buf, value, shift = self.buf, first & 0x7F, 7
        while pos < len(buf) and shift < 64:
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value, pos
            shift += 7
        return 7, len(buf)  # malformed: wire type 7 (as a key) or a length past the end stops the walk

    def _field(self, pos: int, end: int) -> tuple[int, int, int]:
        """(key, where its value starts, its length for wire type 2, else 0) of the field at ``pos``."""
        buf = self.buf
        key = buf[pos]
        pos += 1
        if key & 0x80:
            key, pos = self._varint(key, pos)
        if key & 7 != 2:
            return key, pos, 0
        size = buf[pos] if pos < end else 0
        pos += 1
        if size & 0x80:
            size, pos = self._varint(size, pos)
        return key, pos, size

    def inside(self, start: int, end: int, table: Table) -> None:
        """Charge the messages inside one element of ``buf[start:end]`` as ``table`` says
        (``wire_inside.tables``), those inside them too; its other fields are stepped over uncharged
        (what they cost parsed is about their bytes). Stops at the first malformed field."""
        buf, used, pos, count = self.buf, self.used, start, self.count
        stack: list[tuple[int, int, Table]] = []
        try:
            while True:
                while pos < end:
                    key, pos, size = self._field(pos, end)
                    if key & 7 != 2:
                        pos = _skip(buf, key & 7, pos, end)
                        if pos < 0:
                            return
                        continue
                    if pos + size > end:
                        return
                    entry = table.get(key >> 3)
                    if entry is not None:
                        level, charge, sub = entry
                        n = 1
                        if not size and charge == 2 and buf[pos - 2] == key:  # nulls: a run at C speed
                            n = _run(buf, pos - 2, end)
                            pos += 2 * n - 2
                        used += charge * n
                        count[level] = count.get(level, 0) + n
                        if used > pos + SLACK:
                            raise OverBudget(level, pos)
                        if sub and size and len(stack) < _DEPTH:
                            stack.append((pos + size, end, table))
                            end, table = pos + size, sub
                            continue
                    pos += size
                if not stack:
                    return
                pos, end, table = stack.pop()
        finally:
            self.used = used

    def spans_or_logs(self, levels: list[tuple[int, str]], inner: Table | None = None) -> None:
        """``inner``: walk inside each span or log record with this table too."""
        (rf, _), (sf, _), (xf, x) = levels
        for rs, re_ in self.elements("resources", 0, len(self.buf), frozenset({rf})):
            for ss, se in self.elements("scopes", rs, re_, _RESOURCE | {sf}):
                if self.last in _RESOURCE:  # the resource, charged as a scope: its attributes
                    self.leaves("resource attributes", ss, se, _RESOURCE_ATTRS)
                elif inner is None:
                    self.leaves(x, ss, se, xf)
                else:
                    for xs, xe in self.elements(x, ss, se, frozenset({xf})):
                        self.inside(xs, xe, inner)

    def metrics(self, levels: list[tuple[int, str]], inner: dict[int, Table] | None = None) -> None:
        """``inner``: walk inside each data point with the table of its metric's data field too."""
        (rf, _), (sf, _), (mf, _) = levels
        for rs, re_ in self.elements("resources", 0, len(self.buf), frozenset({rf})):
            for ss, se in self.elements("scopes", rs, re_, _RESOURCE | {sf}):
                if self.last in _RESOURCE:
                    self.leaves("resource attributes", ss, se, _RESOURCE_ATTRS)
                    continue
                for ms, me in self.elements("metrics", ss, se, frozenset({mf})):
                    for ds, de in self.elements(None, ms, me, _METRIC_DATA):
                        if inner is None:
                            self.leaves("data_points", ds, de, _POINTS)
                            continue
                        table = inner[self.last]
                        for ps, pe in self.elements("data_points", ds, de, frozenset({_POINTS})):
                            self.inside(ps, pe, table)

    def zipkin(self, inner: Table | None = None) -> None:
        """A Zipkin v2 proto3 body; ``inner``: walk inside each span with this table too."""
        if inner is None:
            self.leaves("Zipkin spans", 0, len(self.buf), _ZIPKIN_SPANS)
            return
        for xs, xe in self.elements("Zipkin spans", 0, len(self.buf), frozenset({_ZIPKIN_SPANS})):
            self.inside(xs, xe, inner)


def _skip(buf: bytes, wire: int, pos: int, end: int) -> int:
    """Where the field of wire type ``wire`` (not 2) whose value starts at ``pos`` ends; -1 for a
    wire type a field cannot have."""
    if wire == 0:
        while pos < end and buf[pos] & 0x80:
            pos += 1
        return pos + 1
    if wire == 1:
        return pos + 8
    if wire == 5:
        return pos + 4
    return -1


def _run(buf: bytes, start: int, end: int) -> int:
    """How many copies of the two bytes at ``start`` follow one another from there (before ``end``),
    found by ``startswith`` on runs of 4,096, 64 and 1 copies."""
    pair, pos = buf[start:start + 2], start
    for step in (4096, 64, 1):
        run = pair * step
        while buf.startswith(run, pos, end):
            pos += 2 * step
    return (pos - start) // 2


def over_budget(signal: str, body: bytes, small: int = SMALL_BODY, inner: bool | None = None) -> str | None:
    """Why a protobuf body over ``small`` bytes holds too many list elements for its size, or too
    many messages inside them (the reason for a 413), or None: a smaller body, or one within the
    budget. ``signal``: traces, logs, metrics, or zipkin (a Zipkin v2 proto3 ``ListOfSpans``).
    ``inner``: whether to walk inside spans, log records and data points (None: when
    ``wire_inside.needs_inner_walk`` says so)."""
    if len(body) <= small:
        return None
    walk = _Walk(body)
    if inner is None:
        inner = needs_inner_walk(signal, body)
    try:
        if signal == "metrics":
            walk.metrics(_LEVELS[signal], POINTS if inner else None)
        elif signal == "zipkin":
            walk.zipkin(ELEMENTS[signal] if inner else None)
        else:
            walk.spans_or_logs(_LEVELS[signal], ELEMENTS[signal] if inner else None)
    except OverBudget as over:
        level, pos = over.args
        return (f"the body holds {walk.count[level]:,} {level.replace('_', ' ')} in its first {pos:,} "
                f"bytes: too many for their size (a body over {small:,} bytes may hold one per "
                f"{_ALL_BYTES[level]} bytes); send fewer per request")
    return None
