"""The native decoder (the engine decodes, flattens, redacts and limits) against the Python one:
the same requests, through the receiver's own checks into a WAL, then each decoder's writer into
its own database; every stored row, every rollup count and every truncation counter must agree."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from tests.collector.corpus import corner_requests, sdk_requests
from tests.collector.harness import drain
from tracehouse.collector import native_feed
from tracehouse.collector.convert import Limits
from tracehouse.collector.decode import SIGNALS, decode_request
from tracehouse.collector.ingest import prepare
from tracehouse.collector.metrics import Registry
from tracehouse.collector.native import NativeTraces
from tracehouse.collector.redact import Redactor
from tracehouse.collector.wal import Wal
from tracehouse.storage import Store

SIG = SIGNALS["traces"]
SPAN_COLUMNS = ("timestamp, hex(trace_id), hex(span_id), hex(parent_span_id), trace_state, service, name, kind, "
                "status_code, status_message, start_ns, duration_ns, attr_keys, attr_values, attr_types, "
                "resource_keys, resource_values, scope_name, scope_version, events_time_ns, events_name, "
                "events_attrs, arrayMap(x -> hex(x), links_trace_id), arrayMap(x -> hex(x), links_span_id), links_attrs")


def _fill_wal(directory: str, bodies: list[bytes], sigs: list | None = None) -> int:
    """The bodies through the receiver's checks into a WAL (each of ``sigs``' signal, traces by
    default); returns the items accepted."""
    wal = Wal(directory)
    wal.start()
    done = threading.Semaphore(0)
    items = 0
    for body, sig in zip(bodies, sigs or [SIG] * len(bodies), strict=True):
        msg, _, raw = decode_request(sig, "application/x-protobuf", "", body, 64 << 20)
        prep = prepare(sig, lambda: (msg, raw))  # noqa: B023 - called at once
        if prep.checked.accepted:
            wal.append(sig.code, prep.checked.accepted, prep.payload, lambda pos, err: done.release(),
                       digest=prep.digest)
            items += prep.checked.accepted
            assert done.acquire(timeout=10)
    wal.stop()
    return items


def _drain(store, buffer_dir: str, limits: Limits, native: bool, redactor: Redactor, every_value: bool) -> Registry:
    nat = NativeTraces(store, redactor, limits, buffer_dir + "-schemas", every_value) if native else None
    return drain(store, buffer_dir, limits, nat, redactor)


def _rows(store, sql: str) -> list:
    return [tuple(json.dumps(v, default=lambda b: b.hex(), sort_keys=True) for v in r)
            for r in store.query(sql.replace("{db}", store.db)).rows]


def _counters(m: Registry) -> dict:
    out = {}
    for line in m.render().decode().splitlines():
        if line.startswith("tracehouse_collector_truncated_total{"):
            out[line.split("{", 1)[1].rsplit("}", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return out


TIGHT = Limits(max_attributes=8, max_value_len=100, max_key_len=20, max_events=3, max_links=2)


# block_bytes: request bytes the engine decodes and flattens at a time; 1 makes every request of
# the corpus a block of its own, the blocks squashed again before the views
@pytest.mark.parametrize("limits,every_value,block_bytes",
                         [(Limits(), False, native_feed.BLOCK_BYTES), (TIGHT, False, native_feed.BLOCK_BYTES), (TIGHT, True, 1)],
                         ids=["default", "tight", "tight-every-value-small-blocks"])
def test_both_decoders_store_the_same_rows(chdb_dir, tmp_path, monkeypatch, limits, every_value, block_bytes):
    monkeypatch.setattr(native_feed, "BLOCK_BYTES", block_bytes)
    cases = corner_requests() + sdk_requests()
    assert any(name.startswith("sdk") for name, _ in cases)
    bodies = [req.SerializeToString() for _, req in cases]
    src = str(tmp_path / "wal")
    items = _fill_wal(src, bodies)
    shutil.copytree(src, str(tmp_path / "wal-native"))
    redactor = Redactor(["tenant_pin"])
    stores = {}
    metrics = {}
    try:
        for name in ("python", "native"):
            stores[name] = Store.open(f"chdb://{chdb_dir}?database=diff_{name}_{tmp_path.name[-8:]}")
            stores[name].migrate()
            metrics[name] = _drain(stores[name], src if name == "python" else str(tmp_path / "wal-native"),
                                   limits, name == "native", redactor, every_value)
        py, nat = stores["python"], stores["native"]
        # the native path stored most requests itself; the nested ones came back to Python
        to_python = metrics["native"].get("tracehouse_collector_native_python_requests_total")
        # three corner cases nest deeper than the schema, and one SDK span carries an array
        assert to_python == 4 if every_value else 4 < to_python <= len(bodies) - 4
        for sql in (f"SELECT {SPAN_COLUMNS} FROM {{db}}.spans ORDER BY span_id, trace_id",
                    "SELECT minute, service, name, kind, is_entry, countMerge(calls), sumMerge(errors), "
                    "sumMerge(duration_sum) FROM {db}.red_1m GROUP BY ALL ORDER BY ALL",
                    "SELECT minute, service, target, target_kind, countMerge(calls) FROM {db}.edges_1m "
                    "GROUP BY ALL ORDER BY ALL",
                    "SELECT hour, hex(trace_id), countMerge(span_count), minMerge(first_start_ns), "
                    "argMinMerge(root_name), arraySort(groupUniqArrayMerge(services)) FROM {db}.trace_summary "
                    "GROUP BY ALL ORDER BY ALL"):
            a, b = _rows(py, sql), _rows(nat, sql)
            assert len(a) == len(b) > 0
            for x, y in zip(a, b):
                assert x == y
        assert len(_rows(py, "SELECT span_id FROM {db}.spans")) == items
        assert _counters(metrics["python"]) == _counters(metrics["native"])
        assert set(_counters(metrics["python"])) >= {'what="attributes"', 'what="attribute values"'}
        assert metrics["python"].get("tracehouse_collector_written_items_total") == items
        assert metrics["native"].get("tracehouse_collector_written_items_total") == items
    finally:
        for s in stores.values():
            s.query(f"DROP DATABASE IF EXISTS {s.db}")
            s.query(f"DROP DATABASE IF EXISTS {s.db}_ingest")
            s.close()


def _with_span_bytes(name: str, extra: bytes) -> bytes:
    """A request of one span whose encoding ends with ``extra`` (fields as the client wrote them)."""
    from google.protobuf.internal.encoder import _VarintBytes as V
    from opentelemetry.proto.trace.v1 import trace_pb2

    now = time.time_ns()
    span = trace_pb2.Span(trace_id=bytes(range(16)), span_id=name.encode()[:8].ljust(8, b"x"), name=name,
                          start_time_unix_nano=now, end_time_unix_nano=now + 5000).SerializeToString() + extra
    scope_spans = V((2 << 3) | 2) + V(len(span)) + span
    resource_spans = V((2 << 3) | 2) + V(len(scope_spans)) + scope_spans
    return V((1 << 3) | 2) + V(len(resource_spans)) + resource_spans


def test_fields_sent_with_another_wire_type_do_not_fail_the_batch(chdb_dir, tmp_path):
    """The receiver's parser reads a field sent with another wire type than its own as an unknown
    field; the engine refused the whole batch for it, every other client's requests with it (the
    writer retried, then converted the batch in Python). Now those requests are re-encoded as
    protobuf encodes them and the batch is stored natively, with the rows Python stores."""
    from google.protobuf.internal.encoder import _VarintBytes as V

    bodies = [req.SerializeToString() for _, req in sdk_requests()]
    odd = [_with_span_bytes("name-as-varint", V((5 << 3) | 0) + V(7)),
           _with_span_bytes("start-as-fixed32", V((7 << 3) | 5) + b"\x01\x02\x03\x04"),
           _with_span_bytes("attributes-as-varint", V((9 << 3) | 0) + V(1))]
    bodies = bodies[:3] + odd + bodies[3:]
    src = str(tmp_path / "wal")
    items = _fill_wal(src, bodies)
    shutil.copytree(src, str(tmp_path / "wal-native"))
    stores, metrics = {}, {}
    try:
        for name in ("python", "native"):
            stores[name] = Store.open(f"chdb://{chdb_dir}?database=wire_{name}_{tmp_path.name[-8:]}")
            stores[name].migrate()
            metrics[name] = _drain(stores[name], src if name == "python" else str(tmp_path / "wal-native"),
                                   Limits(), name == "native", Redactor(), False)
        sql = f"SELECT {SPAN_COLUMNS} FROM {{db}}.spans ORDER BY span_id, trace_id"
        a, b = _rows(stores["python"], sql), _rows(stores["native"], sql)
        assert len(a) == items and a == b
        m = metrics["native"]
        assert m.get("tracehouse_collector_native_rewritten_requests_total") == len(odd)
        assert not m.get("tracehouse_collector_native_fallback_batches_total")
        assert not m.get("tracehouse_collector_writer_errors_total")
    finally:
        for s in stores.values():
            s.query(f"DROP DATABASE IF EXISTS {s.db}")
            s.query(f"DROP DATABASE IF EXISTS {s.db}_ingest")
            s.close()
