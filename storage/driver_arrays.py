"""clickhouse-driver's Array columns written with each nesting level flattened once, in C.

The driver (0.2.x) writes an ``Array(T)`` column in three passes over it, each flattening every
level again: the offsets in a Python loop per row (``ArrayColumn._write_sizes``), the nulls maps
(``_write_nulls_data``: a full flattening even when nothing in the column is nullable) and the
data (``_write_data``). The spans table has eleven array columns (attributes, resource, events,
links), a 50k-span batch about 1.5M strings in them: in a sampling profile of inserts into a
ClickHouse server those three passes were ~37% of the insert's CPU, the strings' own encoding
(Cython) ~35%. The writer thread that does the inserts is the collector's busiest (GIL-bound).

``install`` replaces ``ArrayColumn._write`` for columns with nothing nullable at any level (the
only kind the schema has) by the same computation done once per level with ``itertools``
(running sums of ``map(len, …)``, ``chain.from_iterable``); any other array column goes to the
driver's own code. The bytes written are the driver's own (``tests/storage/test_driver_arrays.py``
compares them for every array type of the schema and nested, empty and nullable arrays).
"""

from __future__ import annotations

import threading
from itertools import accumulate, chain
from struct import Struct
from typing import Any

__all__ = ["install", "original_write"]

_lock = threading.Lock()
_original: Any = None


def _nothing_nullable(column: Any, array_type: Any) -> bool:
    while True:
        if column.nullable:
            return False
        if not isinstance(column, array_type):
            return True
        column = column.nested_column


def _write(self: Any, value: Any, buf: Any) -> None:
    from clickhouse_driver.columns.arraycolumn import ArrayColumn

    if not _nothing_nullable(self, ArrayColumn):
        _original(self, value, buf)
        return
    value = self.prepare_items(value)
    sizes = [len(value)] if self._write_depth_0_size else []
    column = self
    while isinstance(column.nested_column, ArrayColumn):
        sizes.extend(accumulate(map(len, value)))  # offsets: running sums of the lengths
        value = list(chain.from_iterable(value))
        column = column.nested_column
    buf.write(Struct(f"<{len(sizes)}Q").pack(*sizes))
    if value:
        column.nested_column._write_data(value, buf)


def install() -> None:
    """Use the one-pass writer in every ``ArrayColumn`` of this process (idempotent)."""
    global _original
    from clickhouse_driver.columns.arraycolumn import ArrayColumn

    with _lock:
        if _original is None:
            _original = ArrayColumn._write
            ArrayColumn._write = _write


def original_write() -> Any:
    """The driver's own ``ArrayColumn._write`` (for the test that compares the two)."""
    from clickhouse_driver.columns.arraycolumn import ArrayColumn

    return _original if _original is not None else ArrayColumn._write
