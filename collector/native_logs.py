"""The native log path: the engine's input columns for ``ExportLogsServiceRequest`` and the statement
that flattens resource → scope → log record and computes every ``logs`` column the way
``convert.convert_logs`` does, plus the truncation counts and a per-request flag for the requests
it leaves to Python; and ``NativeLogs``, the decoder that runs it (``native_feed.NativeFeed``).

What stays native: string (and empty, integer, boolean, bytes) bodies with scalar attributes, the
``event.name`` attribute and the snapshot event's longer body cut included. Requests go to the
Python path when a record's body is an array or a key-value list (Python writes it as JSON), when
a body or a record attribute is a double (unless the engine formats doubles, ``every_value``) or an
array or key-value list, and when a resource attribute nests deeper than two levels (arrays and
key-value lists of scalars, such as ``process.command_args``, stay native).
"""

from __future__ import annotations

from types import SimpleNamespace

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from .convert import SNAPSHOT_EVENT
from .native_feed import NativeFeed
from .native_schema import anyvalue_type, render_proto
from .native_sql import Sql, float_text, lit

__all__ = ["ROOT", "STATS", "proto", "input_columns", "flatten_select", "NativeLogs", "RESOURCE_DEPTH",
           "RECORD_DEPTH"]

ROOT = logs_service_pb2.ExportLogsServiceRequest.DESCRIPTOR
RESOURCE_DEPTH = 2
RECORD_DEPTH = 1  # record attributes and the body

#: truncation counter (``tracehouse_collector_truncated_total{what=…}``) → column of the feed table
STATS = {
    "attributes": "st_attributes", "attribute values": "st_attribute_values", "attribute keys": "st_attribute_keys",
    "event names": "st_event_names", "log bodies": "st_log_bodies", "snapshot bodies": "st_snapshot_bodies",
    "severity texts": "st_severity_texts",
}


def _depth(message: str, field: str) -> int:
    return RESOURCE_DEPTH if message.endswith(".Resource") else RECORD_DEPTH


def proto() -> str:
    return render_proto(ROOT, _depth)


def input_columns() -> list[tuple[str, str]]:
    """Columns the engine reads from each request (a subset of the message's fields)."""
    any1 = anyvalue_type(RECORD_DEPTH)
    kv1 = f"Array(Tuple(key String, value {any1}))"
    kv2 = f"Array(Tuple(key String, value {anyvalue_type(RESOURCE_DEPTH)}))"
    record = ("Tuple(time_unix_nano UInt64, observed_time_unix_nano UInt64, severity_number Int32, "
              f"severity_text String, body {any1}, attributes {kv1}, flags UInt32, trace_id String, "
              "span_id String, event_name String)")
    rl = (f"Tuple(resource Tuple(attributes {kv2}), "
          f"scope_logs Array(Tuple(scope Tuple(name String, version String), log_records Array({record}))))")
    return [("resource_logs", f"Array({rl})"), ("tracehouse_record", "UInt64"), ("tracehouse_batch", "UInt64")]


def _fallback(sql: Sql) -> str:
    """True when the request holds a value the engine leaves to Python (see the module's text)."""
    def any_nested(attrs: str, depth: int, var: str) -> str:
        return f"arrayExists({var} -> {sql.nested(f'{var}.value', depth)}, {attrs})"
    record = f"{any_nested('_fr.attributes', RECORD_DEPTH, '_fa')} OR {sql.nested('_fr.body', RECORD_DEPTH)}"
    return (f"arrayExists(_frl -> {any_nested('_frl.resource.attributes', RESOURCE_DEPTH, '_fra')} OR "
            f"arrayExists(_fsl -> arrayExists(_fr -> {record}, _fsl.log_records), _frl.scope_logs), resource_logs)")


def _body_text(sql: Sql, b: str) -> str:
    """``convert_logs``' body text before its cut: a string redacted, nothing as '', a scalar as
    JSON (``_json(_py(body))``); arrays and key-value lists never get here (Python path)."""
    branches = [
        f"{b}.value = 'string_value', {sql.redact_if_needed(f'{b}.string_value')}",
        f"{b}.value = 'int_value', toString({b}.int_value)",
        f"{b}.value = 'bool_value', if({b}.bool_value, 'true', 'false')",
        f"{b}.value = 'bytes_value', concat('\"', base64Encode({b}.bytes_value), '\"')",
    ]
    if sql.doubles:
        branches.append(f"{b}.value = 'double_value', {float_text(f'{b}.double_value', 'json')}")
    return "multiIf(" + ", ".join(branches) + ", '')"


def flatten_select(sql: Sql, raw_table: str) -> str:
    """One row per log record of the requests inserted into ``raw_table``: the ``logs`` columns,
    ``record`` (the request's index in its batch), ``fallback`` and the ``st_*`` counts. Layered as
    ``native_traces.flatten_select`` is (each level unnests with arrayJoin() and passes on only
    what the next one reads), so every large expression is written and analysed once."""
    lim = sql.lim
    res = sql.attrs("rl.resource.attributes", RESOURCE_DEPTH)
    res_v = sql.attr_values("res_keys", "res_texts")
    attrs = sql.attrs("r.attributes", RECORD_DEPTH)
    attr_v = sql.attr_values("attr_keys", "attr_texts")
    first = "(first_scope AND r_i = 1)"
    snapshot = f"(event = {lit(SNAPSHOT_EVENT)})"

    requests = (f"SELECT tracehouse_record AS record, tracehouse_batch AS batch, {_fallback(sql)} AS fallback, "
                f"arrayJoin(resource_logs) AS rl FROM {raw_table}")
    resources = (f"SELECT record, batch, fallback, {res['keys']} AS res_keys, {res['texts']} AS res_texts, "
                 f"{res['n_attributes']} AS r_n_attributes, {res['n_keys']} AS r_n_keys, "
                 "arrayFirstIndex(_x -> notEmpty(_x.log_records), rl.scope_logs) AS first_sl, rl.scope_logs AS sls "
                 f"FROM ({requests})")
    carried = ("record, batch, fallback, res_keys, res_values, r_n_values, r_n_attributes, r_n_keys, service, "
               "instance")

    def last_value(key: str) -> str:
        return f"arrayMap(_at -> if(_at > 0, res_values[_at], ''), [arrayLastIndex(_k -> _k = {lit(key)}, res_keys)])[1]"

    resources2 = (f"SELECT record, batch, fallback, res_keys, {res_v['values']} AS res_values, "
                  f"{res_v['n_values']} AS r_n_values, r_n_attributes, r_n_keys, "
                  f"{last_value('service.name')} AS svc, if(svc = '', 'unknown_service', svc) AS service, "
                  f"{last_value('service.instance.id')} AS instance, "
                  "arrayJoin(arrayMap((_x, _i) -> (_x.scope.name, _x.scope.version, _i = first_sl, _x.log_records), "
                  f"sls, arrayEnumerate(sls))) AS sc FROM ({resources})")
    scopes = (f"SELECT {carried}, sc.1 AS scope_name, sc.2 AS scope_version, sc.3 AS first_scope, "
              f"arrayJoin(arrayZip(sc.4, arrayEnumerate(sc.4))) AS lr FROM ({resources2})")
    records_from = (f"(SELECT {carried}, scope_name, scope_version, first_scope, lr.1 AS r, lr.2 AS r_i, "
                    "if(r.time_unix_nano != 0, r.time_unix_nano, r.observed_time_unix_nano) AS ts, "
                    "arrayFirstIndex(_a -> _a.key = 'event.name', r.attributes) AS ev_at, "
                    "if(r.event_name != '', r.event_name, if(ev_at > 0, r.attributes[ev_at].value.string_value, '')) "
                    f"AS event, {_body_text(sql, 'r.body')} AS text FROM ({scopes}))")
    cols = [
        "toUInt32(least(intDiv(ts, 1000000000), 4294967295)) AS timestamp",
        "ts AS ts_ns",
        "r.observed_time_unix_nano AS observed_ns",
        "toFixedString(r.trace_id, 16) AS trace_id",
        "toFixedString(r.span_id, 8) AS span_id",
        "r.flags AS flags",
        "toUInt8(least(greatest(r.severity_number, 0), 255)) AS severity_number",
        f"substringUTF8(r.severity_text, 1, {lim.max_value_len}) AS severity_text",
        "service",
        "instance",
        f"substringUTF8(event, 1, {lim.max_value_len}) AS event_name",
        f"if({snapshot}, substringUTF8(text, 1, {lim.max_snapshot_body_len}), "
        f"substringUTF8(text, 1, {lim.max_value_len})) AS body",
        f"{attrs['keys']} AS attr_keys",
        f"{attrs['texts']} AS attr_texts",
        f"{attrs['types']} AS attr_types",
        "res_keys AS resource_keys",
        "res_values AS resource_values",
        "scope_name",
        "scope_version",
        "batch AS batch_id",
        "record",
        "toUInt8(fallback) AS fallback",
        f"{attrs['n_attributes']} + if({first}, r_n_attributes, 0) AS st_attributes",
        f"if({first}, r_n_values, 0) AS st_res_values",
        f"{attrs['n_keys']} + if({first}, r_n_keys, 0) AS st_attribute_keys",
        f"toUInt64(lengthUTF8(event) > {lim.max_value_len}) AS st_event_names",
        f"toUInt64(lengthUTF8(r.severity_text) > {lim.max_value_len}) AS st_severity_texts",
        f"toUInt64(NOT {snapshot} AND lengthUTF8(text) > {lim.max_value_len}) AS st_log_bodies",
        f"toUInt64({snapshot} AND lengthUTF8(text) > {lim.max_snapshot_body_len}) AS st_snapshot_bodies",
    ]
    final = [c.rsplit(" AS ", 1)[-1] for c in cols]
    final = [c for c in final if c not in ("attr_texts", "st_res_values")]
    final += [f"{attr_v['values']} AS attr_values", f"{attr_v['n_values']} + st_res_values AS st_attribute_values"]
    return f"SELECT {', '.join(final)} FROM (SELECT {', '.join(cols)} FROM {records_from})"


class NativeLogs(NativeFeed):
    """Log requests from the WAL into the embedded engine as they are (``native_feed``)."""

    signal = "logs"
    table = "logs"
    spec = SimpleNamespace(ROOT=ROOT, STATS=STATS, proto=proto, input_columns=input_columns,
                           flatten_select=flatten_select)
