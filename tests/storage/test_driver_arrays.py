"""The one-pass Array writer (storage/driver_arrays.py) writes exactly the bytes clickhouse-driver's
own writer does: every array type of the schema (as rendered for a ClickHouse 18.16 server and for
current ones), nested arrays, empty arrays and rows, and the nullable kinds it leaves to the driver."""

from __future__ import annotations

import random

import pytest
from clickhouse_driver import bufferedwriter
from clickhouse_driver.client import Client
from clickhouse_driver.columns.arraycolumn import ArrayColumn
from clickhouse_driver.columns.service import write_column

from tracehouse.storage import driver_arrays
from tracehouse.storage.capabilities import capabilities_for
from tracehouse.storage.schema import render_type
from tracehouse.storage.tables import TABLES_BY_NAME


@pytest.fixture(autouse=True)
def _installed():
    driver_arrays.install()  # as every server store does; keeps the driver's own method for comparison


class _Sink:
    def __init__(self) -> None:
        self.out = bytearray()

    def sendall(self, data: bytes) -> None:
        self.out += data


def _written(spec: str, rows: list, write) -> bytes:
    ctx = Client("127.0.0.1").connection.context  # no connection is made: the column options only
    sink = _Sink()
    buf = bufferedwriter.BufferedSocketWriter(sink, 1 << 16)
    saved = ArrayColumn._write
    ArrayColumn._write = write
    try:
        write_column(ctx, "c", spec, [list(r) if isinstance(r, list) else r for r in rows], buf)
    finally:
        ArrayColumn._write = saved
    buf.flush()
    return bytes(sink.out)


def _leaf(t: str, rnd: random.Random):
    if t.startswith("Nullable("):
        return None if rnd.random() < 0.3 else _leaf(t[9:-1], rnd)
    if t.startswith("Array("):
        return [_leaf(t[6:-1], rnd) for _ in range(rnd.choice([0, 0, 1, 2, 5]))]
    if t == "String" or t == "LowCardinality(String)":
        return rnd.choice(["", "a", "ключ", "x" * 300, "service.name"])
    if t.startswith("FixedString("):
        return rnd.randbytes(int(t[12:-1]))
    if t.startswith("Float"):
        return rnd.choice([0.0, -1.5, 1e300])
    return rnd.randrange(0, 250)


def _schema_array_types() -> list[str]:
    out = set()
    for version in ("18.16.1", "26.9.1"):
        caps = capabilities_for(version)
        for table in TABLES_BY_NAME.values():
            for c in table.columns:
                t = render_type(c.type, caps)
                if t.startswith("Array("):
                    out.add(t)
    return sorted(out)


@pytest.mark.parametrize("spec", _schema_array_types() + [
    "Array(Array(String))", "Array(Array(Array(UInt8)))", "Array(Array(FixedString(8)))",
    "Array(Nullable(String))", "Array(Array(Nullable(UInt64)))", "Nullable(String)",
])
def test_the_same_bytes_as_the_driver(spec):
    rnd = random.Random(spec)
    for n in (0, 1, 7, 2000):
        rows = [_leaf(spec, rnd) for _ in range(n)]
        if n == 7:
            rows = [[] if spec.startswith("Array(") else r for r in rows]  # only empty arrays
        assert _written(spec, rows, driver_arrays._write) == _written(spec, rows, driver_arrays.original_write())


def test_install_is_idempotent_and_keeps_the_drivers_method():
    driver_arrays.install()
    driver_arrays.install()
    assert ArrayColumn._write is driver_arrays._write
    assert driver_arrays.original_write() is not driver_arrays._write
