"""A real ``tracehouse collector`` whose buffer directory's file system fills up (a tmpfs of 8 MB):
while nothing can be made durable it answers 503 with Retry-After, never 200; once space is freed
it recovers by itself, and every span it acknowledged, before and after, is stored exactly once."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from testkit.servers import free_port
from tests.collector.harness import start_collector_process
from tests.collector.load import stored_span_counts
from tests.collector.payloads import traces
from tests.collector.tmpfs import mounted
from tests.support import oneshot
from tests.support.waiting import wait_for
from tracehouse.collector.wal import Wal


@pytest.fixture
def small_fs(tmp_path):
    yield from mounted(tmp_path, "size=8m")


@pytest.fixture
def few_inodes_fs(tmp_path):
    yield from mounted(tmp_path, "size=8m,nr_inodes=32")


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
    r = oneshot.post(url + "/v1/traces", content=req.SerializeToString(),
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
        # the writer cannot save its checkpoint: not ready, and says why
        ready = oneshot.get(p.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and "No space left on device" in ready.text, ready.text
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
        wait_for(lambda: oneshot.get(p.url + "/readyz", timeout=10).status_code == 200, 30, every=0.2,
                 what="ready again")
    finally:
        p.terminate()
    counts = stored_span_counts(storage)
    assert {i.hex() for i in acked} <= set(counts)
    assert all(c == 1 for c in counts.values())


def test_wal_that_cannot_create_its_next_segment_fails_the_appends_and_recovers(few_inodes_fs):
    """The file system has no inode left when the current segment is full: the appends waiting
    for that commit fail (their requests get 503) instead of waiting for ever, and once a file can
    be created again the log goes on; everything acknowledged reads back."""
    wal = Wal(os.path.join(few_inodes_fs, "wal"), segment_bytes=4096)
    wal.start()

    def append(payload: bytes) -> tuple[object, BaseException | None]:
        done, got = threading.Event(), []
        wal.append(1, 1, payload, lambda pos, err: (got.append((pos, err)), done.set()))
        assert done.wait(10), "the append was never answered (the WAL's flusher is gone)"
        return got[0]

    acked = []
    for i in range(5):  # the segment passes 4096 bytes
        pos, err = append(b"%d" % i * 1000)
        assert err is None
        acked.append(pos)
    spare = os.path.join(few_inodes_fs, "spare")
    os.mkdir(spare)
    n = 0
    try:
        while True:
            os.close(os.open(os.path.join(spare, str(n)), os.O_CREAT | os.O_WRONLY))
            n += 1
    except OSError as e:
        assert e.errno == errno.ENOSPC
    try:
        for _ in range(2):
            pos, err = append(b"refused")
            assert pos is None and isinstance(err, OSError)
    finally:
        for name in os.listdir(spare):
            os.unlink(os.path.join(spare, name))
    for i in range(3):
        pos, err = append(b"after %d" % i)
        assert err is None, err
        acked.append(pos)
    wal.stop()
    again = Wal(wal.dir)
    again.open()
    try:
        got = again.read((0, 0), 100, 1 << 20)
    finally:
        again.stop()
    assert [r.pos for r in got] == acked
    assert b"refused" not in b"".join(r.payload for r in got)


@pytest.mark.parametrize("how", ["under_a_file", "read_only"])
def test_unusable_buffer_directory_stops_the_collector_with_one_line(tmp_path, how):
    """A buffer directory that cannot be created or written at start: ``tracehouse collector``
    exits 2 with one line naming the directory and the reason, not a traceback (exit 1)."""
    if how == "under_a_file":
        (tmp_path / "file").write_text("")
        buf = str(tmp_path / "file" / "buffer")
    else:
        fs = next(mounted(tmp_path, "size=1m"))
        os.mkdir(os.path.join(fs, "buffer"))
        subprocess.run(["mount", "-o", "remount,ro", fs], check=True)
        buf = os.path.join(fs, "buffer")
    try:
        env = dict(os.environ, TRACEHOUSE_BUFFER_DIR=buf, TRACEHOUSE_OTLP_GRPC_PORT="0")
        done = subprocess.run([sys.executable, "-m", "tracehouse.cli", "collector", "--storage",
                               f"chdb://{tmp_path}/data", "--otlp-port", str(free_port())],
                              env=env, capture_output=True, text=True, timeout=120)
    finally:
        if how == "read_only":
            subprocess.run(["umount", "-l", os.path.dirname(buf)], check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-2000:]
    assert buf in lines[0] and "cannot be used" in lines[0]
