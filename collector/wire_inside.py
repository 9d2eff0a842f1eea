"""What the messages inside a span, a log record or a data point cost: the tables the parse budget's
inner walk (``wire_budget``) charges, and the cheap sign that a body needs it.

An empty attribute is two bytes on the wire (``4a 00``) and ~54 bytes parsed, an empty link ~86;
one holding a single unknown field (``4a 02 08 00``) ~116: 16 MiB of either in one span took
~340-700 MB to parse. A real one is never that small (an attribute's key is a non-empty string,
OpenTelemetry specification, "Attribute"; SDKs drop one with an empty key; an event has its time,
a link its trace and span ids, an exemplar its time and value). So the inner walk charges each
message the bytes a real one at least takes (``CHARGES``), as the list levels are charged. A message
of under five bytes on the wire is a key and a length of 0 or 2 (one byte cannot hold a field): a
body holds few such pairs unless it holds such messages, and only a body with more than one per
``SIGN_BYTES`` bytes is walked inside (a pair inside an id or a number only costs a walk, never a
refusal)."""

from __future__ import annotations

import random
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from py_zipkin.encoding.protobuf import zipkin_pb2

__all__ = ["CHARGES", "SIGN_BYTES", "PIECES", "PIECE", "Table", "ELEMENTS", "POINTS", "needs_inner_walk"]

#: message type → (the name of its level in a refusal, the bytes a real one at least takes on the
#: wire with its tag and length). An empty value (AnyValue), list, map or quantile is valid OTLP:
#: charged its two bytes, never refused.
CHARGES = {
    "opentelemetry.proto.common.v1.KeyValue": ("attributes", 5),  # tag, length, key's tag, length, 1 byte
    "opentelemetry.proto.common.v1.AnyValue": ("values", 2),
    "opentelemetry.proto.common.v1.ArrayValue": ("lists", 2),
    "opentelemetry.proto.common.v1.KeyValueList": ("maps", 2),
    "opentelemetry.proto.trace.v1.Span.Event": ("events", 8),  # its time alone: 9 bytes, 11 with tag, length
    "opentelemetry.proto.trace.v1.Span.Link": ("links", 16),  # trace and span ids: 30 bytes with tags, length
    "opentelemetry.proto.metrics.v1.Exemplar": ("exemplars", 8),  # time and value: 20 bytes
    "opentelemetry.proto.metrics.v1.SummaryDataPoint.ValueAtQuantile": ("quantiles", 2),
    # Zipkin v2 proto3 (``zipkin.proto``): an annotation has its time (fixed64) and a value, a tag a
    # key (Zipkin's own model drops an empty one)
    "zipkin.proto3.Annotation": ("annotations", 8),
    "zipkin.proto3.Span.TagsEntry": ("tags", 5),
}

#: a body with more empty-message pairs than one per this many bytes is walked inside its elements
SIGN_BYTES = 64
#: how many pieces of how many bytes of a body are read for the sign
PIECES, PIECE = 256, 64
_RANDOM = random.Random()  # seeded from os.urandom: a sender cannot tell where the pieces fall

#: field number → (level, charge, the table of that message's own fields)
Table = dict[int, tuple[str, int, Any]]
_MEMO: dict[str, Table] = {}


def _table(desc: Any) -> Table:
    table = _MEMO.get(desc.full_name)
    if table is None:
        table = _MEMO[desc.full_name] = {}  # first: AnyValue → ArrayValue → AnyValue is a cycle
        for f in desc.fields:
            if f.message_type is not None and f.message_type.full_name in CHARGES:
                level, charge = CHARGES[f.message_type.full_name]
                table[f.number] = (level, charge, _table(f.message_type))
    return table


#: the table of one span, of one log record and of one Zipkin span
ELEMENTS = {"traces": _table(Span.DESCRIPTOR), "logs": _table(LogRecord.DESCRIPTOR),
            "zipkin": _table(zipkin_pb2.Span.DESCRIPTOR)}
#: a metric's data field (gauge, sum, …) → the table of one of its data points
POINTS = {f.number: _table(f.message_type.fields_by_name["data_points"].message_type)
          for f in Metric.DESCRIPTOR.oneofs_by_name["data"].fields}


def _tags(roots: list[Table]) -> set[int]:
    """The keys of every message field these tables reach (each one byte: an empty one is ``tag 00``)."""
    seen: set[int] = set()
    todo, done = list(roots), set()
    while todo:
        t = todo.pop()
        if id(t) in done:
            continue
        done.add(id(t))
        for number, (_, _, sub) in t.items():
            seen.add(number << 3 | 2)
            todo.append(sub)
    assert max(seen) < 0x80, "every message field inside an element has a one-byte key"
    return seen


_TAGS = {"traces": _tags([ELEMENTS["traces"]]), "logs": _tags([ELEMENTS["logs"]]),
         "metrics": _tags(list(POINTS.values())), "zipkin": _tags([ELEMENTS["zipkin"]])}


#: keys whose two-byte messages are common in real bodies (a short string, a small value): only
#: their empty messages are counted
_SHORT_REAL = {1 << 3 | 2, 2 << 3 | 2}


def _marks(tags: set[int]) -> bytes:
    """A ``bytes.translate`` table: a key of ``tags`` → 1 (3 for one of ``_SHORT_REAL``), the byte 0 →
    2, the byte 2 → 4, any other byte → 0."""
    return bytes(2 if b == 0 else 4 if b == 2 else 3 if b in tags & _SHORT_REAL else 1 if b in tags else 0
                 for b in range(256))


#: per signal, what turns a body into marks whose ``01 02``, ``01 04`` and ``03 02`` pairs are its
#: pairs of a key and a length of 0 or 2
_MARKS = {signal: _marks(tags) for signal, tags in _TAGS.items()}


def _tiny(marks: bytes) -> int:
    return marks.count(b"\x01\x02") + marks.count(b"\x01\x04") + marks.count(b"\x03\x02")


def needs_inner_walk(signal: str, body: bytes) -> bool:
    """Whether ``body`` may hold more than one tiny message inside its elements per ``SIGN_BYTES``
    bytes, from a sample: ``PIECES`` pieces of ``PIECE`` bytes, one at a random offset in each
    stretch of the body, turned into marks by one ``translate`` and counted by ``_tiny``: the
    pairs of a message field's key and a length of 0 or 2 (every such message is one; not every
    pair is one). It is walked when the sample holds more than one pair per ``SIGN_BYTES`` × 4
    bytes: a body of one per ``SIGN_BYTES`` shows 4× that, wherever its tiny messages are (their
    share of the pieces is their share of the stretches); real bodies hold one pair per ~3,500
    bytes or fewer."""
    stretch = len(body) // PIECES - PIECE
    if stretch <= 0:
        return _tiny(body.translate(_MARKS[signal])) * SIGN_BYTES > len(body)
    step = stretch + PIECE
    offsets = memoryview(_RANDOM.randbytes(4 * PIECES)).cast("I")
    sample = b"".join([body[o:o + PIECE] for o in
                       [i * step + r % stretch for i, r in enumerate(offsets)]])
    return _tiny(sample.translate(_MARKS[signal])) * SIGN_BYTES * 4 > len(sample)
