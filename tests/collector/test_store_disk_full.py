"""The embedded store's disk fills up (its chDB directory on a tmpfs of 64 MB) while a real
``tracehouse collector`` stores: the writer waits for space, as for a store that is down, and
stores every acknowledged span once space is freed; nothing goes to the dead letters (before,
NOT_ENOUGH_SPACE counted as the store rejecting the data: eight of them, and the batch was split
and set aside in dead-letter files that only an operator brings back)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.collector.harness import start_collector_process
from tests.collector.load import stored_span_counts
from tests.collector.payloads import traces
from tests.collector.tmpfs import mounted
from tests.support import oneshot
from tests.support.waiting import wait_for


@pytest.fixture
def store_fs(tmp_path):
    yield from mounted(tmp_path, "size=64m")


def _metric(url: str, line_start: str) -> float:
    text = oneshot.get(url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def test_store_disk_full_is_waited_out_not_dead_lettered(store_fs, tmp_path):
    storage = f"chdb://{store_fs}/data"
    p = start_collector_process(storage, str(tmp_path / "buffer"), env={"TRACEHOUSE_OTLP_GRPC_PORT": "0"})
    filler = os.path.join(store_fs, "filler")
    acked: list[bytes] = []
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        for _ in range(3):
            req, ids = traces(50)
            r = oneshot.post(p.url + "/v1/traces", content=req.SerializeToString(),
                           headers={"content-type": "application/x-protobuf"}, timeout=30)
            assert r.status_code == 200
            acked += ids
        unavailable = 'tracehouse_collector_writer_errors_total{kind="unavailable"}'
        wait_for(lambda: _metric(p.url, unavailable) >= 8, 60, every=0.5,
                 what="eight failed inserts counted as the store being unavailable")
        assert _metric(p.url, 'tracehouse_collector_writer_errors_total{kind="rejected"}') == 0
        os.unlink(filler)
        wait_for(lambda: p.stored() >= len(acked), 60, every=0.5, what="the spans stored once space is freed")
        assert _metric(p.url, "tracehouse_collector_dead_letter_items_total") == 0
    finally:
        assert p.terminate() == 0
    counts = stored_span_counts(storage)
    assert set(counts) == {i.hex() for i in acked} and set(counts.values()) == {1}
