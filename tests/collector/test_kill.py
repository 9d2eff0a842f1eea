"""Real SIGKILLs of a running ``tracehouse serve`` while official SDK exporters send and retry:
after every run of kills, every acknowledged span is stored exactly once, no span id twice, and
every rollup equals what the spans imply. Ten runs on each backend (embedded chDB; the ClickHouse
18.16 server), chained: the restart after a run's last kill starts the next run."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from testkit.servers import free_port
from tests.collector.harness import start_serve_process
from tests.collector.rollups import rollup_mismatches, span_totals
from tests.collector.sdk_load import SdkLoad
from tests.support import oneshot
from tests.support.waiting import wait_for
from tracehouse.storage import Store

RUNS = int(os.environ.get("TRACEHOUSE_KILL_RUNS", "10"))
KILLS_PER_RUN = 2


def _metric(url: str, name: str) -> float:
    try:
        text = oneshot.get(url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return -1
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _drained(url: str) -> bool:
    return _metric(url, "tracehouse_collector_buffer_bytes") == 0


def _check(store, load: SdkLoad, run: int) -> None:
    rows, distinct = span_totals(store)
    assert rows == distinct, f"run {run}: {rows - distinct} spans stored twice"
    stored = {int(h, 16) for (h,) in store.query(f"SELECT hex(span_id) FROM {store.t('spans')}").rows}
    missing = set(load.acked) - stored
    assert not missing, f"run {run}: {len(missing)} of {len(load.acked)} acknowledged spans lost"
    assert stored <= set(load.acked) | set(load.unknown)
    assert rollup_mismatches(store) == {}, f"run {run}"


# chDB twice: ``auto`` stores this load's small batches through Python, ``native`` through the engine
@pytest.mark.parametrize("backend,decoder", [("chdb", "auto"), ("chdb", "native"), ("clickhouse", "auto")])
def test_repeated_sigkills_under_retrying_exporters(backend, decoder, tmp_path, request):
    if backend == "chdb":
        storage = f"chdb://{tmp_path / 'data'}"
        role = "serve"
    else:
        base = request.getfixturevalue("clickhouse_url").rsplit("/", 1)[0]
        storage = f"{base}/kill_{os.getpid()}_{int(time.time())}"
        role = "serve"
    buffer_dir = str(tmp_path / "buffer")
    env = {"TRACEHOUSE_DECODER": decoder}
    otlp, http = free_port(), free_port()
    load = SdkLoad(f"http://127.0.0.1:{otlp}", per_batch=100, threads=6, pause=0.0)
    proc = start_serve_process(storage, buffer_dir, otlp, http, role, env)
    load.start()
    server_store = Store.open(storage) if backend == "clickhouse" else None
    kills = 0
    try:
        for run in range(RUNS):
            for _ in range(KILLS_PER_RUN):
                acked = len(load.acked)
                wait_for(lambda a=acked: len(load.acked) >= a + 450, 60, every=0.05, what="acknowledged spans")
                time.sleep(0.15 * (kills % 4))  # kill at different points of the writer's cycle
                proc.kill()
                kills += 1
                proc = start_serve_process(storage, buffer_dir, otlp, http, role, env)
            load.pause()
            wait_for(lambda u=proc.url: _drained(u), 60, every=0.1, what="the buffer drained")
            if backend == "chdb":  # one process per chDB directory: look while the server is down
                assert proc.terminate() == 0
                with Store.open(storage) as store:
                    _check(store, load, run)
                proc = start_serve_process(storage, buffer_dir, otlp, http, role, env)
            else:
                _check(server_store, load, run)
            load.resume()
    finally:
        load.stop()
        if proc.proc.poll() is None:
            proc.kill()
        if server_store is not None:
            server_store.query(f"DROP DATABASE IF EXISTS {server_store.db}")
            server_store.close()
    assert kills == RUNS * KILLS_PER_RUN and len(load.acked) > RUNS * KILLS_PER_RUN * 450
