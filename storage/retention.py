"""Retention: what each table keeps, read back from the server itself, and the job that applies it.

The configured days per signal are rows of the ``settings`` table (``retention.<signal>``): the
intent, changed at run time through :func:`set_days`. What is *in effect* is read from the tables:
the TTL clause ``system.tables`` reports for each table (servers with TTL), and the partitions
``system.parts`` still holds.

:func:`apply` makes the tables match the configured days; it is idempotent and cheap, so the
server's :class:`RetentionJob` runs it periodically and every change runs it at once:

* where the server has TTL, a table whose TTL differs from the configured days gets ``MODIFY TTL``,
  without rewriting its parts (``materialize_ttl_after_modify = 0`` where the server has it): the
  new TTL trims the edge day at the next merges;
* everywhere, partitions (days; months for alert history) entirely past the cutoff are dropped —
  instant, nothing rewritten, and the only mechanism on servers without TTL (18.16).

On a cluster, ``MODIFY TTL`` of a sharded table runs ``ON CLUSTER`` (one replica of each shard
applies it, replication does the rest); partitions of sharded tables are listed and dropped on one
live replica of every shard (a shard that cannot be reached is reported, and done at the next run);
tables replicated to every node change once, on the node the store is connected to.

Per-service span retention is not offered: a day's partition holds every service's spans, so
dropping one service's spans early means rewriting every part of those days (a mutation, or a
``TTL ... WHERE`` merge) — the rewrite this design avoids.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidParameter, StorageError
from .queries_usage import Partition, partitions
from .server_backend import long_calls
from .tables import RETENTION_TABLES, TABLES_BY_NAME
from .timerange import is_digits

__all__ = ["MIN_DAYS", "MAX_DAYS", "Plan", "Report", "RetentionJob", "apply", "in_effect", "plan", "set_days",
           "apply_configured", "table_ttls", "validate"]

log = logging.getLogger("tracehouse.storage.retention")

MIN_DAYS, MAX_DAYS = 1, 3650
_TTL_DAYS = re.compile(r"\bTTL\s+\w+\s*\+\s*toIntervalDay\((\d+)\)")
_PARTITION_ID = re.compile(r"^\d{6}(\d{2})?$")


def validate(changes: dict[str, Any]) -> dict[str, int]:
    """``{signal: days}`` checked: known signals, whole days from 1 to 3650."""
    if not isinstance(changes, dict) or not changes:
        raise InvalidParameter(f"give days per signal, e.g. {{\"spans\": 7}}; signals: {sorted(RETENTION_TABLES)}")
    out = {}
    for signal, days in changes.items():
        if signal not in RETENTION_TABLES:
            raise InvalidParameter(f"unknown signal {str(signal)[:50]!r}: one of {sorted(RETENTION_TABLES)}")
        # ASCII digits only (is_digits): str.isdigit admits "²" (int() refuses it: a 500) and other
        # scripts' digits ("٣" read as 3 days, dropping data nobody asked to drop)
        if isinstance(days, bool) or not isinstance(days, (int, str)) or not is_digits(str(days).strip()):
            raise InvalidParameter(f"retention for {signal} must be a whole number of days")
        d = int(days)
        if not MIN_DAYS <= d <= MAX_DAYS:
            raise InvalidParameter(f"retention must be {MIN_DAYS} to {MAX_DAYS} days")
        out[signal] = d
    return out


def _table(name: str):
    return TABLES_BY_NAME[name]


def _local(store, name: str) -> str:
    from .schema import local_name

    return local_name(_table(name), store.url.cluster)


def _sharded(store, name: str) -> bool:
    return bool(store.url.cluster) and _table(name).placement == "sharded"


def _on(store, name: str) -> str:
    return f" ON CLUSTER {store.url.cluster}" if _sharded(store, name) else ""


def table_ttls(store) -> dict[str, int | None]:
    """Days of each retention table's TTL as the server reports it (None: no TTL clause)."""
    res = store.query("SELECT name, engine_full FROM system.tables WHERE database = {db:String}", {"db": store.db})
    full = {str(n): str(e or "") for n, e in res.rows}
    out: dict[str, int | None] = {}
    for tables in RETENTION_TABLES.values():
        for name in tables:
            m = _TTL_DAYS.search(full.get(_local(store, name), ""))
            out[name] = int(m.group(1)) if m else None
    return out


def _cutoffs(days: dict[str, int], now_s: float) -> dict[str, str]:
    """Per signal, the first day (YYYYMMDD) that is kept: partitions before it are entirely expired."""
    return {sig: time.strftime("%Y%m%d", time.gmtime(now_s - d * 86400)) for sig, d in days.items()}


def _expired(pid: str, cutoff: str) -> bool:
    if not _PARTITION_ID.match(pid):
        return False
    return pid < cutoff if len(pid) == 8 else pid < cutoff[:6]


@dataclass
class Plan:
    """What :func:`apply` would do now."""

    modify_ttl: list[tuple[str, int]] = field(default_factory=list)  # (table, days)
    drop: list[tuple[str, str]] = field(default_factory=list)  # (table, partition id)

    @property
    def empty(self) -> bool:
        return not (self.modify_ttl or self.drop)


def plan(configured: dict[str, int], ttls: dict[str, int | None], parts: list[Partition], has_ttl: bool,
         now_s: float, signals: tuple[str, ...] | None = None) -> Plan:
    """Pure: the TTL changes and partition drops that bring the tables to ``configured``."""
    cut = _cutoffs(configured, now_s)
    p = Plan()
    for signal, tables in RETENTION_TABLES.items():
        if signals is not None and signal not in signals:
            continue
        for name in tables:
            if has_ttl and ttls.get(name) != configured[signal]:
                p.modify_ttl.append((name, configured[signal]))
            p.drop.extend((name, x["partition_id"]) for x in parts
                          if x["table"] == name and _expired(x["partition_id"], cut[signal]))
    return p


@dataclass
class Report:
    started_s: float
    duration_s: float = 0.0
    ttl_modified: list[tuple[str, int]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    parts: list[Partition] = field(default_factory=list)  # as read before applying

    def to_dict(self) -> dict[str, Any]:
        return {"started_s": self.started_s, "duration_s": round(self.duration_s, 4),
                "ttl_modified": [{"table": t, "days": d} for t, d in self.ttl_modified],
                "dropped": [{"table": t, "partition_id": p} for t, p in self.dropped], "errors": self.errors}


def apply(store, now_s: float | None = None, signals: tuple[str, ...] | None = None) -> Report:
    """Bring the tables to the configured retention. A failing statement is reported and the rest
    still runs (a partition over the server's ``max_partition_size_to_drop`` stays, for one). Its
    statements (ALTERs) may take long: not the call timeout of a small read (server_backend)."""
    with long_calls():
        return _apply(store, now_s, signals)


def _apply(store, now_s: float | None, signals: tuple[str, ...] | None) -> Report:
    now_s = time.time() if now_s is None else now_s
    rep = Report(started_s=now_s)
    t0 = time.perf_counter()
    rep.parts = partitions(store)
    todo = plan(store.retention(), table_ttls(store) if store.caps.ttl else {}, rep.parts, store.caps.ttl,
                now_s, signals)
    settings = {"materialize_ttl_after_modify": 0} if store.caps.lazy_ttl_modify else None
    columns = _ttl_columns()
    for name, days in todo.modify_ttl:
        sql = (f"ALTER TABLE {store.t(_local(store, name))}{_on(store, name)} "
               f"MODIFY TTL {columns[name]} + toIntervalDay({int(days)})")
        try:
            store.query(sql, settings=settings)
            rep.ttl_modified.append((name, days))
        except StorageError as e:
            rep.errors.append(f"{name}: MODIFY TTL: {str(e)[:300]}")
    for name, pid in todo.drop:
        if _sharded(store, name):
            continue  # per shard, below
        # pid is digits only (checked by _expired); ClickHouse takes no parameter here
        try:
            store.query(f"ALTER TABLE {store.t(_local(store, name))} DROP PARTITION ID '{pid}'")
            rep.dropped.append((name, pid))
        except StorageError as e:
            rep.errors.append(f"{name}: DROP PARTITION {pid}: {str(e)[:300]}")
    if store.url.cluster:
        _drop_on_shards(store, rep, now_s, signals)
    rep.duration_s = time.perf_counter() - t0
    if rep.ttl_modified or rep.dropped or rep.errors:
        log.info("retention: %d TTL changes, %d partitions dropped, %d errors in %.2fs", len(rep.ttl_modified),
                 len(rep.dropped), len(rep.errors), rep.duration_s)
    return rep


def _drop_on_shards(store, rep: Report, now_s: float, signals: tuple[str, ...] | None) -> None:
    """Each shard's expired partitions of the sharded tables, dropped on one live replica of that
    shard (a replicated DROP PARTITION reaches the other replicas through replication)."""
    sw = store.shard_writer()
    configured = store.retention()
    for i, shard in enumerate(sw.shards):
        try:
            parts = sw.on_shard(i, lambda b: partitions(store, b.query))
            todo = plan(configured, {}, parts, False, now_s, signals)
            for name, pid in todo.drop:
                if not _sharded(store, name):
                    continue
                sw.on_shard(i, lambda b, name=name, pid=pid: b.query(
                    f"ALTER TABLE {store.t(_local(store, name))} DROP PARTITION ID '{pid}'"))
                rep.dropped.append((name, pid))
        except StorageError as e:
            rep.errors.append(f"shard {shard.num}: {str(e)[:300]}")


def _ttl_columns() -> dict[str, str]:
    return {name: TABLES_BY_NAME[name].ttl_column for tables in RETENTION_TABLES.values() for name in tables}


def set_days(store, changes: dict[str, Any], now_s: float | None = None) -> Report:
    """Record new configured days (validated) and apply them at once."""
    days = validate(changes)
    for signal, d in days.items():
        store.put_setting(f"retention.{signal}", str(d))
    return apply(store, now_s, tuple(days))


def apply_configured(store, configured: dict[str, Any]) -> dict[str, int]:
    """At start: days given by the operator's configuration (``TRACEHOUSE_RETENTION``) take effect
    when they differ from the configuration applied last time; an unchanged configuration leaves a
    change made since through the API in place. Returns what was set now."""
    days = validate(configured) if configured else {}
    current = store.settings()
    changed = {s: d for s, d in days.items() if current.get(f"retention.{s}.configured") != str(d)}
    if changed:
        set_days(store, changed)
        for s, d in changed.items():
            store.put_setting(f"retention.{s}.configured", str(d))
    return changed


def in_effect(store, now_s: float | None = None, parts: list[Partition] | None = None) -> dict[str, Any]:
    """Per signal: the configured days, the TTL days the tables carry, the oldest day still stored
    and what the job has yet to do; ``days`` is the tables' TTL where the server has TTL, else the
    configured days the partition drops enforce."""
    now_s = time.time() if now_s is None else now_s
    parts = partitions(store) if parts is None else parts
    ttls = table_ttls(store) if store.caps.ttl else {}
    configured = store.retention()
    todo = plan(configured, ttls, parts, store.caps.ttl, now_s)
    out: dict[str, Any] = {}
    for signal, tables in RETENTION_TABLES.items():
        per_table = {}
        for name in tables:
            mine = [p for p in parts if p["table"] == name and p["day"]]
            per_table[name] = {"ttl_days": ttls.get(name), "oldest_day": min((p["day"] for p in mine), default=None),
                               "partitions": len(mine), "rows": sum(p["rows"] for p in mine)}
        oldest = [t["oldest_day"] for t in per_table.values() if t["oldest_day"]]
        primary = per_table[tables[0]]
        ttl_days = primary["ttl_days"]
        out[signal] = {
            "days": ttl_days if store.caps.ttl and ttl_days is not None else configured[signal],
            "configured_days": configured[signal],
            "ttl_days": ttl_days,
            "mechanism": "ttl and partition drops" if store.caps.ttl else "partition drops",
            "oldest_day": min(oldest) if oldest else None,
            "pending_ttl_changes": sum(1 for t, _ in todo.modify_ttl if t in tables),
            "pending_partition_drops": sum(1 for t, _ in todo.drop if t in tables),
            "tables": per_table,
        }
    return out


class RetentionJob:
    """Runs :func:`apply` every ``interval_s`` (first after ``first_delay_s``) on a daemon thread.
    With a prometheus ``registry``: runs, failures, duration, partitions dropped and disk use per table."""

    def __init__(self, store, interval_s: float = 3600.0, first_delay_s: float = 5.0, registry: Any = None):
        self.store, self.interval_s, self.first_delay_s = store, float(interval_s), float(first_delay_s)
        self.last: Report | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._m = _JobMetrics(registry) if registry is not None else None
        self.tracer: Any = None  # an OpenTelemetry tracer when the server observes itself

    def run_once(self, now_s: float | None = None) -> Report:
        span = self.tracer.start_as_current_span("retention run") if self.tracer is not None else None
        try:
            if span is not None:
                with span as s:
                    rep = apply(self.store, now_s)
                    s.set_attribute("tracehouse.retention.dropped", len(rep.dropped))
            else:
                rep = apply(self.store, now_s)
        except StorageError as e:
            rep = Report(started_s=time.time() if now_s is None else now_s, errors=[f"retention: {str(e)[:300]}"])
        self.last = rep
        if self._m is not None:
            self._m.record(rep)
        return rep

    def start(self) -> None:
        if self.interval_s <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="tracehouse-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        wait = self.first_delay_s
        while not self._stop.wait(wait):
            try:
                self.run_once()
            except Exception:  # a bug here must not end the job
                log.exception("retention job")
            wait = self.interval_s


class _JobMetrics:
    def __init__(self, registry: Any):
        from prometheus_client import Counter, Gauge, Histogram

        self.runs = Counter("tracehouse_retention_runs", "Retention job runs.", registry=registry)
        self.failures = Counter("tracehouse_retention_failures", "Retention runs with a failed statement.",
                                registry=registry)
        self.seconds = Histogram("tracehouse_retention_run_seconds", "Duration of a retention run.",
                                 registry=registry, buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120))
        self.dropped = Counter("tracehouse_retention_partitions_dropped", "Partitions dropped past retention.",
                               ["table"], registry=registry)
        self.last_ok = Gauge("tracehouse_retention_last_success_timestamp_seconds",
                             "When the last retention run without errors started.", registry=registry)
        self.bytes = Gauge("tracehouse_storage_bytes_on_disk", "Bytes on disk per table (at the last retention run).",
                           ["table"], registry=registry)
        self.rows = Gauge("tracehouse_storage_rows", "Rows per table (at the last retention run).", ["table"],
                          registry=registry)

    def record(self, rep: Report) -> None:
        self.runs.inc()
        self.seconds.observe(rep.duration_s)
        if rep.errors:
            self.failures.inc()
        else:
            self.last_ok.set(rep.started_s)
        for table, _ in rep.dropped:
            self.dropped.labels(table=table).inc()
        dropped = set(rep.dropped)
        per: dict[str, list[int]] = {}
        for p in rep.parts:
            if (p["table"], p["partition_id"]) not in dropped:
                t = per.setdefault(p["table"], [0, 0])
                t[0] += p["bytes_on_disk"]
                t[1] += p["rows"]
        for table, (b, r) in per.items():
            self.bytes.labels(table=table).set(b)
            self.rows.labels(table=table).set(r)
