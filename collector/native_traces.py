"""The native trace path as SQL: the engine's input columns for ``ExportTraceServiceRequest`` and the
statement that flattens resource → scope → span and computes every ``spans`` column the way
``convert.convert_traces`` does, plus the truncation counts and a per-request flag for requests that
nest attribute values deeper than the schema unrolls (they take the Python path).

Depths: resource attributes unroll two levels (arrays and key-value lists of scalars, such as
``process.command_args``, stay native); span, event and link attributes one (a nested value there
sends its request to Python).
"""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from .native_schema import anyvalue_type, render_proto
from .native_sql import Sql

__all__ = ["ROOT", "STATS", "proto", "input_columns", "flatten_select", "RESOURCE_DEPTH", "SPAN_DEPTH"]

ROOT = trace_service_pb2.ExportTraceServiceRequest.DESCRIPTOR
RESOURCE_DEPTH = 2
SPAN_DEPTH = 1

#: truncation counter (``tracehouse_collector_truncated_total{what=…}``) → column of the feed table
STATS = {
    "attributes": "st_attributes", "attribute values": "st_attribute_values", "attribute keys": "st_attribute_keys",
    "events": "st_events", "links": "st_links", "event names": "st_event_names",
    "status messages": "st_status_messages", "span names": "st_span_names",
    "event attributes": "st_event_attributes", "event attribute keys": "st_event_attribute_keys",
    "event attribute values": "st_event_attribute_values", "link attributes": "st_link_attributes",
    "link attribute keys": "st_link_attribute_keys", "link attribute values": "st_link_attribute_values",
}


def _depth(message: str, field: str) -> int:
    return RESOURCE_DEPTH if message.endswith(".Resource") else SPAN_DEPTH


def proto() -> str:
    return render_proto(ROOT, _depth)


def input_columns() -> list[tuple[str, str]]:
    """Columns the engine reads from each request (a subset of the message's fields)."""
    kv1 = f"Array(Tuple(key String, value {anyvalue_type(SPAN_DEPTH)}))"
    kv2 = f"Array(Tuple(key String, value {anyvalue_type(RESOURCE_DEPTH)}))"
    span = ("Tuple(trace_id String, span_id String, trace_state String, parent_span_id String, name String, "
            "kind Int32, start_time_unix_nano UInt64, end_time_unix_nano UInt64, "
            f"attributes {kv1}, events Array(Tuple(time_unix_nano UInt64, name String, attributes {kv1})), "
            f"links Array(Tuple(trace_id String, span_id String, trace_state String, attributes {kv1})), "
            "status Tuple(message String, code Int32))")
    rs = (f"Tuple(resource Tuple(attributes {kv2}), "
          f"scope_spans Array(Tuple(scope Tuple(name String, version String), spans Array({span}))))")
    return [("resource_spans", f"Array({rs})"), ("tracehouse_record", "UInt64"), ("tracehouse_batch", "UInt64")]


def _fallback(sql: Sql) -> str:
    """True when any attribute of the request nests deeper than the schema unrolls."""
    def any_nested(attrs: str, depth: int, var: str) -> str:
        return f"arrayExists({var} -> {sql.nested(f'{var}.value', depth)}, {attrs})"
    span = (f"{any_nested('_fs.attributes', SPAN_DEPTH, '_fa')} "
            f"OR arrayExists(_fe -> {any_nested('_fe.attributes', SPAN_DEPTH, '_fea')}, _fs.events) "
            f"OR arrayExists(_fl -> {any_nested('_fl.attributes', SPAN_DEPTH, '_fla')}, _fs.links)")
    return (f"arrayExists(_frs -> {any_nested('_frs.resource.attributes', RESOURCE_DEPTH, '_fra')} OR "
            f"arrayExists(_fss -> arrayExists(_fs -> {span}, _fss.spans), _frs.scope_spans), resource_spans)")


def flatten_select(sql: Sql, raw_table: str) -> str:
    """One row per span of the requests inserted into ``raw_table``: the ``spans`` columns,
    ``record`` (the request's index in its batch), ``fallback`` and the ``st_*`` counts. Layered
    so that every large expression is written (and analysed, per insert) once."""
    lim = sql.lim
    res = sql.attrs("rs.resource.attributes", RESOURCE_DEPTH)
    res_v = sql.attr_values("res_keys", "res_texts")
    span = sql.attrs("s.attributes", SPAN_DEPTH)
    span_v = sql.attr_values("attr_keys", "attr_texts")
    ev = sql.attr_dict("_e.attributes")
    lk = sql.attr_dict("_l.attributes", "trace_state", "_l.trace_state")
    first = "(first_scope AND s_i = 1)"
    evs = f"arraySlice(s.events, 1, {lim.max_events})"
    lks = f"arraySlice(s.links, 1, {lim.max_links})"
    zero8 = "toFixedString(unhex('0000000000000000'), 8)"

    # each event's (link's) JSON and counts in one lambda: the redaction and key checks they
    # share are then written, analysed and computed once, not once per count
    ev_t = f"arrayMap(_e -> ({ev['json']}, {ev['n_attributes']}, {ev['n_keys']}, {ev['n_values']}), {evs})"
    lk_t = f"arrayMap(_l -> ({lk['json']}, {lk['n_attributes']}, {lk['n_keys']}, {lk['n_values']}), {lks})"

    def total(col: str, i: int) -> str:
        return f"toUInt64(arraySum(_t -> _t.{i}, {col}))"

    # Each level unnests with arrayJoin() over a column of its own and passes on only what the
    # next level reads: ARRAY JOIN clauses over nested tuples cost a copy of the input per level.
    requests = (f"SELECT tracehouse_record AS record, tracehouse_batch AS batch, {_fallback(sql)} AS fallback, "
                f"arrayJoin(resource_spans) AS rs FROM {raw_table}")
    resources = (f"SELECT record, batch, fallback, {res['keys']} AS res_keys, {res['texts']} AS res_texts, "
                 f"{res['n_attributes']} AS r_n_attributes, {res['n_keys']} AS r_n_keys, "
                 "arrayFirstIndex(_x -> notEmpty(_x.spans), rs.scope_spans) AS first_ss, rs.scope_spans AS sss "
                 f"FROM ({requests})")
    carried = "record, batch, fallback, res_keys, res_values, r_n_values, r_n_attributes, r_n_keys, service"
    resources2 = (f"SELECT record, batch, fallback, res_keys, {res_v['values']} AS res_values, "
                  f"{res_v['n_values']} AS r_n_values, r_n_attributes, r_n_keys, "
                  "arrayLastIndex(_k -> _k = 'service.name', res_keys) AS svc_at, "
                  "if(svc_at > 0, res_values[svc_at], '') AS svc, "
                  "if(svc = '', 'unknown_service', svc) AS service, "
                  "arrayJoin(arrayMap((_x, _i) -> (_x.scope.name, _x.scope.version, _i = first_ss, _x.spans), "
                  f"sss, arrayEnumerate(sss))) AS sc FROM ({resources})")
    scopes = (f"SELECT {carried}, sc.1 AS scope_name, sc.2 AS scope_version, sc.3 AS first_scope, "
              f"arrayJoin(arrayZip(sc.4, arrayEnumerate(sc.4))) AS sp FROM ({resources2})")
    spans_from = f"(SELECT {carried}, scope_name, scope_version, first_scope, sp.1 AS s, sp.2 AS s_i FROM ({scopes}))"
    spans = [
        "toUInt32(least(intDiv(s.start_time_unix_nano, 1000000000), 4294967295)) AS timestamp",
        "toFixedString(s.trace_id, 16) AS trace_id",
        "toFixedString(s.span_id, 8) AS span_id",
        f"if(s.parent_span_id = '', {zero8}, toFixedString(s.parent_span_id, 8)) AS parent_span_id",
        "s.trace_state AS trace_state",
        "service",
        f"substringUTF8(s.name, 1, {lim.max_value_len}) AS name",
        "toUInt8(if(s.kind BETWEEN 0 AND 5, s.kind, 0)) AS kind",
        "toUInt8(if(s.status.code BETWEEN 0 AND 2, s.status.code, 0)) AS status_code",
        f"substringUTF8(s.status.message, 1, {lim.max_value_len}) AS status_message",
        "s.start_time_unix_nano AS start_ns",
        "if(s.end_time_unix_nano > s.start_time_unix_nano, s.end_time_unix_nano - s.start_time_unix_nano, 0) "
        "AS duration_ns",
        f"{span['keys']} AS attr_keys",
        f"{span['texts']} AS attr_texts",
        f"{span['types']} AS attr_types",
        "res_keys AS resource_keys",
        "res_values AS resource_values",
        "scope_name",
        "scope_version",
        f"arrayMap(_e -> _e.time_unix_nano, {evs}) AS events_time_ns",
        f"arrayMap(_e -> substringUTF8(_e.name, 1, {lim.max_value_len}), {evs}) AS events_name",
        f"{ev_t} AS ev_t",
        f"arrayMap(_l -> toFixedString(_l.trace_id, 16), {lks}) AS links_trace_id",
        f"arrayMap(_l -> toFixedString(_l.span_id, 8), {lks}) AS links_span_id",
        f"{lk_t} AS lk_t",
        "batch AS batch_id",
        "record",
        "toUInt8(fallback) AS fallback",
        f"{span['n_attributes']} + if({first}, r_n_attributes, 0) AS st_attributes",
        f"if({first}, r_n_values, 0) AS st_res_values",
        f"{span['n_keys']} + if({first}, r_n_keys, 0) AS st_attribute_keys",
        f"toUInt64(greatest(length(s.events) - {lim.max_events}, 0)) AS st_events",
        f"toUInt64(greatest(length(s.links) - {lim.max_links}, 0)) AS st_links",
        f"toUInt64(arrayCount(_e -> lengthUTF8(_e.name) > {lim.max_value_len}, {evs})) AS st_event_names",
        f"toUInt64(lengthUTF8(s.status.message) > {lim.max_value_len}) AS st_status_messages",
        f"toUInt64(lengthUTF8(s.name) > {lim.max_value_len}) AS st_span_names",
    ]
    final = [name.rsplit(" AS ", 1)[-1] for name in spans]
    final = [c for c in final if c not in ("attr_texts", "st_res_values")]
    final = [c for c in final if c not in ("ev_t", "lk_t")]
    final += [f"{span_v['values']} AS attr_values", f"{span_v['n_values']} + st_res_values AS st_attribute_values",
              "arrayMap(_t -> _t.1, ev_t) AS events_attrs", "arrayMap(_t -> _t.1, lk_t) AS links_attrs",
              f"{total('ev_t', 2)} AS st_event_attributes", f"{total('ev_t', 3)} AS st_event_attribute_keys",
              f"{total('ev_t', 4)} AS st_event_attribute_values", f"{total('lk_t', 2)} AS st_link_attributes",
              f"{total('lk_t', 3)} AS st_link_attribute_keys", f"{total('lk_t', 4)} AS st_link_attribute_values"]
    return f"SELECT {', '.join(final)} FROM (SELECT {', '.join(spans)} FROM {spans_from})"
