"""A real ``tracehouse collector`` whose buffer directory's file system fills up (a tmpfs of 8 MB):
while nothing can be made durable it answers 503 with Retry-After, never 200; once space is freed
it recovers by itself, and every span it acknowledged, before and after, is stored exactly once."""

from __future__ import annotations

import errno
import os
import subprocess
import time

import httpx
import pytest

from tests.collector.harness import start_collector_process
from tests.collector.load import span_id_counts
from tests.collector.payloads import traces
from tests.support.waiting import wait_for
from tracehouse.storage import Store


@pytest.fixture
def small_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "fs"
    d.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    yield str(d)
    subprocess.run(["umount", "-l", str(d)], check=False)


def _fill(path: str) -> None:
    """Write zeros to ``path`` until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    chunk = b"\0" * (64 << 10)
    try:
        while True:
            os.write(fd, chunk)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def _post(url: str, n: int = 50) -> tuple[httpx.Response, list[bytes]]:
    req, ids = traces(n)
    r = httpx.post(url + "/v1/traces", content=req.SerializeToString(),
                   headers={"content-type": "application/x-protobuf"}, timeout=30)
    return r, ids


def test_full_disk_answers_503_then_recovers_and_stores_everything_acknowledged(small_fs, tmp_path):
    storage = f"chdb://{tmp_path}/data"
    p = start_collector_process(storage, os.path.join(small_fs, "buffer"))
    acked: list[bytes] = []
    filler = os.path.join(small_fs, "filler")
    try:
        r, ids = _post(p.url)
        assert r.status_code == 200
        acked += ids
        wait_for(lambda: p.stored() >= 50, 60, every=0.1, what="the first spans stored")
        # acknowledged (durable in the WAL); its batch closes about a second later, on a full disk
        r, ids = _post(p.url)
        assert r.status_code == 200
        acked += ids
        _fill(filler)
        for _ in range(4):
            r, _ = _post(p.url)
            assert r.status_code == 503, r.status_code
            assert r.headers.get("retry-after")
            time.sleep(0.5)
        os.unlink(filler)

        def accepted() -> bool:
            r, ids = _post(p.url)
            if r.status_code == 200:
                acked.extend(ids)
            return r.status_code == 200

        wait_for(accepted, 30, every=0.5, what="the collector accepts again once space is freed")
        for _ in range(3):
            r, ids = _post(p.url)
            assert r.status_code == 200
            acked += ids
        wait_for(lambda: p.stored() >= len(acked), 60, every=0.2,
                 what=f"all {len(acked)} acknowledged spans stored after the disk was freed")
    finally:
        p.terminate()
    store = Store.open(storage)
    try:
        counts = span_id_counts(store)
    finally:
        store.close()
    assert {i.hex() for i in acked} <= set(counts)
    assert all(c == 1 for c in counts.values())
