"""What the native decoders share (``native.py`` for traces, ``native_logs.py`` for logs): how a
batch's requests are framed for the engine's ``Protobuf`` input, the objects one signal's feed is
made of, the insert's settings, and the side table read after each insert.

A signal's feed, in the decoders' own database (``<db>_ingest``), rebuilt at every start:

one set per lane (``_0``, ``_1``: inserts that run at once each have their own):

- ``<signal>_feed`` (Null engine): what a batch is inserted into, by one ``INSERT … SELECT`` that
  decodes and flattens the requests: one row per stored item, every column of the signal's table
  plus the request's index (``record``), a flag for requests the engine leaves to Python
  (``fallback``) and the truncation counts (``st_*``);
- ``<signal>_rows_mv`` → the signal's table, the rows not flagged;
- ``<signal>_side_mv`` → ``<signal>_side`` (Memory): per insert, the flagged requests and the
  counts, read and emptied around every batch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.internal.encoder import _VarintBytes
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

from tracehouse.storage.errors import QueryError
from tracehouse.storage.schema import render_type
from tracehouse.storage.tables import TABLES_BY_NAME

from .convert import Limits
from .native_schema import BATCH_FIELD, RECORD_FIELD, message_name
from .native_sql import Sql, lit
from .redact import Redactor

__all__ = ["NativeResult", "canonical", "LANES", "requests_per_block", "frame", "feed_columns", "feed_names", "feed_ddl", "insert_settings", "read_side", "NativeFeed"]


@dataclass
class NativeResult:
    stored: int = 0
    fallback: list[int] = field(default_factory=list)  # indexes of requests left to the Python path
    truncated: dict[str, int] = field(default_factory=dict)
    rewritten: int = 0  # requests re-encoded before the engine could read them (see ``canonical``)


def canonical(request_class: Any, payloads: list) -> tuple[list, int]:
    """The requests as protobuf encodes them itself, and how many differed from what was sent.

    The receiver's parser (upb) reads a field sent with another wire type than its own (a string
    field as a varint, say) as an unknown field and goes on; the engine's reader refuses the whole
    stream, and with it the batch. Parsing, dropping unknown fields and encoding again gives bytes
    both read alike, with the same content for the Python path. Run only after the engine refused
    a batch: on every request it would cost about 0.17 CPU-s per 100k spans (measured on the ingest
    benchmark's requests). Encoded size is the test: dropping an unknown field, a repeated
    singular field or an explicit default only ever shortens a request."""
    out, changed = [], 0
    for p in payloads:
        try:
            msg = request_class.FromString(bytes(p))
        except DecodeError:  # not from the receiver, which parsed every request: left as it is
            out.append(p)
            continue
        msg.DiscardUnknownFields()
        if msg.ByteSize() != len(p):
            p = msg.SerializeToString()
            changed += 1
        out.append(p)
    return out, changed


log = logging.getLogger("tracehouse.collector")

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


#: Inserts a decoder can run at once, each on an engine connection of its own ("lane") and into
#: feed and side tables of its own; with two, the writer stores two batches side by side when a
#: backlog waits (``writer.py``). Measured: the engine alone (``NativeTraces.insert``, 100k-span
#: batches, 2 cores) 152-163k spans/s with two at once against 111-113k one after the other; the
#: ingest benchmark, interleaved in one lock hold, stored 75.7k / 88.5k against 69.7k / 79.0k
#: spans/s, for a peak RSS of 734 / 747 against 563 / 576 MB. One by default: +9-12% is not worth
#: +170 MB in a collector; ``TRACEHOUSE_INGEST_LANES=2`` where throughput matters more.
LANES = 1
MAX_LANES = 2  # the writer stores at most two batches side by side


def feed_ddl(db: str, prefix: str, target: str, table: str, caps: Any, stats: list[str],
             legacy: tuple[str, ...] = (), lanes: int = LANES) -> list[str]:
    """The statements that (re)create one signal's feed, once per lane: ``target`` is the
    qualified name of the signal's ``table``; ``legacy``: objects of earlier versions to drop."""
    feed = ", ".join(f"{n} {t}" for n, t in feed_columns(table, caps, stats))
    side = ", ".join(["fallback_records Array(UInt64)", "rows UInt64"] + [f"{s} UInt64" for s in stats])
    names = ", ".join(c.name for c in TABLES_BY_NAME[table].columns)
    side_select = ", ".join(["groupUniqArrayIf(record, fallback = 1) AS fallback_records",
                             "countIf(fallback = 0) AS rows"] + [f"sumIf({s}, fallback = 0) AS {s}" for s in stats])
    d, p = db, prefix
    out = [f"CREATE DATABASE IF NOT EXISTS {d}"]
    out += [f"DROP TABLE IF EXISTS {d}.{name}" for name in legacy]
    # sources before sinks when dropping, sinks before sources when creating (unnumbered: one
    # lane, as earlier versions made them)
    for sfx in ["", *(f"_{i}" for i in range(MAX_LANES))]:
        out += [f"DROP TABLE IF EXISTS {d}.{p}_{obj}{sfx}" for obj in ("rows_mv", "side_mv", "feed", "side")]
    for i in range(lanes):
        out += [
            f"CREATE TABLE {d}.{p}_side_{i} ({side}) ENGINE = Memory",
            f"CREATE TABLE {d}.{p}_feed_{i} ({feed}) ENGINE = Null",
            f"CREATE MATERIALIZED VIEW {d}.{p}_side_mv_{i} TO {d}.{p}_side_{i} AS SELECT {side_select} "
            f"FROM {d}.{p}_feed_{i}",
            f"CREATE MATERIALIZED VIEW {d}.{p}_rows_mv_{i} TO {target} AS SELECT {names} FROM {d}.{p}_feed_{i} "
            "WHERE fallback = 0",
        ]
    return out


#: Request bytes the engine decodes and flattens at a time (its ``max_block_size`` for the input,
#: in requests of the batch's average size): the decoded requests and their flattening's
#: intermediate columns are held per block, not per batch. Measured on the ingest benchmark's
#: requests (300 spans, 117 kB each; 30 per block), a 100k-span batch: the engine's peak memory
#: +114-126 MB against +205 MB when a batch is decoded at once.
BLOCK_BYTES = 3_500_000


def requests_per_block(payloads: list) -> int:
    total = sum(len(p) for p in payloads)
    return max(1, min(len(payloads), round(BLOCK_BYTES * len(payloads) / max(total, 1))))


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
    flattened which rows.

    ``optimize_and_compare_chain = 0``: the analyser's pass that adds comparisons implied by
    ``AND`` chains finds none worth adding in the flattening, and was the costliest pass of its
    analysis at every insert. Measured (``NativeTraces.insert``, alternating, same requests): a
    one-request insert 0.174–0.193 → 0.134–0.159 s; on 100k-span inserts the difference is within
    the machine's noise (medians of eight 0.791 → 0.796 s). No other pass of the analyser costs
    more than noise. Keeping the plan's expression steps apart
    (``query_plan_merge_expressions = 0``) saved 5–24 ms of the fixed cost for more CPU, and
    did not change 100k-span inserts beyond noise either: not used."""
    return (f"format_schema = {lit(schema)}, input_format_protobuf_oneof_presence = 1, "
            "output_format_json_escape_forward_slashes = 0, optimize_and_compare_chain = 0, "
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
    legacy: tuple[str, ...] = ()  # objects of earlier versions, dropped at start

    def __init__(self, store, redactor: Redactor, limits: Limits, schema_dir: str, every_value: bool = False,
                 lanes: int | None = None):
        """``every_value``: format doubles and key-value lists in the engine too, instead of
        leaving requests that hold them to Python (see ``native_sql.Sql``). ``lanes``: inserts
        that may run at once (``LANES`` by default)."""
        self.store = store
        self.sql = Sql(redactor, limits, doubles=every_value, kvlists=every_value)
        self.schema_dir = schema_dir
        self.db = f"{store.db}_ingest"
        self.lanes = max(1, min(MAX_LANES, lanes or LANES))
        self._schema = ""
        self._columns = ", ".join(f"{n} {t}" for n, t in self.spec.input_columns())
        self._feed_names = ", ".join(feed_names(self.table, list(self.spec.STATS.values())))
        self._flatten = f"SELECT {self._feed_names} FROM ({self.spec.flatten_select(self.sql, '{input}')})"
        self._request_class = GetMessageClass(self.spec.ROOT)

    def open(self) -> None:
        os.makedirs(self.schema_dir, exist_ok=True)
        path = os.path.join(self.schema_dir, f"otlp_{self.signal}.proto")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.spec.proto())
        os.replace(tmp, path)
        self._schema = f"{path}:{message_name(self.spec.ROOT)}"
        for stmt in feed_ddl(self.db, self.signal, self.store.t(self.table), self.table, self.store.caps,
                             list(self.spec.STATS.values()), self.legacy, self.lanes):
            self.store.query(stmt)

    def stream(self, payloads: list, batch_id: int) -> list[bytes]:
        return frame(payloads, batch_id)

    def insert(self, payloads: list, batch_id: int, token: str, lane: int = 0) -> NativeResult:
        """Store the items of these requests (one batch) on ``lane`` (one insert at a time per
        lane); the result names the requests the engine left to the Python path. Raises the
        store's errors. The flattening is the insert's own SELECT, analysed once per insert (a
        view's query is analysed again for every block it receives): the requests are read
        BLOCK_BYTES at a time, flattened block by block, and squashed into one block before the
        views (see ``insert_settings``)."""
        side = f"{self.db}.{self.signal}_side_{lane}"
        rewritten = 0
        try:
            self._insert(payloads, batch_id, token, lane, side)
        except QueryError:
            # the engine reads a batch whole before it writes: nothing of it landed
            payloads, rewritten = canonical(self._request_class, payloads)
            if not rewritten:
                raise
            log.warning("native %s decoder: %d request(s) of batch %x re-encoded (fields sent with another wire "
                        "type than the schema's)", self.signal, rewritten, batch_id)
            self._insert(payloads, batch_id, token, lane, side)
        res = read_side(self.store, side, self.spec.STATS)
        res.rewritten = rewritten
        return res

    def _insert(self, payloads: list, batch_id: int, token: str, lane: int, side: str) -> None:
        self.store.query(f"TRUNCATE TABLE {side}")
        self.store.backend.insert_file(
            f"INSERT INTO {self.db}.{self.signal}_feed_{lane} ({self._feed_names})", "Protobuf",
            frame(payloads, batch_id), structure=self._columns,
            settings=insert_settings(self._schema, token, requests_per_block(payloads)), select=self._flatten,
            lane=lane, pipe=True)
