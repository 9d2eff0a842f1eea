"""The ClickHouse schema rendered for what the server supports.

Tables are data, in ``tables.py`` (one definition each); this module turns them into SQL text:
``render_*`` functions are pure (they take capabilities and return statements); nothing here talks
to a server. The table names are re-exported here for the modules that import them from ``schema``.
"""

from __future__ import annotations

from collections.abc import Callable

from .capabilities import Capabilities
from .tables import (
    ALERT_HISTORY,
    ALERT_RULES,
    ALERT_STATE,
    DEFAULT_RETENTION_DAYS,
    EDGES_1M,
    LOGS,
    METRIC_POINTS,
    NOTIFY_STATE,
    RED_1M,
    RETENTION_TABLES,
    SCHEMA_VERSIONS,
    SERVICE_ENDPOINTS,
    SETTINGS,
    SILENCES,
    SMALL_PART_BYTES,
    SNAPSHOT_REQUESTS,
    SPANS,
    TABLES,
    TABLES_BY_NAME,
    TRACE_SUMMARY,
    C,
    Column,
    Table,
)

__all__ = [
    # rendering
    "render_type",
    "is_rollup",
    "local_name",
    "render_create",
    "small_part_settings",
    "dedup_settings",
    "render_distributed",
    "render_spans_source",
    "edge_target",
    "edge_kind",
    "server_address",
    "render_views",
    "view_selects",
    "DEDUP_WINDOW_BLOCKS",
    "SPANS_SOURCE",
    "ROLLUP_BATCH_COLUMN",
    "DEDUP_WINDOW",
    "IS_ENTRY",
    "ROLLUP_VIEWS",
    "Ref",
    # the tables (defined in tables.py), re-exported for modules that import them from here
    "ALERT_HISTORY",
    "ALERT_RULES",
    "ALERT_STATE",
    "DEFAULT_RETENTION_DAYS",
    "EDGES_1M",
    "LOGS",
    "METRIC_POINTS",
    "NOTIFY_STATE",
    "RED_1M",
    "RETENTION_TABLES",
    "SCHEMA_VERSIONS",
    "SERVICE_ENDPOINTS",
    "SETTINGS",
    "SILENCES",
    "SMALL_PART_BYTES",
    "SNAPSHOT_REQUESTS",
    "SPANS",
    "TABLES",
    "TABLES_BY_NAME",
    "TRACE_SUMMARY",
    "C",
    "Column",
    "Table",
]


# --- rendering -------------------------------------------------------------------------------


def render_type(type_: str, caps: Capabilities) -> str:
    if caps.low_cardinality:
        return type_.replace("LC(String)", "LowCardinality(String)")
    return type_.replace("LC(String)", "String")


# On a cluster, replicated deduplication makes a replayed block exact: a block identical to one of
# the last N written to a shard's table is dropped. Replays come after a retry, a replica failover or
# a collector restart; 10,000 blocks per table and shard is hours of batches (≈ 2 MB in ZooKeeper).
DEDUP_WINDOW_BLOCKS = 10_000

#: The insert target of spans on a cluster: a Null table whose materialized views fill ``spans_local``
#: and every rollup, so each of them deduplicates a replayed block on its own (see ``render_views``).
SPANS_SOURCE = "spans_in"

#: On a cluster every rollup row also keeps the largest batch id it was built from: rollup blocks of
#: two different batches then never look identical to replicated deduplication.
ROLLUP_BATCH_COLUMN = Column("batch_max", "AggregateFunction(max, UInt64)")


def is_rollup(table: Table) -> bool:
    return table.engine == "AggregatingMergeTree"


def local_name(table: Table, cluster: str) -> str:
    """The name of the table that holds the rows on one node."""
    return f"{table.name}_local" if cluster and table.placement == "sharded" else table.name


def render_create(
    table: Table, db: str, caps: Capabilities, retention_days: int | None = None, cluster: str = ""
) -> str:
    """CREATE TABLE for one table. With ``cluster``: a sharded table's replicated ``_local`` table
    (one replica set per shard, behind a Distributed one), or an "everywhere" table replicated to
    every node of the cluster."""
    columns = list(table.columns)
    if cluster and is_rollup(table):
        columns.append(ROLLUP_BATCH_COLUMN)
    cols = []
    for c in columns:
        col = f"    {c.name} {render_type(c.type, caps)}"
        if c.codec and caps.codecs:
            col += f" CODEC({c.codec})"
        cols.append(col)
    if caps.skip_indexes:
        cols.extend(f"    {ix}" for ix in table.indexes)
    name = f"{db}.{local_name(table, cluster)}"
    on_cluster = f" ON CLUSTER {cluster}" if cluster else ""
    if cluster:
        if table.placement == "sharded":
            zk = f"'/clickhouse/tables/{{shard}}/{db}/{table.name}', '{{replica}}'"
        else:
            zk = f"'/clickhouse/tables/all/{db}/{table.name}', '{{shard}}-{{replica}}'"
        args = f"{zk}, {table.engine_args}" if table.engine_args else zk
        engine = f"Replicated{table.engine}({args})"
    else:
        engine = f"{table.engine}({table.engine_args})"
    parts = [f"CREATE TABLE IF NOT EXISTS {name}{on_cluster}\n(\n" + ",\n".join(cols) + "\n)", f"ENGINE = {engine}"]
    if table.partition_by:
        parts.append(f"PARTITION BY {table.partition_by}")
    parts.append(f"ORDER BY {table.order_by}")
    if caps.ttl and table.ttl_column and retention_days:
        parts.append(f"TTL {table.ttl_column} + toIntervalDay({int(retention_days)})")
    settings = [table.settings] if table.settings else []
    settings.extend(small_part_settings(table, caps))
    settings.extend(dedup_settings(table, caps, cluster))
    if cluster and table.placement == "sharded":
        settings.append(f"replicated_deduplication_window = {DEDUP_WINDOW_BLOCKS}")
    if settings:
        parts.append("SETTINGS " + ", ".join(settings))
    return "\n".join(parts)


#: Inserts (and their blocks in the rollups) remembered for deduplication, where the server has it:
#: a batch retried after a crash within this many later inserts is recognised.
DEDUP_WINDOW = 1000


def small_part_settings(table: Table, caps: Capabilities) -> list[str]:
    out = []
    if table.small_part_bytes and caps.compact_parts:
        out.append(f"min_bytes_for_wide_part = {int(table.small_part_bytes)}")
    if table.small_part_bytes and caps.packed_parts:
        out.append(f"min_bytes_for_full_part_storage = {int(table.small_part_bytes)}")
    return out


def dedup_settings(table: Table, caps: Capabilities, cluster: str = "") -> list[str]:
    """Insert deduplication for the tables the collector writes and the rollups its inserts feed
    (replicated tables deduplicate on their own)."""
    if caps.insert_dedup and not cluster and (table.signal in ("spans", "logs", "metrics")):
        return [f"non_replicated_deduplication_window = {DEDUP_WINDOW}"]
    return []


def render_distributed(table: Table, db: str, cluster: str) -> str:
    """The Distributed table in front of a sharded table's ``_local`` tables (reads go through it;
    the store writes to the shards' local tables itself, see ``cluster.py``)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{table.name} ON CLUSTER {cluster} AS {db}.{table.name}_local "
        f"ENGINE = Distributed({cluster}, {db}, {table.name}_local, {table.shard_key})"
    )


def render_spans_source(db: str, cluster: str) -> str:
    return f"CREATE TABLE IF NOT EXISTS {db}.{SPANS_SOURCE} ON CLUSTER {cluster} AS {db}.spans_local ENGINE = Null"


def _attr(key: str) -> str:
    # The value of a span attribute, '' when absent (indexOf gives 0, element 0 is the default).
    return f"attr_values[indexOf(attr_keys, '{key}')]"


# Attributes the edge and endpoint rollups read, in order of preference within each group (new
# semantic conventions first, then the older names instrumentations still send).
_LOOKUPS = {
    "peer": "peer.service",
    "host1": "server.address", "host2": "net.peer.name", "host3": "net.sock.peer.addr",
    "host4": "network.peer.address",
    "port1": "server.port", "port2": "net.peer.port", "port3": "net.sock.peer.port", "port4": "network.peer.port",
    "url1": "url.full", "url2": "http.url",
    "db1": "db.system.name", "db2": "db.system", "dbname": "db.name",
    "msg": "messaging.system", "dest1": "messaging.destination.name", "dest2": "messaging.destination",
    "shost1": "server.address", "shost2": "net.host.name", "shost3": "http.host",
    "sport1": "server.port", "sport2": "net.host.port",
}
_EDGE_NAMES = ("peer", "host1", "host2", "host3", "host4", "port1", "port2", "port3", "port4", "url1", "url2",
               "db1", "db2", "dbname", "msg", "dest1", "dest2")
_ENDPOINT_NAMES = ("shost1", "shost2", "shost3", "sport1", "sport2")


def _inline(name: str) -> str:
    return _attr(_LOOKUPS[name])


def _column(name: str) -> str:
    return f"a_{name}"


#: renders one looked-up attribute by its short name (inline lookup, or a column of an inner projection)
Ref = Callable[[str], str]


def _first_nonempty(ref: Ref, *names: str) -> str:
    expr = "''"
    for n in reversed(names):
        expr = f"if({ref(n)} != '', {ref(n)}, {expr})"
    return expr


def edge_target(ref: Ref = _inline) -> str:
    """The dependency a client span calls: peer.service, else db system/name, else messaging
    system/destination, else host:port, else the URL's host. ``ref`` renders one attribute: inline
    lookups, or ``a_<name>`` columns of an inner projection."""
    host = _first_nonempty(ref, "host1", "host2", "host3", "host4")
    port = _first_nonempty(ref, "port1", "port2", "port3", "port4")
    url = _first_nonempty(ref, "url1", "url2")
    db = _first_nonempty(ref, "db1", "db2")
    dest = _first_nonempty(ref, "dest1", "dest2")
    return (
        f"multiIf({ref('peer')} != '', {ref('peer')}, "
        f"{db} != '', concat({db}, if({ref('dbname')} != '', concat('/', {ref('dbname')}), '')), "
        f"{ref('msg')} != '', concat({ref('msg')}, if({dest} != '', concat('/', {dest}), '')), "
        f"{host} != '', concat({host}, if({port} != '', concat(':', {port}), '')), "
        f"extract({url}, '^[a-zA-Z]+://([^/?#@]+)'))"
    )


def edge_kind(ref: Ref = _inline) -> str:
    db = _first_nonempty(ref, "db1", "db2")
    return (
        f"multiIf({ref('peer')} != '', 'service', "
        f"{db} IN ('redis', 'memcached', 'valkey'), 'cache', {db} != '', 'database', "
        f"{ref('msg')} != '', 'queue', 'external')"
    )


def server_address(ref: Ref = _inline) -> str:
    """host:port a server span was reached at (how client targets resolve to services)."""
    host = _first_nonempty(ref, "shost1", "shost2", "shost3")
    port = _first_nonempty(ref, "sport1", "sport2")
    return f"if(position({host}, ':') > 0 OR {port} = '', {host}, concat({host}, ':', {port}))"


def _lookup_columns(names: tuple[str, ...]) -> str:
    return ", ".join(f"{_inline(n)} AS {_column(n)}" for n in names)


IS_ENTRY = "(kind IN (2, 5) OR parent_span_id = toFixedString(unhex('0000000000000000'), 8))"


#: (view, rollup table) for every materialized view over spans.
ROLLUP_VIEWS = (("red_1m_mv", "red_1m"), ("edges_1m_mv", "edges_1m"), ("service_endpoints_mv", "service_endpoints"),
                ("trace_summary_mv", "trace_summary"))


def render_views(db: str, cluster: str = "", caps: Capabilities | None = None) -> list[str]:
    """Materialized views that keep the rollups current as spans arrive. Where the server allows a
    subquery in a view (not 18.16: only its first column resolves), the edge and endpoint views
    filter to the span kind they need and look each attribute up once in an inner projection; the
    flat form repeats the lookups, which costs ~5 ms more per insert to analyse and more to run.

    On a cluster, spans are written to the Null table ``spans_in`` and one more view copies them to
    ``spans_local``: every target then deduplicates a replayed block by itself. (With the views on a
    replicated ``spans_local``, a block deduplicated there is not passed to its views at all, so a
    replica that died between writing the spans and writing a rollup left that rollup short for
    good; measured on 18.16.) Each rollup row also keeps ``maxState(batch_id)``, so rollup blocks
    of two different batches never compare equal."""
    nested = caps is None or caps.view_subqueries
    src = f"{db}.{SPANS_SOURCE}" if cluster else f"{db}.spans"

    def dst(t: str) -> str:
        return f"{db}.{t}_local" if cluster else f"{db}.{t}"

    on = f" ON CLUSTER {cluster}" if cluster else ""
    tag = ", maxState(batch_id) AS batch_max" if cluster else ""
    copy = [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.spans_local_mv{on} TO {dst('spans')} AS SELECT * FROM {src}"]
    selects = view_selects(src, nested, tag)
    return (copy if cluster else []) + [
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{view}{on} TO {dst(table)} AS {selects[table]}"
        for view, table in ROLLUP_VIEWS]


def view_selects(src: str, nested: bool, tag: str = "") -> dict[str, str]:
    """Each rollup's SELECT over ``src`` (the spans table, or a subquery of it: the same rows a
    view sees are what a rebuild reads); ``tag`` adds the cluster's batch marker column."""
    return {
        "red_1m": f"SELECT toStartOfMinute(timestamp) AS minute, service, name, kind, toUInt8({IS_ENTRY}) AS is_entry, "
                  "countState() AS calls, sumState(toUInt64(status_code = 2)) AS errors, "
                  "sumState(duration_ns) AS duration_sum, "
                  f"quantilesTDigestState(0.5, 0.95, 0.99)(duration_ns) AS duration_q{tag} "
                  f"FROM {src} GROUP BY minute, service, name, kind, is_entry",
        "edges_1m": _edges_view(src, nested, tag),
        "service_endpoints": _endpoints_view(src, nested, tag),
        "trace_summary": "SELECT toStartOfHour(timestamp) AS hour, trace_id, minState(start_ns) AS first_start_ns, "
                         "maxState(start_ns + duration_ns) AS last_end_ns, countState() AS span_count, "
                         "maxState(toUInt8(status_code = 2)) AS errors, "
                         "argMinState(CAST(service AS String), start_ns) AS root_service, "
                         "argMinState(CAST(name AS String), start_ns) AS root_name, "
                         f"groupUniqArrayState(CAST(service AS String)) AS services{tag} "
                         f"FROM {src} GROUP BY hour, trace_id",
    }


def _edges_view(src: str, nested: bool, tag: str = "") -> str:
    return _lookup_view(
        "", src, nested,
        select=lambda ref: (f"toStartOfMinute(timestamp) AS minute, service, {edge_target(ref)} AS target, "
                            f"{edge_kind(ref)} AS target_kind, countState() AS calls, "
                            "sumState(toUInt64(status_code = 2)) AS errors, "
                            f"quantilesTDigestState(0.5, 0.95, 0.99)(duration_ns) AS duration_q{tag}"),
        passthrough="timestamp, service, status_code, duration_ns" + (", batch_id" if tag else ""), names=_EDGE_NAMES,
        kinds="kind IN (3, 4)", keep="target != ''", group="GROUP BY minute, service, target, target_kind")


def _endpoints_view(src: str, nested: bool, tag: str = "") -> str:
    return _lookup_view(
        "", src, nested,
        select=lambda ref: (f"toStartOfMinute(timestamp) AS minute, {server_address(ref)} AS address, service, "
                            f"countState() AS hits{tag}"),
        passthrough="timestamp, service" + (", batch_id" if tag else ""), names=_ENDPOINT_NAMES,
        kinds="kind = 2", keep="address != ''", group="GROUP BY minute, address, service")


def _lookup_view(head: str, src: str, nested: bool, select: Callable[[Ref], str], passthrough: str, names: tuple[str, ...],
                 kinds: str, keep: str, group: str) -> str:
    """A rollup view over the spans of some kinds that reads attributes: flat (every lookup inline,
    for 18.16), or nested (filter by kind first, each attribute looked up once as ``a_<name>``)."""
    if not nested:
        return head + f"SELECT {select(_inline)} FROM {src} WHERE {kinds} AND {keep} {group}"
    return (head + f"SELECT {select(_column)} FROM (SELECT {passthrough}, {_lookup_columns(names)} "
            f"FROM {src} WHERE {kinds}) WHERE {keep} {group}")
