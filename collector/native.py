"""The native decoder: trace requests go from the WAL into the embedded engine as they are, and the
engine decodes, flattens, redacts, limits and stores them (``Protobuf`` input format, then
materialized views), without a Python object per span.

Objects it keeps in a database of its own (``<db>_ingest``), rebuilt at every start from the
running configuration (limits, redaction keys):

- ``traces_feed`` (Null engine): what a batch is inserted into, by one ``INSERT … SELECT`` that
  decodes the requests and flattens them (``native_traces.flatten_select``): one row per span,
  every ``spans`` column plus the request's index, a flag for requests nesting attributes deeper
  than the schema unrolls, and the truncation counts;
- ``traces_spans_mv`` → ``<db>.spans`` (whose own views feed the rollups), the rows not flagged;
- ``traces_side_mv`` → ``traces_side`` (Memory): per insert, the flagged requests (the writer
  converts them in Python) and the counts, read and emptied after every batch.

Each batch carries an insert deduplication token: a batch written again after a crash or a failed
answer adds nothing to ``spans`` and fills exactly the rollups that missed it.
"""

from __future__ import annotations

import logging
import os

from tracehouse.storage.schema import SPANS, render_type

from . import native_traces
from .convert import Limits
from .native_feed import NativeResult, frame, insert_settings, read_side
from .native_schema import message_name
from .native_sql import Sql
from .redact import Redactor

__all__ = ["NativeTraces", "NativeResult", "native_supported"]

log = logging.getLogger("tracehouse.collector.native")


def native_supported(store) -> bool:
    """The native path needs the embedded engine (it streams the raw requests into it)."""
    return getattr(store.backend, "kind", "") == "chdb" and hasattr(store.backend, "insert_file")


#: Request bytes the engine decodes and flattens at a time (its ``max_block_size`` for the input,
#: in requests of the batch's average size): the decoded requests and their flattening's
#: intermediate columns are held per block, not per batch. Measured on the ingest benchmark's
#: requests (300 spans, 117 kB each; 30 per block), a 100k-span batch: the engine's peak memory
#: +114-126 MB against +205 MB when a batch is decoded at once.
BLOCK_BYTES = 3_500_000


def requests_per_block(payloads: list) -> int:
    total = sum(len(p) for p in payloads)
    return max(1, min(len(payloads), round(BLOCK_BYTES * len(payloads) / max(total, 1))))


class NativeTraces:
    signal = "traces"
    table = "spans"

    def __init__(self, store, redactor: Redactor, limits: Limits, schema_dir: str, every_value: bool = False):
        """``every_value``: format doubles and key-value lists in the engine too, instead of
        leaving requests that hold them to Python (see ``native_sql.Sql``)."""
        self.store = store
        self.sql = Sql(redactor, limits, doubles=every_value, kvlists=every_value)
        self.schema_dir = schema_dir
        self.db = f"{store.db}_ingest"
        self._schema = ""
        self._columns = ", ".join(f"{n} {t}" for n, t in native_traces.input_columns())
        self._feed_names = ", ".join([c.name for c in SPANS.columns] + ["record", "fallback"]
                                     + list(native_traces.STATS.values()))
        self._flatten = (f"SELECT {self._feed_names} FROM ("
                         + native_traces.flatten_select(self.sql, "{input}") + ")")

    # -- set-up -----------------------------------------------------------------------------
    def open(self) -> None:
        os.makedirs(self.schema_dir, exist_ok=True)
        path = os.path.join(self.schema_dir, "otlp_traces.proto")
        text = native_traces.proto()
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        self._schema = f"{path}:{message_name(native_traces.ROOT)}"
        for stmt in self._ddl():
            self.store.query(stmt)

    def _ddl(self) -> list[str]:
        d, caps = self.db, self.store.caps
        span_cols = [(c.name, render_type(c.type, caps)) for c in SPANS.columns]
        stats = list(native_traces.STATS.values())
        feed = ", ".join([f"{n} {t}" for n, t in span_cols] + ["record UInt64", "fallback UInt8"] +
                         [f"{s} UInt64" for s in stats])
        side = ", ".join(["fallback_records Array(UInt64)", "rows UInt64"] + [f"{s} UInt64" for s in stats])
        names = ", ".join(n for n, _ in span_cols)
        side_select = ", ".join(["groupUniqArrayIf(record, fallback = 1) AS fallback_records",
                                 "countIf(fallback = 0) AS rows"] + [f"sumIf({s}, fallback = 0) AS {s}" for s in stats])
        return [
            f"CREATE DATABASE IF NOT EXISTS {d}",
            # sources before sinks when dropping, sinks before sources when creating (traces_raw
            # and traces_flatten_mv: the objects of earlier versions, where a view flattened)
            f"DROP TABLE IF EXISTS {d}.traces_flatten_mv",
            f"DROP TABLE IF EXISTS {d}.traces_spans_mv",
            f"DROP TABLE IF EXISTS {d}.traces_side_mv",
            f"DROP TABLE IF EXISTS {d}.traces_raw",
            f"DROP TABLE IF EXISTS {d}.traces_feed",
            f"DROP TABLE IF EXISTS {d}.traces_side",
            f"CREATE TABLE {d}.traces_side ({side}) ENGINE = Memory",
            f"CREATE TABLE {d}.traces_feed ({feed}) ENGINE = Null",
            f"CREATE MATERIALIZED VIEW {d}.traces_side_mv TO {d}.traces_side AS SELECT {side_select} "
            f"FROM {d}.traces_feed",
            f"CREATE MATERIALIZED VIEW {d}.traces_spans_mv TO {self.store.t('spans')} AS SELECT {names} "
            f"FROM {d}.traces_feed WHERE fallback = 0",
        ]

    # -- a batch ----------------------------------------------------------------------------
    def stream(self, payloads: list[bytes], batch_id: int) -> list[bytes]:
        """The requests as the engine reads them: length-delimited, each with its index and the
        batch id appended as two extra fields (protobuf concatenation merges). The buffers to
        concatenate, not their concatenation: they are written to the engine's input file as
        they are, without a copy of the whole batch in between."""
        return frame(payloads, batch_id)

    def insert(self, payloads: list[bytes], batch_id: int, token: str) -> NativeResult:
        """Store the spans of these requests (one batch); the result names the requests the
        engine left to the Python path. Raises the store's errors."""
        d = self.db
        data = self.stream(payloads, batch_id)
        self.store.query(f"TRUNCATE TABLE {d}.traces_side")
        # The flattening is this statement's own SELECT, analysed once per insert (a view's
        # query is analysed again for every block it receives): the requests can then be read
        # BLOCK_BYTES at a time, flattened block by block, and squashed into one block
        # before the views (see ``native_feed.insert_settings``).
        settings = insert_settings(self._schema, token, requests_per_block(payloads))
        self.store.backend.insert_file(f"INSERT INTO {d}.traces_feed ({self._feed_names})", "Protobuf", data,
                                       structure=self._columns, settings=settings, select=self._flatten)
        return read_side(self.store, f"{d}.traces_side", native_traces.STATS)
