"""What the native decoders share (``native.py`` for traces, ``native_logs.py`` for logs): how a
batch's requests are framed for the engine's ``Protobuf`` input, the objects one signal's feed is
made of, the insert's settings, and the side table read after each insert.

A signal's feed, in the decoders' own database (``<db>_ingest``), rebuilt at every start:

- ``<signal>_feed`` (Null engine): what a batch is inserted into, by one ``INSERT … SELECT`` that
  decodes and flattens the requests: one row per stored item, every column of the signal's table
  plus the request's index (``record``), a flag for requests the engine leaves to Python
  (``fallback``) and the truncation counts (``st_*``);
- ``<signal>_rows_mv`` → the signal's table, the rows not flagged;
- ``<signal>_side_mv`` → ``<signal>_side`` (Memory): per insert, the flagged requests and the
  counts, read and emptied around every batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.internal.encoder import _VarintBytes

from tracehouse.storage.schema import render_type
from tracehouse.storage.tables import TABLES_BY_NAME

from .convert import Limits
from .native_schema import BATCH_FIELD, RECORD_FIELD, message_name
from .native_sql import Sql, lit
from .redact import Redactor

__all__ = ["NativeResult", "frame", "feed_columns", "feed_names", "feed_ddl", "insert_settings", "read_side", "NativeFeed"]


@dataclass
class NativeResult:
    stored: int = 0
    fallback: list[int] = field(default_factory=list)  # indexes of requests left to the Python path
    truncated: dict[str, int] = field(default_factory=dict)


_RECORD_TAG = _VarintBytes(RECORD_FIELD[1] << 3)  # wire type 0: varint
_BATCH_TAG = _VarintBytes(BATCH_FIELD[1] << 3)


def frame(payloads: list, batch_id: int) -> list[bytes]:
    """The requests as the engine reads them: length-delimited, each with its index and the batch
    id appended as two extra fields (protobuf concatenation merges). The buffers to concatenate,
    not their concatenation: they are written to the engine's input file as they are, without a
    copy of the whole batch in between."""
    out = []
    tail_b = _BATCH_TAG + _VarintBytes(batch_id)
    for i, p in enumerate(payloads):
        tail = _RECORD_TAG + _VarintBytes(i) + tail_b
        out.append(_VarintBytes(len(p) + len(tail)))
        out.append(p)
        out.append(tail)
    return out


def feed_columns(table: str, caps: Any, stats: list[str]) -> list[tuple[str, str]]:
    """The feed table's columns: the signal's table's, the request's index, the flag, the counts."""
    cols = [(c.name, render_type(c.type, caps)) for c in TABLES_BY_NAME[table].columns]
    return cols + [("record", "UInt64"), ("fallback", "UInt8")] + [(s, "UInt64") for s in stats]


def feed_names(table: str, stats: list[str]) -> list[str]:
    return [c.name for c in TABLES_BY_NAME[table].columns] + ["record", "fallback"] + stats


def feed_ddl(db: str, prefix: str, target: str, table: str, caps: Any, stats: list[str]) -> list[str]:
    """The statements that (re)create one signal's feed: ``target`` is the qualified name of the
    signal's ``table``."""
    feed = ", ".join(f"{n} {t}" for n, t in feed_columns(table, caps, stats))
    side = ", ".join(["fallback_records Array(UInt64)", "rows UInt64"] + [f"{s} UInt64" for s in stats])
    names = ", ".join(c.name for c in TABLES_BY_NAME[table].columns)
    side_select = ", ".join(["groupUniqArrayIf(record, fallback = 1) AS fallback_records",
                             "countIf(fallback = 0) AS rows"] + [f"sumIf({s}, fallback = 0) AS {s}" for s in stats])
    d, p = db, prefix
    return [
        f"CREATE DATABASE IF NOT EXISTS {d}",
        # sources before sinks when dropping, sinks before sources when creating
        f"DROP TABLE IF EXISTS {d}.{p}_rows_mv",
        f"DROP TABLE IF EXISTS {d}.{p}_side_mv",
        f"DROP TABLE IF EXISTS {d}.{p}_feed",
        f"DROP TABLE IF EXISTS {d}.{p}_side",
        f"CREATE TABLE {d}.{p}_side ({side}) ENGINE = Memory",
        f"CREATE TABLE {d}.{p}_feed ({feed}) ENGINE = Null",
        f"CREATE MATERIALIZED VIEW {d}.{p}_side_mv TO {d}.{p}_side AS SELECT {side_select} FROM {d}.{p}_feed",
        f"CREATE MATERIALIZED VIEW {d}.{p}_rows_mv TO {target} AS SELECT {names} FROM {d}.{p}_feed WHERE fallback = 0",
    ]


#: Threads flattening a batch in the engine. Measured (``bench/native_engine_bench.py``, 100k-span
#: batches, 2 cores): 2 threads 127-132k spans/s against 93k for one, at the same CPU per span.
ENGINE_THREADS = max(1, min(4, os.cpu_count() or 1))


def insert_settings(schema: str, token: str, per_block: int) -> str:
    """The settings of one batch's insert: the schema, the deduplication token (a batch written
    again adds nothing to the table and fills exactly the views that missed it), and blocks of
    ``per_block`` requests decoded and flattened at a time, squashed into one block before the
    views (one part per table and batch: one analysis of each view's query, and a deterministic
    part for the token). The flattening runs on ENGINE_THREADS threads; the insert stream stays
    one (max_insert_threads = 1), so the squashed block holds the whole batch whichever thread
    flattened which rows."""
    return (f"format_schema = {lit(schema)}, input_format_protobuf_oneof_presence = 1, "
            f"insert_deduplication_token = {lit(token)}, "
            "deduplicate_blocks_in_dependent_materialized_views = 1, parallel_view_processing = 1, "
            f"max_block_size = {per_block}, max_threads = {ENGINE_THREADS}, max_insert_threads = 1, "
            f"min_insert_block_size_rows = {1 << 40}, min_insert_block_size_bytes = {1 << 40}")


def read_side(store: Any, side: str, stats: dict[str, str]) -> NativeResult:
    """What the last insert left in the side table ``side``: rows stored, requests flagged for
    Python, truncation counts by ``stats`` (counter name → column)."""
    items = list(stats.items())
    sums = ", ".join(f"sum({col})" for _, col in items)
    row = store.query(f"SELECT groupArrayArray(fallback_records), sum(rows), {sums} FROM {side}").rows[0]
    res = NativeResult(stored=int(row[1] or 0), fallback=sorted(int(x) for x in row[0]))
    for (what, _), n in zip(items, row[2:]):
        if n:
            res.truncated[what] = int(n)
    return res


class NativeFeed:
    """One signal's native decoder. Subclasses name the signal, its table and its SQL module
    (``ROOT``, ``STATS``, ``proto()``, ``input_columns()``, ``flatten_select(sql, input)``)."""

    signal = ""
    table = ""
    spec: Any = None

    def __init__(self, store, redactor: Redactor, limits: Limits, schema_dir: str, every_value: bool = False):
        """``every_value``: format doubles and key-value lists in the engine too, instead of
        leaving requests that hold them to Python (see ``native_sql.Sql``)."""
        self.store = store
        self.sql = Sql(redactor, limits, doubles=every_value, kvlists=every_value)
        self.schema_dir = schema_dir
        self.db = f"{store.db}_ingest"
        self._schema = ""
        self._columns = ", ".join(f"{n} {t}" for n, t in self.spec.input_columns())
        self._feed_names = ", ".join(feed_names(self.table, list(self.spec.STATS.values())))
        self._flatten = f"SELECT {self._feed_names} FROM ({self.spec.flatten_select(self.sql, '{input}')})"

    def open(self) -> None:
        os.makedirs(self.schema_dir, exist_ok=True)
        path = os.path.join(self.schema_dir, f"otlp_{self.signal}.proto")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.spec.proto())
        os.replace(tmp, path)
        self._schema = f"{path}:{message_name(self.spec.ROOT)}"
        for stmt in feed_ddl(self.db, self.signal, self.store.t(self.table), self.table, self.store.caps,
                             list(self.spec.STATS.values())):
            self.store.query(stmt)

    def insert(self, payloads: list, batch_id: int, token: str) -> NativeResult:
        """Store the items of these requests (one batch); the result names the requests the engine
        left to the Python path. Raises the store's errors."""
        from .native import requests_per_block

        side = f"{self.db}.{self.signal}_side"
        self.store.query(f"TRUNCATE TABLE {side}")
        self.store.backend.insert_file(
            f"INSERT INTO {self.db}.{self.signal}_feed ({self._feed_names})", "Protobuf", frame(payloads, batch_id),
            structure=self._columns, settings=insert_settings(self._schema, token, requests_per_block(payloads)),
            select=self._flatten)
        return read_side(self.store, side, self.spec.STATS)
