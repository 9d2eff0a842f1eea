"""Every table of the ClickHouse schema, as data: one definition each.

The DDL (``schema.render_*``), the insert column order, the Arrow schema and the rows producers
build (``Table.row_layout``) all come from here. Nothing here renders SQL or talks to a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ZERO_SPAN_ID = b"\x00" * 8
ZERO_TRACE_ID = b"\x00" * 16

# Signals with a retention setting, and the tables each one covers.
RETENTION_TABLES: dict[str, tuple[str, ...]] = {
    "spans": ("spans", "red_1m", "edges_1m", "trace_summary", "service_endpoints"),
    "metrics": ("metric_points",),
    "logs": ("logs",),
    "alerts": ("alert_history",),
}
DEFAULT_RETENTION_DAYS = {"spans": 7, "metrics": 30, "logs": 7, "alerts": 90}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # ClickHouse type; "LC(String)" becomes LowCardinality(String) where supported
    codec: str = ""  # applied only where codecs are supported


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    engine: str  # MergeTree family, without parameters for the replicated form
    order_by: str
    partition_by: str = ""
    engine_args: str = ""
    ttl_column: str = ""  # DateTime column for TTL/partition-drop retention; "" = kept
    signal: str = ""
    indexes: tuple[str, ...] = ()  # data-skipping indexes, only where supported
    settings: str = "index_granularity = 8192"
    insertable: bool = True  # written by the store (False: filled by a materialized view)
    small_part_bytes: int = 0  # parts smaller than this (uncompressed) are compact and packed, where supported
    shard_key: str = "rand()"
    # On a cluster: "sharded" tables are replicated within each shard (``<name>_local``) behind a
    # Distributed table named ``<name>``; "everywhere" tables (small bookkeeping) are one replicated
    # table with a replica on every node, read and written locally under their own name.
    placement: str = "sharded"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def row_layout(self, *names: str) -> RowLayout:
        """The layout of a producer's rows for this table: the column ``names`` its row tuples
        hold, in the order it builds them. Checked here, once (call it at import): every column the
        producer must fill is named once, and nothing else."""
        return RowLayout(self, names)


#: Columns the store fills itself on insert (``Store.insert`` tags every row with its batch id).
STORE_FILLED = frozenset({"batch_id"})


class RowLayout:
    """Rows of one table as a producer builds them: plain tuples (cheapest to build on a hot path)
    whose fields are bound to the table's columns by name, through ``names``. The producer's
    field order is its own; the table's column order can change without touching it, and a
    column added, dropped or renamed in the table fails at import, not in the data."""

    __slots__ = ("table", "names")

    def __init__(self, table: Table, names: Sequence[str]):
        known = set(table.column_names)
        wanted = [c for c in table.column_names if c not in STORE_FILLED]
        unknown = [n for n in names if n not in known]
        missing = [n for n in wanted if n not in names]
        repeated = sorted({n for n in names if list(names).count(n) > 1})
        filled = [n for n in names if n in STORE_FILLED]
        if unknown or missing or repeated or filled:
            raise ValueError(f"row layout for {table.name}: unknown {unknown}, missing {missing}, "
                             f"repeated {repeated}, filled by the store {filled}")
        self.table = table
        self.names: tuple[str, ...] = tuple(names)

    def columns(self, rows: Sequence[tuple[Any, ...]]) -> dict[str, list[Any]]:
        """Rows transposed to named columns (what ``Store.insert`` takes)."""
        if not rows:
            return {n: [] for n in self.names}
        return dict(zip(self.names, map(list, zip(*rows, strict=True)), strict=True))


def C(name: str, type_: str, codec: str = "") -> Column:
    return Column(name, type_, codec)


_ATTRS = (
    C("attr_keys", "Array(LC(String))"),
    C("attr_values", "Array(String)", "ZSTD(1)"),
    C("attr_types", "Array(UInt8)", "ZSTD(1)"),
)
_RESOURCE = (
    C("resource_keys", "Array(LC(String))"),
    C("resource_values", "Array(String)", "ZSTD(1)"),
    C("scope_name", "LC(String)"),
    C("scope_version", "LC(String)"),
)

# Tables written by every insert keep small parts compact (all columns in one data file, not two
# files per column) and packed (the part's ~13 files in one archive): creating files was 14% of the
# CPU of a bulk load on ext4. Parts merged past 64 MB are wide, so queries read only their columns.
SMALL_PART_BYTES = 64 << 20

SPANS = Table(
    name="spans",
    signal="spans",
    columns=(
        C("timestamp", "DateTime", "Delta, ZSTD(1)"),
        C("trace_id", "FixedString(16)"),
        C("span_id", "FixedString(8)"),
        C("parent_span_id", "FixedString(8)"),
        C("trace_state", "String", "ZSTD(1)"),
        C("service", "LC(String)"),
        C("name", "LC(String)"),
        C("kind", "UInt8", "ZSTD(1)"),
        C("status_code", "UInt8", "ZSTD(1)"),
        C("status_message", "String", "ZSTD(1)"),
        C("start_ns", "UInt64", "Delta, ZSTD(1)"),
        C("duration_ns", "UInt64", "ZSTD(1)"),
        *_ATTRS,
        *_RESOURCE,
        C("events_time_ns", "Array(UInt64)", "ZSTD(1)"),
        C("events_name", "Array(String)", "ZSTD(1)"),
        C("events_attrs", "Array(String)", "ZSTD(1)"),
        C("links_trace_id", "Array(FixedString(16))", "ZSTD(1)"),
        C("links_span_id", "Array(FixedString(8))", "ZSTD(1)"),
        C("links_attrs", "Array(String)", "ZSTD(1)"),
        C("batch_id", "UInt64", "ZSTD(1)"),
    ),
    engine="MergeTree",
    partition_by="toDate(timestamp)",
    # A trace's spans sit together inside an hour: trace lookup reads one or two granules.
    order_by="(toStartOfHour(timestamp), trace_id, span_id)",
    ttl_column="timestamp",
    shard_key="cityHash64(trace_id)",
    # Merge column by column even for small parts: a merge then holds one column's buffers, not all
    # ~40 streams of every part at once (≈35 MB less peak memory while ingesting).
    settings="index_granularity = 8192, vertical_merge_algorithm_min_rows_to_activate = 1",
    small_part_bytes=SMALL_PART_BYTES,
)

LOGS = Table(
    name="logs",
    signal="logs",
    columns=(
        C("timestamp", "DateTime", "Delta, ZSTD(1)"),
        C("ts_ns", "UInt64", "Delta, ZSTD(1)"),
        C("observed_ns", "UInt64", "Delta, ZSTD(1)"),
        C("trace_id", "FixedString(16)"),
        C("span_id", "FixedString(8)"),
        C("flags", "UInt32", "ZSTD(1)"),
        C("severity_number", "UInt8"),
        C("severity_text", "LC(String)"),
        C("service", "LC(String)"),
        C("instance", "LC(String)"),
        C("event_name", "LC(String)"),
        C("body", "String", "ZSTD(1)"),
        *_ATTRS,
        *_RESOURCE,
        C("batch_id", "UInt64", "ZSTD(1)"),
    ),
    engine="MergeTree",
    partition_by="toDate(timestamp)",
    order_by="(service, timestamp, ts_ns)",
    ttl_column="timestamp",
    indexes=("INDEX idx_trace trace_id TYPE bloom_filter(0.01) GRANULARITY 4",),
    shard_key="cityHash64(trace_id)",
    small_part_bytes=SMALL_PART_BYTES,
)

METRIC_POINTS = Table(
    name="metric_points",
    signal="metrics",
    columns=(
        C("timestamp", "DateTime", "Delta, ZSTD(1)"),
        C("ts_ns", "UInt64", "Delta, ZSTD(1)"),
        C("start_ns", "UInt64", "Delta, ZSTD(1)"),
        C("service", "LC(String)"),
        C("instance", "LC(String)"),
        C("name", "LC(String)"),
        C("description", "LC(String)"),
        C("unit", "LC(String)"),
        # 1 gauge, 2 sum, 3 histogram, 4 exponential histogram, 5 summary
        C("type", "UInt8"),
        C("temporality", "UInt8"),  # 0 unspecified, 1 delta, 2 cumulative
        C("is_monotonic", "UInt8"),
        C("flags", "UInt32"),
        *_ATTRS,
        *_RESOURCE,
        C("value", "Float64", "ZSTD(1)"),
        C("count", "UInt64", "ZSTD(1)"),
        C("sum", "Float64", "ZSTD(1)"),
        C("min", "Float64", "ZSTD(1)"),
        C("max", "Float64", "ZSTD(1)"),
        C("bucket_counts", "Array(UInt64)", "ZSTD(1)"),
        C("explicit_bounds", "Array(Float64)", "ZSTD(1)"),
        C("exp_scale", "Int32"),
        C("exp_zero_count", "UInt64"),
        C("exp_positive_offset", "Int32"),
        C("exp_positive_counts", "Array(UInt64)", "ZSTD(1)"),
        C("exp_negative_offset", "Int32"),
        C("exp_negative_counts", "Array(UInt64)", "ZSTD(1)"),
        C("quantiles", "Array(Float64)", "ZSTD(1)"),
        C("quantile_values", "Array(Float64)", "ZSTD(1)"),
        C("exemplar_trace_ids", "Array(FixedString(16))"),
        C("exemplar_span_ids", "Array(FixedString(8))"),
        C("exemplar_values", "Array(Float64)"),
        C("exemplar_times_ns", "Array(UInt64)"),
        C("batch_id", "UInt64", "ZSTD(1)"),
    ),
    engine="MergeTree",
    partition_by="toDate(timestamp)",
    order_by="(name, service, timestamp, ts_ns)",
    ttl_column="timestamp",
    shard_key="cityHash64(name, service)",
    small_part_bytes=SMALL_PART_BYTES,
)

# --- rollups, filled by materialized views over spans ---------------------------------------

RED_1M = Table(
    name="red_1m",
    signal="spans",
    insertable=False,
    columns=(
        C("minute", "DateTime"),
        C("service", "LC(String)"),
        C("name", "LC(String)"),
        C("kind", "UInt8"),
        C("is_entry", "UInt8"),
        C("calls", "AggregateFunction(count)"),
        C("errors", "AggregateFunction(sum, UInt64)"),
        C("duration_sum", "AggregateFunction(sum, UInt64)"),
        C("duration_q", "AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64)"),
    ),
    engine="AggregatingMergeTree",
    partition_by="toDate(minute)",
    order_by="(service, is_entry, name, kind, minute)",
    ttl_column="minute",
    shard_key="cityHash64(service)",
    small_part_bytes=SMALL_PART_BYTES,
)

EDGES_1M = Table(
    name="edges_1m",
    signal="spans",
    insertable=False,
    columns=(
        C("minute", "DateTime"),
        C("service", "LC(String)"),
        C("target", "String"),
        C("target_kind", "LC(String)"),
        C("calls", "AggregateFunction(count)"),
        C("errors", "AggregateFunction(sum, UInt64)"),
        C("duration_q", "AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64)"),
    ),
    engine="AggregatingMergeTree",
    partition_by="toDate(minute)",
    order_by="(service, target, target_kind, minute)",
    ttl_column="minute",
    shard_key="cityHash64(service)",
    small_part_bytes=SMALL_PART_BYTES,
)

SERVICE_ENDPOINTS = Table(
    name="service_endpoints",
    signal="spans",
    insertable=False,
    columns=(
        C("minute", "DateTime"),
        C("address", "String"),
        C("service", "LC(String)"),
        C("hits", "AggregateFunction(count)"),
    ),
    engine="AggregatingMergeTree",
    partition_by="toDate(minute)",
    order_by="(address, service, minute)",
    ttl_column="minute",
    shard_key="cityHash64(address)",
    small_part_bytes=SMALL_PART_BYTES,
)

TRACE_SUMMARY = Table(
    name="trace_summary",
    signal="spans",
    insertable=False,
    columns=(
        C("hour", "DateTime"),
        C("trace_id", "FixedString(16)"),
        C("first_start_ns", "AggregateFunction(min, UInt64)"),
        C("last_end_ns", "AggregateFunction(max, UInt64)"),
        C("span_count", "AggregateFunction(count)"),
        C("errors", "AggregateFunction(max, UInt8)"),
        C("root_service", "AggregateFunction(argMin, String, UInt64)"),
        C("root_name", "AggregateFunction(argMin, String, UInt64)"),
        C("services", "AggregateFunction(groupUniqArray, String)"),
    ),
    engine="AggregatingMergeTree",
    partition_by="toDate(hour)",
    order_by="(hour, trace_id)",
    ttl_column="hour",
    shard_key="cityHash64(trace_id)",
    small_part_bytes=SMALL_PART_BYTES,
)

# --- bookkeeping and alerting ----------------------------------------------------------------

SCHEMA_VERSIONS = Table(
    name="schema_versions",
    columns=(C("version", "UInt32"), C("applied", "DateTime"), C("description", "String")),
    engine="MergeTree",
    order_by="version",
    insertable=False,
    placement="everywhere",
)

SETTINGS = Table(
    name="settings",
    columns=(C("key", "String"), C("value", "String"), C("updated_ns", "UInt64")),
    engine="ReplacingMergeTree",
    engine_args="updated_ns",
    order_by="key",
    insertable=False,
    placement="everywhere",
)

ALERT_STATE = Table(
    name="alert_state",
    columns=(
        C("rule_id", "String"),
        C("fingerprint", "String"),
        C("updated_ns", "UInt64"),
        C("state", "LC(String)"),
        C("labels", "String"),
        C("body", "String"),  # JSON: value, active_since, last_eval, annotations, ...
        C("deleted", "UInt8"),
    ),
    engine="ReplacingMergeTree",
    engine_args="updated_ns",
    order_by="(rule_id, fingerprint)",
    placement="everywhere",
)

ALERT_HISTORY = Table(
    name="alert_history",
    signal="alerts",
    columns=(
        C("timestamp", "DateTime"),
        C("ts_ns", "UInt64"),
        C("rule_id", "String"),
        C("alertname", "LC(String)"),
        C("fingerprint", "String"),
        C("labels", "String"),
        C("from_state", "LC(String)"),
        C("to_state", "LC(String)"),
        C("value", "Float64"),
        C("body", "String"),
    ),
    engine="MergeTree",
    partition_by="toYYYYMM(timestamp)",
    order_by="(rule_id, ts_ns)",
    ttl_column="timestamp",
    placement="everywhere",
)

ALERT_RULES = Table(
    name="alert_rules",
    columns=(
        C("id", "String"),
        C("updated_ns", "UInt64"),
        C("deleted", "UInt8"),
        C("body", "String"),
    ),
    engine="ReplacingMergeTree",
    engine_args="updated_ns",
    order_by="id",
    placement="everywhere",
)

SILENCES = Table(
    name="silences",
    columns=(
        C("id", "String"),
        C("updated_ns", "UInt64"),
        C("deleted", "UInt8"),
        C("starts_ns", "UInt64"),
        C("ends_ns", "UInt64"),
        C("body", "String"),
    ),
    engine="ReplacingMergeTree",
    engine_args="updated_ns",
    order_by="id",
    placement="everywhere",
)

# Snapshot requests (version 3). One row per request (``claimed_by`` = '') and one per instance
# that took it (``claimed_by`` = its service.instance.id); ``updated_ns`` versions replacements.
SNAPSHOT_REQUESTS = Table(
    name="snapshot_requests",
    columns=(
        C("id", "String"),
        C("claimed_by", "String"),
        C("updated_ns", "UInt64"),
        C("service", "String"),
        C("instance", "String"),
        C("kind", "String"),
        C("reason", "String"),
        C("requested_by", "String"),
        C("requested_ns", "UInt64"),
    ),
    engine="ReplacingMergeTree",
    engine_args="updated_ns",
    order_by="(service, id, claimed_by)",
    placement="everywhere",
)

# What each notification group last sent (version 6): one document per group key, so a restarted
# engine, or another engine process taking over evaluation, does not send it again.
NOTIFY_STATE = Table(
    name="notify_state",
    columns=(
        C("id", "String"),
        C("updated_ns", "UInt64"),
        C("deleted", "UInt8"),
        C("body", "String"),
    ),
    engine="ReplacingMergeTree",
    engine_args="updated_ns",
    order_by="id",
    placement="everywhere",
)

# Dashboard sessions signed out before they expire (version 8): every replica, and this one after a
# restart, refuses them. ``id`` is a digest of the session's id, never the id itself.
ENDED_SESSIONS = Table(
    name="ended_sessions",
    columns=(
        C("id", "String"),
        C("expires", "UInt32"),
        C("ended_ns", "UInt64"),
    ),
    engine="ReplacingMergeTree",
    engine_args="ended_ns",
    order_by="id",
    placement="everywhere",
)

TABLES: tuple[Table, ...] = (
    SCHEMA_VERSIONS,
    SETTINGS,
    SPANS,
    LOGS,
    METRIC_POINTS,
    RED_1M,
    EDGES_1M,
    SERVICE_ENDPOINTS,
    TRACE_SUMMARY,
    ALERT_STATE,
    ALERT_HISTORY,
    ALERT_RULES,
    SILENCES,
    SNAPSHOT_REQUESTS,
    NOTIFY_STATE,
    ENDED_SESSIONS,
)
TABLES_BY_NAME = {t.name: t for t in TABLES}
