"""The Store: one object per ClickHouse (embedded or server) that the collector writes through
and the dashboard and alerts read through. Queries live in ``queries_*`` modules as functions of
a Store; this module owns opening, migrating, inserting and retention."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import retention as _retention
from .backend import Backend, EmbeddedBackend, PipelinedBackend, Result, RuleReader
from .capabilities import Capabilities, capabilities_for
from .errors import ConfigError, QueryError, StorageError, StorageUnavailable
from .limits import BusyBudget, QueryLimits
from .migrations import LATEST, applied_versions, migrate
from .schema import ROLLUP_VIEWS, SPANS_SOURCE, local_name, view_selects
from .server_backend import long_calls
from .tables import DEFAULT_RETENTION_DAYS, TABLES_BY_NAME, Table
from .url import DEFAULT_URL, StorageURL, parse_storage_url

if TYPE_CHECKING:
    from .cluster import ShardWriter
    from .server_backend import ServerBackend

log = logging.getLogger("tracehouse.storage")

#: Batches of at least twice this many rows are inserted in pipelined chunks of about this size.
PIPELINE_CHUNK_ROWS = 50_000


def chunk_batch_id(batch_id: int, i: int) -> int:
    """The id of part ``i`` of a batch: the batch's own id for the first part, then a mix."""
    if i == 0:
        return batch_id
    return ((batch_id * 0x9E3779B97F4A7C15) + i * 0xBF58476D1CE4E5B9) & 0x7FFFFFFFFFFFFFFF or 1



class Store:
    """Typed inserts and queries over one ClickHouse database."""

    def __init__(self, backend: Backend, url: StorageURL, connect: bool = True):
        self.backend = backend
        self.url = url
        self.db = url.database
        self.tracer: Any = None  # an OpenTelemetry tracer when the server observes itself
        self._shards: ShardWriter | None = None  # the cluster's, made on first use
        self._shards_lock = threading.Lock()
        #: limits of every query a user can cause (:meth:`read`); the server sets them from its settings
        self.limits = QueryLimits()
        self._slots: tuple[int, threading.BoundedSemaphore] | None = None
        self._budget: tuple[tuple[float, float], BusyBudget] | None = None
        #: on a ClickHouse server: the URL of the read-only user that user SQL runs as ('' = this
        #: store's own user with readonly=1); the server sets it from its settings
        self.rules_url = ""
        self._rule_reader: RuleReader | None = None
        self._rule_reader_lock = threading.Lock()
        self._caps: Capabilities | None = None
        if connect:
            self._caps = self.caps

    @property
    def caps(self) -> Capabilities:
        """What the server supports, from its version (asked on first use without ``connect``)."""
        if self._caps is None:
            self._caps = capabilities_for(str(self.query("SELECT version()").scalar()))
        return self._caps

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str | StorageURL = DEFAULT_URL, connect: bool = True, **backend_options: Any) -> Store:
        """The store at ``url``. A server is asked its version at once, unless ``connect`` is false:
        then not before the first statement (a collector starts while its server is down)."""
        u = parse_storage_url(url) if isinstance(url, str) else url
        if u.scheme == "chdb":
            from .chdb_backend import ChdbBackend

            backend: Backend = ChdbBackend(u.path)
        else:
            from .server_backend import ServerBackend

            backend = ServerBackend(u, **backend_options)
        try:
            return cls(backend, u, connect)
        except BaseException:
            backend.close()
            raise

    def close(self) -> None:
        if self._shards is not None:
            self._shards.close()
        if isinstance(self._rule_reader, _ServerRuleReader):
            self._rule_reader.backend.close()
        self.backend.close()

    # -- cluster -----------------------------------------------------------------------------
    @property
    def clustered(self) -> bool:
        return bool(self.url.cluster)

    def shard_writer(self) -> ShardWriter:
        """The cluster's shards and a connection pool to each replica (clusters only)."""
        if not self.clustered:
            raise ConfigError("not a cluster store")
        with self._shards_lock:
            if self._shards is None:
                from .cluster import ShardWriter, read_topology
                from .server_backend import ServerBackend

                shards = read_topology(self.query, self.url.cluster)
                self._shards = ShardWriter(shards, lambda node: ServerBackend(self.url, pool_size=2, node=node))
                log.info("cluster %s: %d shards, %s replicas", self.url.cluster, len(shards),
                         "/".join(str(len(s.replicas)) for s in shards))
            return self._shards

    @staticmethod
    def prefer_low_memory(url: str | StorageURL) -> None:
        """For long-running servers, before opening ``url``: an embedded engine returns freed
        memory to the OS at once (lower peak RSS for some throughput). Nothing for a server."""
        u = parse_storage_url(url) if isinstance(url, str) else url
        if u.scheme == "chdb":
            from .chdb_backend import prefer_low_memory

            prefer_low_memory()

    def release_startup_memory(self) -> None:
        """For long-running servers, once started: give back memory only start-up used (the
        embedded engine's library pages; nothing for a ClickHouse server)."""
        if isinstance(self.backend, EmbeddedBackend):
            self.backend.release_startup_memory()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- statements --------------------------------------------------------------------------
    def query(self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> Result:
        if self.url.cluster:
            # A subquery over a Distributed table inside a query over another runs once, over the
            # whole cluster, and its result goes to every shard (GLOBAL IN): the answer is the one a
            # single server gives. Set first, so that a caller's readonly=1 comes after it.
            settings = {"distributed_product_mode": "global", **(settings or {})}
        if self.tracer is not None:
            return self._traced_query(sql, params, settings)
        return self.backend.query(sql, params, settings)

    def _traced_query(self, sql: str, params: dict[str, Any] | None, settings: dict[str, Any] | None) -> Result:
        """A client span per statement, only under a span already current (a traced request, rule
        evaluation or retention run): the ingest path stays untraced. The text has placeholders,
        never values (those are bound separately)."""
        from opentelemetry import trace

        if not trace.get_current_span().get_span_context().is_valid:
            return self.backend.query(sql, params, settings)
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "QUERY"
        with self.tracer.start_as_current_span(
                f"{verb} {self.db}", kind=trace.SpanKind.CLIENT,
                attributes={"db.system": "clickhouse", "db.namespace": self.db, "db.query.text": sql[:2000],
                            "db.operation.name": verb}):
            return self.backend.query(sql, params, settings)

    def read(self, sql: str, params: dict[str, Any] | None = None) -> Result:
        """A query a user caused (a page, the API): run within :attr:`limits` and, on an embedded
        engine, within a number of concurrent user queries (``limits.max_concurrent``) and a share of
        the time (``limits.busy_share``: bursts pass, a loop of heavy queries is paced)."""
        slots = self._read_slots()
        if slots is None:
            return self.query(sql, params, self.limits.settings())
        deadline = time.monotonic() + self.limits.timeout_s
        if not slots.acquire(timeout=self.limits.timeout_s):
            raise StorageUnavailable("too many queries running; try again shortly")
        try:
            budget = self._busy_budget()
            wait = budget.wait_s()
            if time.monotonic() + wait > deadline:
                raise StorageUnavailable("queries are using their share of the engine; try again shortly")
            if wait:
                time.sleep(wait)
            t0 = time.monotonic()
            try:
                return self.query(sql, params, self.limits.settings(embedded=True))
            finally:
                budget.spend(time.monotonic() - t0)
        finally:
            slots.release()

    #: seconds one run of user-written SQL (an alert rule, a preview) may take
    RULE_TIMEOUT_S = 10
    #: Rows a rule's query may return. The reader stops reading a little past it (the engine cuts
    #: at a block's end), so that a rule selecting millions of rows is not fetched whole into the
    #: process; the rule engine then refuses the result (``alerts.expr``), never cutting it silently.
    RULE_MAX_ROWS = 10_000

    def rule_query(self, sql: str, params: dict[str, Any] | None = None) -> Result:
        """A built-in rule's query (red, metric, absence, middleware; the engine's own SQL over the
        user's rule fields): within :attr:`limits` and the rule time limit, as user-written SQL."""
        return self.query(sql, params, self.limits.settings(timeout_s=self.RULE_TIMEOUT_S,
                                                            embedded=self.backend.kind == "chdb"))

    def rule_reader(self) -> RuleReader:
        """Where user-written SQL runs: ``.query(sql, params)`` on read-only connections whose default
        database is this store's, within :attr:`limits` (the rule time limit). Embedded: connections
        fixed at ``readonly = 1`` after the limits are set. A server: the user of :attr:`rules_url`,
        whose profile must be read-only and carry the limits (README), else this store's user with
        ``readonly = 1`` and the limits on every query."""
        with self._rule_reader_lock:
            if self._rule_reader is None:
                self._rule_reader = self._open_rule_reader()
            return self._rule_reader

    def _open_rule_reader(self) -> RuleReader:
        settings = {**self.limits.settings(timeout_s=self.RULE_TIMEOUT_S, embedded=self.backend.kind == "chdb"),
                    "max_result_rows": self.RULE_MAX_ROWS + 1, "result_overflow_mode": "break"}
        if isinstance(self.backend, EmbeddedBackend):
            return self.backend.restricted_reader(self.db, settings)
        from .server_backend import ServerBackend

        if self.rules_url:
            rules = parse_storage_url(self.rules_url)
            if rules.scheme != "clickhouse" or (rules.host, rules.port, rules.database) != \
                    (self.url.host, self.url.port, self.db):
                raise ConfigError("rules_storage must name the same server and database as storage, "
                                  "with the rules user's credentials")
            return _ServerRuleReader(ServerBackend(rules, pool_size=2, default_database=self.db), None)
        log.warning("SQL rules run as the storage user with readonly=1: set rules_storage "
                    "(TRACEHOUSE_RULES_STORAGE) to a user that can read only %s (see the README)", self.db)
        # on a cluster, subqueries over Distributed tables run GLOBAL as in query(); set before readonly
        first = {"distributed_product_mode": "global"} if self.url.cluster else {}
        return _ServerRuleReader(ServerBackend(self.url, pool_size=2, default_database=self.db),
                                 {**first, **settings, "readonly": 1})

    def _read_slots(self) -> threading.BoundedSemaphore | None:
        """On an embedded engine (which shares the CPU with ingestion): the user-query slots."""
        if self.backend.kind != "chdb":
            return None
        n = self.limits.concurrent()
        if self._slots is None or self._slots[0] != n:
            self._slots = (n, threading.BoundedSemaphore(n))
        return self._slots[1]

    def _busy_budget(self) -> BusyBudget:
        key = (self.limits.busy_share, self.limits.busy_burst_s)
        if self._budget is None or self._budget[0] != key:
            self._budget = (key, BusyBudget(*key))
        return self._budget[1]

    def t(self, name: str) -> str:
        """Qualified table name."""
        return f"{self.db}.{name}"

    # -- schema ------------------------------------------------------------------------------
    def migrate(self, target: int | None = None, retention: dict[str, int] | None = None) -> list[int]:
        with long_calls():  # DDL on a busy server may take long: not the call timeout of a small read
            applied = migrate(self.backend, self.db, self.caps, self.url.cluster, retention, target)
        if 1 in applied:
            current = dict(DEFAULT_RETENTION_DAYS, **(retention or {}))
            for signal, days in current.items():
                self.put_setting(f"retention.{signal}", str(days))
        return applied

    def schema_version(self) -> int:
        try:
            versions = applied_versions(self.backend, self.db)
        except QueryError:  # no schema_versions table yet; an unreachable store still raises
            return 0
        # the highest version with every earlier one applied (a renumbered migration can leave a gap)
        have = set(versions)
        n = 0
        while n + 1 in have:
            n += 1
        return n

    def is_current(self) -> bool:
        return self.schema_version() >= LATEST

    def drop_database(self) -> None:
        """Drop this store's database and everything in it (a scratch database, as a rule test's)."""
        self.query(f"DROP DATABASE IF EXISTS {self.db}")

    #: seconds a readiness check waits for the store (a hung server must not hang /readyz)
    PING_TIMEOUT_S = 3.0

    def ping(self) -> bool:
        server_ping = getattr(self.backend, "ping", None)
        if server_ping is not None:  # a server: on a connection of its own, within PING_TIMEOUT_S
            return bool(server_ping(self.PING_TIMEOUT_S))
        try:
            return bool(self.query("SELECT 1").scalar() == 1)
        except StorageError:
            return False

    # -- settings and retention ----------------------------------------------------------------
    def put_setting(self, key: str, value: str) -> None:
        self.query(
            f"INSERT INTO {self.t('settings')} (key, value, updated_ns) SELECT {{k:String}}, {{v:String}}, {{u:UInt64}}",
            {"k": key, "v": value, "u": time.time_ns()},
        )

    def settings(self) -> dict[str, str]:
        res = self.query(f"SELECT key, argMax(value, updated_ns) FROM {self.t('settings')} GROUP BY key")
        return {k: v for k, v in res.rows}

    def retention(self) -> dict[str, int]:
        """Retention in days per signal, as recorded on the server."""
        s = self.settings()
        return {sig: int(s.get(f"retention.{sig}", d)) for sig, d in DEFAULT_RETENTION_DAYS.items()}

    def table_ttl(self, table: str) -> str:
        """The TTL clause the server reports for a table ('' where it has none)."""
        res = self.query(
            "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            {"db": self.db, "t": local_name(_table(table), self.url.cluster)},
        )
        full = str(res.scalar() or "")
        m = re.search(r"\bTTL\s+(.*?)(?:\s+SETTINGS\b|$)", full)
        return m.group(1).strip() if m else ""

    def set_retention(self, signal: str, days: int) -> None:
        """Configure ``signal``'s retention and apply it now (see ``retention.set_days``)."""
        _retention.set_days(self, {signal: days})

    def enforce_retention(self, now_s: float | None = None) -> list[tuple[str, str]]:
        """Apply the configured retention now; returns the (table, partition id) pairs dropped."""
        return _retention.apply(self, now_s).dropped  # in a long_calls scope

    # -- inserts -----------------------------------------------------------------------------
    def columns_for(self, table: str) -> dict[str, list[Any]]:
        """Empty column lists, in insert order, for a batch of ``table``."""
        return {c.name: [] for c in _table(table).columns}

    def batch_present(self, table: str, batch_id: int) -> bool:
        with long_calls():  # a scan of a large table, for the writer (which retries), not a request
            res = self.query(f"SELECT count() FROM {self.t(table)} WHERE batch_id = {{b:UInt64}}", {"b": batch_id})
        return int(res.scalar() or 0) > 0

    #: seconds a write of a few rows (documents, alert state and history, sign-outs) may take on a
    #: server; a hung one is given that and a margin (server_backend), not the receive timeout
    SMALL_WRITE_TIMEOUT_S = 10

    def write_small(self, table: str, columns: Mapping[str, Sequence[Any]]) -> int:
        """:meth:`insert` of a few rows (one block), within :attr:`SMALL_WRITE_TIMEOUT_S` on a server."""
        return self.insert(table, columns, timeout_s=self.SMALL_WRITE_TIMEOUT_S)

    def insert(self, table: str, columns: Mapping[str, Sequence[Any]], batch_id: int | None = None,
               verify: bool = False, timeout_s: float | None = None) -> int:
        """Insert one columnar batch. With ``batch_id``, the batch is tagged; with ``verify`` (a retry,
        or a replay after a crash), what is already present is not written again, and the rollups
        fed by what was present are made whole (see ``_complete``). Returns rows newly written.

        ClickHouse makes an insert atomic only within one partition, so a batch whose rows fall on
        several days (daily partitions), and a large batch (written in pipelined chunks), go in
        parts, each tagged with its own id derived from ``batch_id``: a replay after a crash
        between two parts writes exactly the parts that are missing. Where the server has insert
        deduplication (``Capabilities.insert_dedup``), each part also carries a token made from its
        id, so a part written again is dropped by the server, and its materialized views' parts are
        written only where they are missing."""
        tbl = _table(table)
        names = tbl.column_names
        n = len(next(iter(columns.values()))) if columns else 0
        if n == 0:
            return 0
        cols = dict(columns)
        if "batch_id" in names:
            cols["batch_id"] = [int(batch_id or 0)] * n
        missing = [c for c in names if c not in cols]
        if missing:
            raise ValueError(f"batch for {table} lacks columns {missing}")
        ordered = [cols[c] for c in names]
        for name, col in zip(names, ordered):
            if len(col) != n:
                raise ValueError(f"column {table}.{name} has {len(col)} values, expected {n}")
        days = _split_by_day(tbl, names, ordered)
        if self.url.cluster and tbl.placement == "sharded":
            return self._insert_sharded(tbl, table, names, days, batch_id, verify)
        pipelined = n >= 2 * PIPELINE_CHUNK_ROWS and self._pipelined()
        if len(days) == 1 and not pipelined:
            token = self.dedup_token(table, batch_id)
            if verify and batch_id and "batch_id" in names and self.batch_present(table, int(batch_id)):
                log.info("batch %s already in %s; not written again", batch_id, table)
                self._complete(tbl, table, ordered, int(batch_id), token)
                return 0
            if timeout_s is not None and self.backend.kind == "clickhouse":
                self.backend.insert(tbl, self.t(table), ordered, token=token,
                                    settings={"max_execution_time": max(1, int(timeout_s))})
            else:
                self.backend.insert(tbl, self.t(table), ordered, token=token)
            return n
        return self._insert_parts(tbl, table, names, days, batch_id, verify)

    def _pipelined(self) -> bool:
        return isinstance(self.backend, PipelinedBackend)

    def dedup_token(self, table: str, part_id: int | None) -> str | None:
        """The insert deduplication token of one tagged part, where the server has it."""
        if not part_id or not self.caps.insert_dedup or "batch_id" not in _table(table).column_names:
            return None
        return f"b{int(part_id)}"

    def _complete(self, tbl: Table, table: str, part: list[Sequence[Any]], part_id: int, token: str | None) -> None:
        """A part found already stored may have been cut off by a crash before its materialized
        views were written. With tokens, writing it again fills exactly the views that lack it (the
        server drops the rest); without (18.16), the rollups of what it touched are rebuilt."""
        if token is not None:
            self.backend.insert(tbl, self.t(table), part, token=token)
        elif table == "spans":
            self.rebuild_rollups(part[tbl.column_names.index("timestamp")])

    def rebuild_rollups(self, timestamps: Iterable[int]) -> None:
        """Recompute, from the spans table, the rollup rows of the minutes (per-minute rollups) and
        hours (``trace_summary``) that spans with these timestamps (seconds) fall in. Deleting and
        inserting again is idempotent, so a crash during a rebuild is repaired by the next. For
        servers without insert deduplication (old servers cannot run a mutation with a subquery,
        hence literal lists); the writer runs it before writing anything else, and another writer
        adding spans to the same minutes meanwhile would be counted twice."""
        minutes = sorted({int(t) - int(t) % 60 for t in timestamps})
        if not minutes:
            return
        hours = sorted({m - m % 3600 for m in minutes})
        with long_calls():  # an INSERT ... SELECT over hours of spans
            self._rebuild_rollups(minutes, hours)
        log.warning("rebuilt the rollups of %d minutes from spans after an interrupted insert", len(minutes))

    def _rebuild_rollups(self, minutes: list[int], hours: list[int]) -> None:
        sp = self.t("spans")
        span_hours = f"timestamp >= toDateTime({hours[0]}) AND timestamp < toDateTime({hours[-1] + 3600})"
        m_list = ", ".join(f"toDateTime({m})" for m in minutes)
        h_list = ", ".join(f"toDateTime({h})" for h in hours)
        selects = view_selects("{src}", self.caps.view_subqueries)
        for _, rollup in ROLLUP_VIEWS:
            if rollup == "trace_summary":
                doomed = f"hour IN ({h_list})"
                source = f"(SELECT * FROM {sp} WHERE {span_hours} AND toStartOfHour(timestamp) IN ({h_list}))"
            else:
                doomed = f"minute IN ({m_list})"
                source = f"(SELECT * FROM {sp} WHERE {span_hours} AND toStartOfMinute(timestamp) IN ({m_list}))"
            self.query(f"ALTER TABLE {self.t(rollup)} DELETE WHERE {doomed}")
            self._wait_mutations(rollup)
            self.query(f"INSERT INTO {self.t(rollup)} " + selects[rollup].replace("{src}", source))

    def _wait_mutations(self, table: str, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = self.query("SELECT count() FROM system.mutations WHERE database = {db:String} AND "
                              "table = {t:String} AND is_done = 0", {"db": self.db, "t": table}).scalar()
            if not int(left or 0):
                return
            if time.monotonic() > deadline:
                raise StorageError(f"mutations on {table} still running after {timeout:.0f} s")
            time.sleep(0.05)

    def _parts(self, days: list[list[Sequence[Any]]]) -> Iterator[tuple[int, list[Sequence[Any]]]]:
        """(part number, columns) for every part: each day, cut into chunks when the backend
        pipelines large inserts."""
        pipelined = self._pipelined()
        for d, day in enumerate(days):
            rows = len(day[0])
            k = max(1, round(rows / PIPELINE_CHUNK_ROWS)) if pipelined and rows >= 2 * PIPELINE_CHUNK_ROWS else 1
            # The first chunk is half the size of the others: nothing overlaps its preparation, so
            # the engine starts sooner (modelled at ≈6% for a 100k-row batch; within the host's noise).
            bounds = [0] + [rows * (2 * i - 1) // (2 * k - 1) for i in range(1, k + 1)]
            for i in range(k):
                lo, hi = bounds[i], bounds[i + 1]
                yield (d << 16) + i, (day if k == 1 else [col[lo:hi] for col in day])

    def _insert_parts(self, tbl: Table, table: str, names: list[str], days: list[list[Sequence[Any]]],
                      batch_id: int | None, verify: bool) -> int:
        """Write the parts in order. With a pipelining backend, preparing part i+1 (Python) overlaps
        inserting part i (the engine, which releases the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        id_at = names.index("batch_id") if "batch_id" in names else -1
        pipe = self.backend if isinstance(self.backend, PipelinedBackend) else None
        written = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracehouse-insert") as pool:
            pending = None
            for part_no, part in self._parts(days):
                rows = len(part[0])
                token = None
                if id_at >= 0:
                    pid = chunk_batch_id(int(batch_id), part_no) if batch_id else 0
                    part = list(part)
                    part[id_at] = [pid] * rows
                    token = self.dedup_token(table, pid)
                    if verify and pid and self.batch_present(table, pid):
                        if pending is not None:
                            pending.result()
                            pending = None
                        self._complete(tbl, table, part, pid, token)
                        continue
                if pipe is not None:
                    payload = pipe.prepare(tbl, part)
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(pipe.insert_prepared, tbl, self.t(table), payload, token)
                else:
                    self.backend.insert(tbl, self.t(table), part, token=token)
                written += rows
            if pending is not None:
                pending.result()
        return written

    def _insert_sharded(self, tbl: Table, table: str, names: list[str], days: list[list[Sequence[Any]]],
                        batch_id: int | None, verify: bool) -> int:
        """A cluster insert (see ``cluster.py``): every (day, shard) piece of the batch is one block
        with its own id, written to a replica of its shard. Spans go to the shard's ``spans_in``,
        whose views fill ``spans_local`` and the rollups, each deduplicating a replayed block by
        itself; so spans are always written again on a retry, never skipped because ``spans_local``
        has them (a rollup might not). Logs and metric points have no views: on a retry, a piece
        the shard already holds is skipped. Every shard that can be written is written, then the
        first failure is raised, and the retry sends only what was not acknowledged."""
        sw = self.shard_writer()
        id_at = names.index("batch_id") if "batch_id" in names else -1
        target = SPANS_SOURCE if table == "spans" else f"{table}_local"
        settings = self._insert_settings()
        per_shard = self._pieces_per_shard(sw, tbl, names, days, batch_id, id_at, target)

        def write_shard(s: int) -> int:
            written = 0
            for pid, piece in per_shard[s]:
                check = bool(verify and pid and id_at >= 0 and table != "spans")

                def write(b: ServerBackend, piece: list[Sequence[Any]] = piece, pid: int = pid,
                          check: bool = check) -> int:
                    if check and int(b.query(f"SELECT count() FROM {self.db}.{table}_local WHERE batch_id = {{b:UInt64}}",
                                             {"b": pid}).scalar() or 0):
                        return 0
                    b.insert(tbl, f"{self.db}.{target}", piece, settings=settings)
                    return len(piece[0])

                written += sw.on_shard(s, write)
                if pid:
                    sw.remember(target, pid)
            return written

        # One shard after the other: writing them from a thread each was slower end to end on 2
        # cores (cluster/single stored spans 0.79 and 0.72 against 1.01 in the same benchmark; the
        # driver encodes columns holding the GIL, against the collector's own threads).
        written, failed = 0, []
        for s in sorted(per_shard):
            try:
                written += write_shard(s)
            except StorageUnavailable as e:  # the other shards are still written
                failed.append(e)
        if failed:
            raise failed[0]
        return written

    @staticmethod
    def _pieces_per_shard(sw: Any, tbl: Table, names: list[str], days: list[list[Sequence[Any]]],
                          batch_id: int | None, id_at: int, target: str) -> dict[int, list[tuple[int, list[Sequence[Any]]]]]:
        """The batch's (day, shard) pieces by shard, each with its own id (stamped in its
        ``batch_id`` column when it has one); pieces the shard already acknowledged are left out."""
        from .cluster import split_rows

        per_shard: dict[int, list[tuple[int, list[Sequence[Any]]]]] = {}
        for d, day in enumerate(days):
            route = sw.sharder.route(tbl.shard_key, names, day)
            for s, piece in enumerate(split_rows(route, day, len(sw.shards))):
                if piece is None:
                    continue
                pid = chunk_batch_id(int(batch_id), (d << 16) + (s << 8)) if batch_id else 0
                if id_at >= 0:
                    piece = list(piece)
                    piece[id_at] = [pid] * len(piece[0])
                if not (pid and sw.acknowledged(target, pid)):
                    per_shard.setdefault(s, []).append((pid, piece))
        return per_shard

    def _insert_settings(self) -> dict[str, Any] | None:
        # Servers from 20.3 on do not deduplicate blocks that views write unless asked to.
        if self.caps.version >= (20, 3):
            return {"insert_deduplicate": 1, "deduplicate_blocks_in_dependent_materialized_views": 1}
        return None

    # -- small JSON documents (rules, silences, state) ----------------------------------------
    def put_document(self, table: str, doc_id: str, body: dict[str, Any], deleted: bool = False, **extra: Any) -> None:
        cols: dict[str, Sequence[Any]] = {"id": [doc_id], "updated_ns": [time.time_ns()], "deleted": [int(deleted)],
                "body": [json.dumps(body, separators=(",", ":"))]}
        for k, v in extra.items():
            cols[k] = [v]
        self.write_small(table, cols)

    #: seconds a read of the small tables (documents, alert state and history, notification state)
    #: may take; a hung server is given that and a margin (server_backend), not the receive timeout
    SMALL_READ_TIMEOUT_S = 10

    def read_small(self, sql: str, params: dict[str, Any] | None = None, timeout_s: float | None = None) -> Result:
        """A query over the small tables, within ``timeout_s`` (:attr:`SMALL_READ_TIMEOUT_S` unless given)."""
        limit = self.SMALL_READ_TIMEOUT_S if timeout_s is None else timeout_s
        return self.query(sql, params, {"max_execution_time": max(1, int(limit))})

    def documents(self, table: str) -> list[dict[str, Any]]:
        res = self.read_small(
            f"SELECT id, argMax(body, updated_ns), argMax(deleted, updated_ns) FROM {self.t(table)} GROUP BY id ORDER BY id"
        )
        return [dict(json.loads(b), id=i) for i, b, d in res.rows if not d]


class _ServerRuleReader:
    def __init__(self, backend: ServerBackend, settings: dict[str, Any] | None):
        self.backend, self.settings = backend, settings

    def query(self, sql: str, params: dict[str, Any] | None = None) -> Result:
        return self.backend.query(sql, params, self.settings)


def _split_by_day(tbl: Table, names: list[str], ordered: list[Sequence[Any]]) -> list[list[Sequence[Any]]]:
    """The batch's columns per day for tables partitioned by day (one entry when all rows share a
    day, the common case, without copying)."""
    if not tbl.partition_by.startswith("toDate(") or "timestamp" not in names:
        return [ordered]
    ts = ordered[names.index("timestamp")]
    if int(min(ts)) // 86400 == int(max(ts)) // 86400:  # C-level scans: the common one-day case
        return [ordered]
    by_day: dict[int, list[int]] = {}
    for i, t in enumerate(ts):
        by_day.setdefault(int(t) // 86400, []).append(i)
    return [[[col[i] for i in idx] for col in ordered] for _, idx in sorted(by_day.items())]


def _table(name: str) -> Table:
    try:
        return TABLES_BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown table {name!r}") from None
