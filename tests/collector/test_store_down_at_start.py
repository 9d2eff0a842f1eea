"""``tracehouse collector`` started while its ClickHouse server is down: it listens, says once why,
buffers what the official SDK exporter sends (acknowledged only once on disk; 503 with Retry-After
at its buffer cap), and once the server starts it runs the migrations and writes the buffer:
every acknowledged span stored exactly once. Before, the command printed one line and exited 1."""

from __future__ import annotations

import pytest

from testkit import servers
from tests.collector.harness import start_collector_process
from tests.collector.payloads import traces
from tests.collector.rollups import rollup_mismatches, span_totals
from tests.collector.sdk_load import SdkLoad, make_batches
from tests.support import oneshot
from tests.support.waiting import wait_for
from tracehouse.storage import Store

CAP = 400_000  # the buffer's cap in bytes: reached while the server is down


def _metric(url: str, name: str) -> float:
    text = oneshot.get(url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.fixture
def stopped_clickhouse(tmp_path):
    """A ClickHouse server's configuration and port, the server not running: its port is chosen and
    written in its configuration, then the server stops, so nothing listens there."""
    ch = servers.start_clickhouse(str(tmp_path / "clickhouse"))
    ch.stop()
    yield ch
    ch.stop()  # the server the test started again, by its PID


def test_the_collector_buffers_while_clickhouse_is_down_at_start_and_writes_once_it_starts(stopped_clickhouse,
                                                                                          tmp_path):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    ch = stopped_clickhouse
    storage = ch.url.rsplit("/", 1)[0] + "/late_store"
    log_path = tmp_path / "collector.log"
    env = {"TRACEHOUSE_BUFFER_MAX_BYTES": str(CAP), "TRACEHOUSE_OTLP_GRPC_PORT": "0"}
    with open(log_path, "w") as log_file:
        proc = start_collector_process(storage, str(tmp_path / "buffer"), env=env, stderr=log_file)
    load = None
    store = None
    try:
        ready = oneshot.get(proc.url + "/readyz", timeout=10)
        # ready all the same: it takes data (a balancer keeps it in), and says what it waits for
        assert ready.status_code == 200 and "ready, buffering: store unreachable" in ready.text, ready.text
        assert _metric(proc.url, "tracehouse_collector_store_waiting") == 1

        # the official exporter's requests are acknowledged (durable in the buffer) up to the cap,
        # where it is refused (and gives up after its short timeout: those spans were not stored)
        exporter = OTLPSpanExporter(endpoint=proc.url + "/v1/traces", timeout=2)
        acked: list[int] = []
        refused: list[int] = []
        for batch in make_batches(60, 100, seed=10_000):
            ok = exporter.export(batch) == SpanExportResult.SUCCESS
            (acked if ok else refused).extend(s.context.span_id for s in batch)
            if not ok:
                break
        else:
            raise AssertionError("the buffer never reached its cap")
        exporter.shutdown()
        assert len(acked) >= 1000
        assert _metric(proc.url, "tracehouse_collector_buffer_bytes") > CAP // 2
        # past the cap: 503 with Retry-After, the client keeps its data
        req, _ = traces(300)  # larger than what the cap leaves
        full = oneshot.post(proc.url + "/v1/traces", content=req.SerializeToString(), timeout=10,
                          headers={"content-type": "application/x-protobuf"})
        assert full.status_code == 503 and full.headers.get("retry-after"), (full.status_code, full.headers)
        assert _metric(proc.url, "tracehouse_collector_written_items_total") == 0

        # exporters keep sending (and retrying their 503s) while the server starts
        load = SdkLoad(proc.url, per_batch=100, threads=2, pause=0.05).start()
        restarted = servers.restart_clickhouse(ch)
        ch.pid = restarted.pid
        store = Store.open(storage)

        def stored() -> set[int]:
            try:
                return {int(h, 16) for (h,) in store.query(f"SELECT hex(span_id) FROM {store.t('spans')}").rows}
            except Exception:  # the collector has not created the table yet
                return set()

        wait_for(lambda: set(acked) <= stored(), 120, every=0.3, what="the spans buffered before the start stored")
        wait_for(lambda: len(load.acked) >= 1000, 60, every=0.1, what="spans acknowledged after the start")
        load.stop()
        wait_for(lambda: _metric(proc.url, "tracehouse_collector_buffer_bytes") == 0, 60, every=0.1,
                 what="the buffer drained")
        ready = oneshot.get(proc.url + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert _metric(proc.url, "tracehouse_collector_store_waiting") == 0
        assert proc.terminate() == 0

        rows, distinct = span_totals(store)
        assert rows == distinct, f"{rows - distinct} spans stored twice"
        have = stored()
        missing = (set(acked) | set(load.acked)) - have
        assert not missing, f"{len(missing)} acknowledged spans lost"
        assert have <= set(acked) | set(refused) | set(load.acked) | set(load.unknown)
        assert rollup_mismatches(store) == {}
    finally:
        if load is not None:
            load.stop()
        if proc.proc.poll() is None:
            proc.kill()
        if store is not None:
            store.close()
    log = log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
    warnings = [line for line in log.splitlines() if "cannot be reached" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "buffers what it receives" in warnings[0], log[-3000:]
