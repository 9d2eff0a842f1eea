"""``.proto`` text for the storage engine's ``Protobuf`` input format, rendered from the descriptors
that ``opentelemetry-proto`` ships (its wheel has no ``.proto`` files), so field names and numbers
can never disagree with the classes the receiver parses with.

The engine cannot map a recursive message, and OTLP's ``AnyValue`` is recursive (arrays and
key-value lists of ``AnyValue``). The rendered schema unrolls it to a fixed depth per place where
attributes occur: level 1 is the attribute's own value; at the last level, ``array_value`` and
``kvlist_value`` are declared ``bytes`` (the same wire type), so the engine still reports that
one was present (``input_format_protobuf_oneof_presence``) without decoding it, and such a request
takes the Python path. Enums are rendered as ``int32`` (the same varint on the wire). One
self-contained file, no imports.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from opentelemetry.proto.common.v1 import common_pb2

__all__ = ["render_proto", "anyvalue_type", "PRESENCE", "message_name", "RECORD_FIELD", "BATCH_FIELD"]

_SCALAR = {
    FieldDescriptor.TYPE_DOUBLE: "double", FieldDescriptor.TYPE_FLOAT: "float", FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64", FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FIXED32: "fixed32", FieldDescriptor.TYPE_BOOL: "bool", FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes", FieldDescriptor.TYPE_UINT32: "uint32", FieldDescriptor.TYPE_ENUM: "int32",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32", FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_SINT32: "sint32", FieldDescriptor.TYPE_SINT64: "sint64",
}
_ANY = common_pb2.AnyValue.DESCRIPTOR
_KV = common_pb2.KeyValue.DESCRIPTOR
_RECURSIVE = {_ANY.full_name, common_pb2.ArrayValue.DESCRIPTOR.full_name,
              common_pb2.KeyValueList.DESCRIPTOR.full_name, _KV.full_name}
#: A field added to the root message of every record fed to the engine: the record's index in the
#: batch, appended to its bytes (protobuf concatenation merges), so rows name their request.
RECORD_FIELD = ("tracehouse_record", 536870000)
#: And the batch's id (the ``batch_id`` column).
BATCH_FIELD = ("tracehouse_batch", 536870001)


def message_name(desc: Descriptor, depth: int | None = None) -> str:
    base = desc.full_name.replace(".", "_")
    return f"{base}_d{depth}" if depth is not None else base


def render_proto(root: Descriptor, depth_of: Callable[[str, str], int]) -> str:
    """The schema of ``root``; ``depth_of(message full name, field name)`` is the unrolled depth of
    an attribute list (a repeated ``KeyValue`` field) or of an ``AnyValue`` field."""
    out: dict[str, str | None] = {}

    def visit(desc: Descriptor, depth: int | None) -> str:
        name = message_name(desc, depth)
        if name in out:
            return name
        out[name] = None  # reserve the slot (and the order) before the fields
        lines: list[str] = []
        oneofs: dict[str, list[str]] = {}
        for f in desc.fields:
            ty = _field_type(desc, f, depth, visit, depth_of)
            line = f"{'repeated ' if f.is_repeated else ''}{ty} {f.name} = {f.number};"
            if f.containing_oneof is not None:
                oneofs.setdefault(f.containing_oneof.name, []).append(line)
            else:
                lines.append(line)
        if desc is root:
            lines += [f"uint64 {n} = {num};" for n, num in (RECORD_FIELD, BATCH_FIELD)]
        body = [f"  {x}" for x in lines]
        for oneof, members in oneofs.items():
            body += [f"  oneof {oneof} {{"] + [f"    {m}" for m in members] + ["  }"]
        out[name] = f"message {name} {{\n" + "\n".join(body) + "\n}\n"
        return name

    visit(root, None)
    return 'syntax = "proto3";\n\n' + "\n".join(v for v in out.values() if v)


def _field_type(owner: Descriptor, f: FieldDescriptor, depth: int | None, visit, depth_of) -> str:
    if f.type != FieldDescriptor.TYPE_MESSAGE:
        return _SCALAR[f.type]
    target = f.message_type
    if target.full_name not in _RECURSIVE:
        return visit(target, None)
    if owner.full_name not in _RECURSIVE:  # entering attributes (or a body) from a plain message
        return visit(target, max(1, depth_of(owner.full_name, f.name)))
    assert depth is not None
    if owner is _ANY:  # array_value / kvlist_value: one level down, or opaque bytes at the bottom
        return visit(target, depth - 1) if depth > 1 else "bytes"
    return visit(target, depth)


PRESENCE = ("Enum8('none' = 0, 'string_value' = 1, 'bool_value' = 2, 'int_value' = 3, 'double_value' = 4, "
            "'array_value' = 5, 'kvlist_value' = 6, 'bytes_value' = 7, 'string_value_strindex' = 8)")


def anyvalue_type(depth: int) -> str:
    """The engine's column type for an ``AnyValue`` unrolled ``depth`` levels (``value`` is the
    oneof's presence: which member was set)."""
    scalars = ("string_value String, bool_value Bool, int_value Int64, double_value Float64, "
               "bytes_value String")
    if depth <= 1:
        nested = "array_value String, kvlist_value String"
    else:
        inner = anyvalue_type(depth - 1)
        nested = (f"array_value Tuple(values Array({inner})), "
                  f"kvlist_value Tuple(values Array(Tuple(key String, value {inner})))")
    return f"Tuple({scalars}, {nested}, value {PRESENCE})"
