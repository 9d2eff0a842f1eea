"""Schema versions. Each migration is a list of statements rendered for the server's capabilities;
``migrate`` applies the ones not yet recorded in ``schema_versions``, in order, idempotently."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .backend import Backend
from .capabilities import Capabilities
from .errors import QueryError
from .schema import (
    dedup_settings,
    render_create,
    render_distributed,
    render_spans_source,
    render_views,
    small_part_settings,
)
from .tables import (
    ALERT_HISTORY,
    ALERT_RULES,
    ALERT_STATE,
    DEFAULT_RETENTION_DAYS,
    EDGES_1M,
    ENDED_SESSIONS,
    LOGS,
    METRIC_POINTS,
    NOTIFY_STATE,
    RED_1M,
    SCHEMA_VERSIONS,
    SERVICE_ENDPOINTS,
    SETTINGS,
    SILENCES,
    SNAPSHOT_REQUESTS,
    SPANS,
    TRACE_SUMMARY,
    Table,
)


@dataclass(frozen=True)
class Context:
    db: str
    caps: Capabilities
    cluster: str
    retention: dict[str, int]

    def tables(self, *tables: Table) -> list[str]:
        out = []
        for t in tables:
            days = self.retention.get(t.signal) if t.signal else None
            out.append(render_create(t, self.db, self.caps, days, self.cluster))
            if self.cluster and t.placement == "sharded":
                out.append(render_distributed(t, self.db, self.cluster))
        return out


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: Callable[[Context], list[str]]


def _initial(ctx: Context) -> list[str]:
    source = [render_spans_source(ctx.db, ctx.cluster)] if ctx.cluster else []
    return ctx.tables(SETTINGS, SPANS, LOGS, METRIC_POINTS, RED_1M, EDGES_1M, SERVICE_ENDPOINTS,
                      TRACE_SUMMARY, ALERT_STATE, ALERT_HISTORY) + source + render_views(ctx.db, ctx.cluster, ctx.caps)


def _alert_config(ctx: Context) -> list[str]:
    return ctx.tables(ALERT_RULES, SILENCES)


def _snapshot_requests(ctx: Context) -> list[str]:
    return ctx.tables(SNAPSHOT_REQUESTS)


def _views_looked_up_once(ctx: Context) -> list[str]:
    # CREATE ... IF NOT EXISTS would keep the old definitions: drop the two views and create them
    # again. Spans inserted in between miss these two rollups; run it with ingestion quiet.
    on = f" ON CLUSTER {ctx.cluster}" if ctx.cluster else ""
    views = [v for v in render_views(ctx.db, ctx.cluster, ctx.caps) if "edges_1m_mv" in v or "service_endpoints_mv" in v]
    return [f"DROP TABLE IF EXISTS {ctx.db}.{name}{on}" for name in ("edges_1m_mv", "service_endpoints_mv")] + views


def _part_settings(ctx: Context) -> list[str]:
    # Tables created before these settings existed get them too (metadata only, no rewrite): spans
    # merge column by column, and small parts of the tables every insert writes are compact and
    # packed. Servers without compact parts (before 20.3) keep what they have.
    if not ctx.caps.compact_parts:
        return []
    on = f" ON CLUSTER {ctx.cluster}" if ctx.cluster else ""
    out = []
    for t in (SPANS, LOGS, METRIC_POINTS, RED_1M, EDGES_1M, SERVICE_ENDPOINTS, TRACE_SUMMARY):
        settings = small_part_settings(t, ctx.caps)
        if t is SPANS:
            settings.insert(0, "vertical_merge_algorithm_min_rows_to_activate = 1")
        name = f"{ctx.db}.{t.name}_local" if ctx.cluster else f"{ctx.db}.{t.name}"
        out.append(f"ALTER TABLE {name}{on} MODIFY SETTING " + ", ".join(settings))
    return out


def _notify_state(ctx: Context) -> list[str]:
    return ctx.tables(NOTIFY_STATE)


def _insert_dedup(ctx: Context) -> list[str]:
    # A batch retried after a crash is recognised by its token in spans and in every rollup its
    # insert feeds, so the retry writes exactly the parts that are missing (servers with it only).
    out = []
    for t in (SPANS, LOGS, METRIC_POINTS, RED_1M, EDGES_1M, SERVICE_ENDPOINTS, TRACE_SUMMARY):
        settings = dedup_settings(t, ctx.caps, ctx.cluster)
        if settings:
            out.append(f"ALTER TABLE {ctx.db}.{t.name} MODIFY SETTING " + ", ".join(settings))
    return out


def _ended_sessions(ctx: Context) -> list[str]:
    return ctx.tables(ENDED_SESSIONS)


_DEDUP = "inserts into signal tables and rollups are deduplicated by token where supported"
# Migrations recorded under another number by an earlier build: (version, description) as recorded
# → the version it is now. Token deduplication was 6 on its branch before notify_state took 6, so a
# database recorded at that 6 has 7 applied and still needs (the other) 6.
_RENUMBERED = {(6, _DEDUP): 7}

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "spans, logs, metric points, rollups, alert state and history", _initial),
    Migration(2, "alert rules and silences", _alert_config),
    Migration(3, "snapshot requests (agent command channel)", _snapshot_requests),
    Migration(4, "edge and endpoint views filter first and look each attribute up once", _views_looked_up_once),
    Migration(5, "small parts are compact and packed; spans merge column by column", _part_settings),
    Migration(6, "notification state: what each alert group last sent", _notify_state),
    Migration(7, _DEDUP, _insert_dedup),
    Migration(8, "signed-out dashboard sessions, refused by every replica", _ended_sessions),
)
LATEST = MIGRATIONS[-1].version


def applied_versions(backend: Backend, db: str) -> list[int]:
    res = backend.query(f"SELECT version, description FROM {db}.schema_versions ORDER BY version")
    return sorted({_RENUMBERED.get((int(r[0]), r[1]), int(r[0])) for r in res.rows})


def migrate(backend: Backend, db: str, caps: Capabilities, cluster: str = "",
            retention: dict[str, int] | None = None, target: int | None = None) -> list[int]:
    """Bring the schema to ``target`` (default: latest). Returns the versions applied now.

    A current schema is left alone without running any DDL: on a cluster, ``ON CLUSTER`` statements
    wait for every node, and a collector restarted while a shard is down must still start."""
    wanted = {m.version for m in MIGRATIONS if target is None or m.version <= target}
    try:
        if wanted <= set(applied_versions(backend, db)):
            return []
    except QueryError:  # no database or no schema_versions table yet
        pass
    on = f" ON CLUSTER {cluster}" if cluster else ""
    backend.query(f"CREATE DATABASE IF NOT EXISTS {db}{on}")
    ctx0 = Context(db, caps, cluster, {})
    for stmt in ctx0.tables(SCHEMA_VERSIONS):
        backend.query(stmt)
    done = set(applied_versions(backend, db))
    ret = dict(DEFAULT_RETENTION_DAYS)
    ret.update(retention or {})
    ctx = Context(db, caps, cluster, ret)
    applied = []
    for m in MIGRATIONS:
        if m.version in done or (target is not None and m.version > target):
            continue
        for stmt in m.statements(ctx):
            backend.query(stmt)
        backend.query(
            f"INSERT INTO {db}.schema_versions (version, applied, description) "
            "SELECT {v:UInt32}, toDateTime({t:UInt32}), {d:String}",
            {"v": m.version, "t": int(time.time()), "d": m.description},
        )
        applied.append(m.version)
    return applied
