"""Embedded ClickHouse through chDB. One engine per process (chDB's own rule): stores opened on
the same directory share it; a different directory while one is open is an error."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .backend import EmbeddedBackend, PipelinedBackend, Result, check_params
from .chdb_dir import check_free
from .chdb_readers import ReaderPool, table_rows
from .disk_full import is_disk_full
from .errors import (
    ConfigError,
    QueryError,
    QueryLimitExceeded,
    QueryTimeout,
    StorageError,
    StorageUnavailable,
)
from .tables import Table

log = logging.getLogger("tracehouse.storage")

_engine_lock = threading.Lock()
_engine: dict[str, Any] = {"path": None, "session": None, "refs": 0, "lock": threading.RLock()}


def _open_session(path: str):
    from chdb import session as chdb_session

    with _engine_lock:
        if _engine["session"] is not None:
            if _engine["path"] != path:
                raise ConfigError(
                    f"chDB is already open on {_engine['path']} in this process; one embedded store per process"
                )
            _engine["refs"] += 1
            return _engine["session"], _engine["lock"]
        import os

        os.makedirs(path, exist_ok=True)
        check_free(path)
        try:
            sess = chdb_session.Session(path)
        except Exception as e:  # chDB raises RuntimeError subclasses
            raise StorageError(f"cannot open chDB at {path}: {e}") from e
        _engine.update(path=path, session=sess, refs=1)
        return sess, _engine["lock"]


@contextlib.contextmanager
def parser_connection():
    """A read-only connection for parsing user SQL (:mod:`.sqlparse`): to the engine this process
    has open, else to an in-memory engine opened for the call and shut down after it. The engine
    registry's lock is held throughout, so no store opens (or closes) an engine meanwhile."""
    from chdb import session as chdb_session

    with _engine_lock:
        try:
            conn = chdb_session.Session(_engine["path"] or ":memory:")
        except Exception as e:
            raise StorageError(f"cannot start the embedded SQL parser: {e}") from e
        try:
            conn.query("SET readonly = 1")
            yield conn
        finally:
            conn.close()


_MADV_PAGEOUT = 21
_LIBRARY_SUFFIX = "_chdb.abi3.so"


def page_out_library() -> None:
    """Drop the engine library's pages from this process's resident set.

    chDB is one ~530 MB shared object; loading and initialising it touches ~200 MB of it (static
    initialisers for thousands of functions and formats, plus the kernel's read-around), much of
    which a server never uses again. MADV_PAGEOUT (Linux 5.4+) reclaims those clean, file-backed
    pages now instead of under memory pressure. The cost: pages the engine does use fault back in
    on first touch, which slows the first seconds of work (a 1M-span bulk load right after it runs
    ~25% slower), so only long-running servers call this, once, at start. Only read-only
    mappings are touched; failure is harmless."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split()
                if len(parts) >= 6 and parts[5].endswith(_LIBRARY_SUFFIX) and "w" not in parts[1]:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    libc.madvise(lo, hi - lo, _MADV_PAGEOUT)
    except (OSError, ValueError, AttributeError) as e:
        log.info("could not page out chDB start-up code: %s", e)


#: jemalloc options for the engine in a long-running server: freed pages go back to the OS within
#: about a second instead of after ClickHouse's default decay (most of them still held 6 s later,
#: measured). Not at once (``dirty_decay_ms:0``, the earlier choice): then every insert faults its
#: working memory in again, which cost the native decoder's inserts 65% more CPU
#: (``bench/native_engine_bench.py``: 1.86 against 1.13 CPU-s per 100k spans) and the ingest
#: benchmark a third of its stored rate (51-58k against 73-79k spans/s, interleaved runs), for
#: 70-75 MB less peak RSS.
LEAN_ALLOCATOR = "dirty_decay_ms:1000"
_ALLOCATOR_ENV = "JE_MALLOC_CONF"  # what chDB's jemalloc reads (not MALLOC_CONF); measured


def prefer_low_memory() -> None:
    """Configure the engine's allocator to return freed memory at once. Effective only before
    chDB is loaded in this process; an allocator configuration already in the environment wins."""
    import os
    import sys

    if "chdb" in sys.modules:
        log.info("chDB already loaded; its allocator keeps its configuration")
        return
    os.environ.setdefault(_ALLOCATOR_ENV, LEAN_ALLOCATOR)


def _release_session() -> None:
    with _engine_lock:
        _engine["refs"] -= 1
        if _engine["refs"] <= 0 and _engine["session"] is not None:
            try:
                _engine["session"].close()
            finally:
                _engine.update(path=None, session=None, refs=0)


def _translate(e: Exception) -> StorageError:
    text = str(e)
    if "Code: 159" in text or "TIMEOUT_EXCEEDED" in text:
        return QueryTimeout(text)
    m = re.search(r"Code: (\d+)\.", text)
    if is_disk_full(int(m.group(1)) if m else None, text):  # not now: once space is freed
        return StorageUnavailable(f"the store's disk is full: {text}")
    if m and int(m.group(1)) in QueryLimitExceeded.CODES:
        return QueryLimitExceeded(text)
    return QueryError(text)


def _arrow_type(chtype: str):
    import pyarrow as pa

    t = chtype.replace("LC(String)", "String")
    if t.startswith("Array(") and t.endswith(")"):
        return pa.list_(_arrow_type(t[6:-1]))
    if t.startswith("FixedString("):
        return pa.binary(int(t[12:-1]))
    return {
        "String": pa.string(),
        "UInt8": pa.uint8(),
        "UInt16": pa.uint16(),
        "UInt32": pa.uint32(),
        "UInt64": pa.uint64(),
        "Int32": pa.int32(),
        "Int64": pa.int64(),
        "Float64": pa.float64(),
        "DateTime": pa.uint32(),
    }[t]


class ChdbBackend:
    kind = "chdb"

    #: read connections per store (statements run there, in parallel with inserts; see chdb_readers)
    READERS = 4

    def __init__(self, path: str):
        self.path = path
        self._session, self._lock = _open_session(path)
        self._closed = False
        self._schemas: dict[str, Any] = {}
        self._readers = ReaderPool(path, self.READERS)
        self._pools: list[ReaderPool] = [self._readers]
        # further insert connections ("lanes" 1, 2, …; lane 0 is the session), each used by one
        # insert at a time, so that inserts on different lanes run in parallel
        self._lanes: dict[int, tuple[Any, threading.Lock]] = {}
        self._lanes_lock = threading.Lock()

    # -- statements: on the reader connections, never under the insert lock ----------------------
    def query(self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> Result:
        return _run(self._readers, sql, params, settings)

    def restricted_reader(self, database: str, settings: dict[str, Any]) -> RestrictedReader:
        """Connections whose default database is ``database``, with ``settings`` fixed and then
        ``readonly = 1`` (so no statement can write or change a setting): for user-written SQL."""
        setup = [f"USE {database}"] + [f"SET {k} = {_setting(v)}" for k, v in settings.items()] + ["SET readonly = 1"]
        pool = ReaderPool(self.path, 2, setup)
        self._pools.append(pool)
        return RestrictedReader(pool)

    def _schema(self, table: Table):
        import pyarrow as pa

        sch = self._schemas.get(table.name)
        if sch is None:
            sch = pa.schema([(c.name, _arrow_type(c.type)) for c in table.columns])
            self._schemas[table.name] = sch
        return sch

    # A PipelinedBackend: Store.insert may overlap preparing one chunk with inserting the previous
    # one (the engine releases the GIL while it works).
    def prepare(self, table: Table, columns: Sequence[Sequence[Any]]) -> bytes:
        """Columns → one Arrow stream (Python-bound work, no engine lock)."""
        import pyarrow as pa

        schema = self._schema(table)
        arrays = [_to_arrow(col, schema.field(i).type) for i, col in enumerate(columns)]
        batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, schema) as w:
            w.write_batch(batch)
        return sink.getvalue()

    def insert_prepared(self, table: Table, qualified_name: str, payload: bytes, token: str | None = None) -> None:
        cols = ", ".join(table.column_names)
        settings = "parallel_view_processing = 1, short_circuit_function_evaluation = 'disable'"
        if token:
            settings += f", {dedup_settings(token)}"
        self.insert_file(f"INSERT INTO {qualified_name} ({cols})", "ArrowStream", payload, settings=settings)

    def insert(self, table: Table, qualified_name: str, columns: Sequence[Sequence[Any]],
               token: str | None = None, settings: dict[str, Any] | None = None) -> int:
        # settings: a server's statement limits; the embedded engine's inserts run in-process
        self.insert_prepared(table, qualified_name, self.prepare(table, columns), token)
        return len(columns[0]) if columns else 0

    def _lane(self, lane: int) -> tuple[Any, threading.Lock]:
        if lane == 0:
            return self._session, self._lock
        with self._lanes_lock:
            if self._closed:
                raise StorageError("store is closed")
            got = self._lanes.get(lane)
            if got is None:
                from chdb import session as chdb_session

                try:
                    got = self._lanes[lane] = (chdb_session.Session(self.path), threading.Lock())
                except Exception as e:
                    raise StorageError(f"cannot open an insert connection to chDB: {e}") from e
            return got

    def insert_file(self, insert: str, fmt: str, data: bytes | Sequence[bytes], structure: str = "",
                    settings: str = "", select: str = "SELECT * FROM {input}", lane: int = 0,
                    pipe: bool = False) -> None:
        """``INSERT INTO … SELECT * FROM file(<data>, fmt[, structure]) SETTINGS …``: the data (or
        the concatenation of its buffers) is handed to the engine as an in-memory file. Not chDB's streaming inserter: that one reports
        success when a materialized view of the table fails (the table's part written, the view's
        not: rollups silently short), where a query raises (checked on chDB 26.9). ``lane``: the
        insert connection (0, the session, unless the caller runs inserts side by side). ``pipe``:
        the engine reads the data through a pipe as it is written (formats read in one pass)."""
        # the path of an in-memory file (its fd number) is reused by later inserts: never let the
        # engine answer from its cache of schemas inferred per path
        settings = ", ".join(x for x in (settings, "schema_inference_use_cache_for_file = 0") if x)
        with (_data_pipe(data) if pipe else _data_file(data)) as path:
            args = f"'{path}', '{fmt}'" + (f", {_literal(structure)}" if structure else "")
            sql = f"{insert} {select.replace('{input}', f'file({args})')} SETTINGS {settings}"
            conn, lock = self._lane(lane)
            with lock:
                if self._closed:
                    raise StorageError("store is closed")
                try:
                    conn.query(sql, "Null")
                except Exception as e:
                    raise _translate(e) from e

    def release_startup_memory(self) -> None:
        page_out_library()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with self._lanes_lock:
            lanes, self._lanes = list(self._lanes.values()), {}
        for conn, lock in lanes:
            with lock:
                conn.close()
        for pool in self._pools:
            pool.close()
        _release_session()


class RestrictedReader:
    """``query(sql, params)`` on read-only connections set up by :meth:`ChdbBackend.restricted_reader`."""

    def __init__(self, pool: ReaderPool):
        self._pool = pool

    def query(self, sql: str, params: dict[str, Any] | None = None) -> Result:
        return _run(self._pool, sql, params, None)


def _run(pool: ReaderPool, sql: str, params: dict[str, Any] | None, settings: dict[str, Any] | None) -> Result:
    check_params(sql, params)
    if settings:
        sql = sql + " SETTINGS " + ", ".join(f"{k} = {_setting(v)}" for k, v in settings.items())
    try:
        tbl = pool.query(sql, params or None)
    except StorageError:
        raise
    except Exception as e:
        raise _translate(e) from e
    return Result(*table_rows(tbl))


def _to_arrow(col: Sequence[Any], type_):
    import pyarrow as pa

    if pa.types.is_list(type_):
        # Array columns that are empty in every row (links, events, exemplars: the common case) skip
        # pyarrow's per-row walk: all-zero offsets over an empty child array.
        if not any(col):
            return pa.ListArray.from_arrays(pa.array([0] * (len(col) + 1), pa.int32()), pa.array([], type_.value_type))
        shared = _shared_rows(col, type_)
        if shared is not None:
            return shared
    return pa.array(col, type=type_)


def _shared_rows(col: Sequence[Any], type_):
    """Columns whose rows are a few shared objects (a resource's attributes on every span of a
    request, interned attribute-key lists, one empty tuple for every span without events) convert
    each distinct object once and repeat it by index, in C. None when rows are not shared."""
    import pyarrow as pa

    n = len(col)
    head = col[:64]
    if n < 64 or len(set(map(id, head))) > 16:
        return None
    if sum(map(len, head)) < 64:  # mostly empty rows (events): pyarrow's own walk is cheaper
        return None
    ids = list(map(id, col))
    first = dict(zip(ids, col))  # id → object, in first-seen order
    if len(first) * 4 > n:
        return None
    where = dict(zip(first, range(len(first))))
    index = pa.array(list(map(where.__getitem__, ids)), pa.int32())
    return pa.array(list(first.values()), type=type_).take(index)


def _write_all(fd: int, chunks) -> None:
    """``chunks`` (buffers) written one after the other, a thousand per system call."""
    import os

    chunks = [memoryview(c) for c in chunks if len(c)]
    i = 0
    while i < len(chunks):
        group = chunks[i:i + 1000]
        n = os.writev(fd, group)
        for c in group:  # advance past what was written, cutting a partly written buffer
            if n >= len(c):
                n -= len(c)
                i += 1
            else:
                chunks[i] = c[n:]
                break


@contextmanager
def _data_pipe(data):
    """A path the engine reads ``data`` from through a pipe, fed by a thread while it reads: the
    data is never copied whole into an in-memory file (a 100k-span batch of trace requests is
    ≈ 40 MB). For formats read front to back in one pass (``Protobuf``). When the engine stops
    reading early (an error), the read end closes and the feeding thread ends on the broken pipe."""
    import fcntl
    import os

    r, w = os.pipe()
    try:
        fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ: 1 MiB, fewer hand-overs between the threads
    except OSError:
        pass

    def feed() -> None:
        try:
            _write_all(w, data)
        except OSError:  # the engine closed its end (it failed, or stopped reading)
            pass
        finally:
            os.close(w)

    feeder = threading.Thread(target=feed, name="tracehouse-insert-feed", daemon=True)
    feeder.start()
    try:
        yield f"/proc/self/fd/{r}"
    finally:
        os.close(r)
        feeder.join(30)


@contextmanager
def _data_file(data):
    """A path the engine can read ``data`` from: an anonymous in-memory file where the system has
    them (Linux), else a temporary file."""
    import os
    import tempfile

    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("tracehouse-insert", os.MFD_CLOEXEC)
        path = f"/proc/self/fd/{fd}"
    else:
        fd, path = tempfile.mkstemp(prefix="tracehouse-insert-")
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = [data]
        _write_all(fd, data)
        yield path
    finally:
        os.close(fd)
        if not path.startswith("/proc/"):
            os.unlink(path)


def _literal(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dedup_settings(token: str) -> str:
    """Insert settings that make a retried insert write only the parts (and view parts) it missed."""
    if not all(ch.isalnum() or ch in "_-" for ch in token):
        raise ValueError(f"bad deduplication token {token!r}")
    return f"insert_deduplication_token = '{token}', deduplicate_blocks_in_dependent_materialized_views = 1"


def _setting(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if not all(ch.isalnum() or ch in "_-." for ch in s):
        raise ValueError(f"bad setting value {s!r}")
    return f"'{s}'"


if TYPE_CHECKING:  # checked by mypy: the embedded engine does all that both sub-protocols ask
    _CONTRACTS: tuple[type[PipelinedBackend], type[EmbeddedBackend]] = (ChdbBackend, ChdbBackend)
