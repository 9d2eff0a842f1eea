"""The WAL and the writer on their own: torn tails, corruption, segment rolling and deletion, and
the replay of a batch that reached the store just before a crash."""

from __future__ import annotations

import os
import threading
import time

from tests.collector.load import span_id_counts
from tests.collector.payloads import traces
from tracehouse.collector.metrics import Registry
from tracehouse.collector.redact import Redactor
from tracehouse.collector.wal import Wal
from tracehouse.collector.writer import Checkpoint, Writer, batch_id_for


def _append(wal: Wal, kind: int, items: int, payload: bytes) -> tuple[int, int]:
    done = threading.Event()
    out: list = []

    def cb(pos, err):
        out.append((pos, err))
        done.set()

    wal.append(kind, items, payload, cb)
    assert done.wait(10)
    pos, err = out[0]
    assert err is None
    return pos


def test_group_commit_shares_one_fsync(tmp_path):
    wal = Wal(str(tmp_path))
    wal.open()  # appends queue up while the flusher is not running yet
    events = [threading.Event() for _ in range(10)]
    for i, ev in enumerate(events):
        wal.append(1, 1, b"x" * i, lambda pos, err, ev=ev: ev.set())
    assert not any(ev.is_set() for ev in events)  # nothing acknowledged before the fsync
    wal.start()
    assert all(ev.wait(10) for ev in events)
    assert wal.fsyncs == 1 and wal.records == 10
    wal.stop()


def test_records_roundtrip_across_segments(tmp_path):
    wal = Wal(str(tmp_path), segment_bytes=1000)
    wal.start()
    payloads = [os.urandom(300 + i) for i in range(10)]
    for p in payloads:
        _append(wal, 1, 3, p)
    recs = wal.read((0, 0), 10**9, 10**9)
    assert [r.payload for r in recs] == payloads
    assert len({r.pos[0] for r in recs}) > 2  # rolled over several segments
    assert wal.pending_bytes() > 3000
    n_segments = len(wal.segments())
    wal.release(recs[5].pos)
    assert wal.delete_before(recs[5].pos) >= 1
    assert len(wal.segments()) < n_segments
    assert wal.pending_bytes() < sum(len(p) for p in payloads[4:]) + 200
    assert [r.payload for r in wal.read(recs[5].pos, 10**9, 10**9)] == payloads[5:]
    # reads stop at the size limits, on record boundaries
    assert [r.payload for r in wal.read(recs[5].pos, 4, 10**9)] == payloads[5:7]
    wal.stop()


def test_torn_tail_and_corruption_are_cut_on_open(tmp_path, caplog):
    wal = Wal(str(tmp_path))
    wal.start()
    positions = [_append(wal, 1, 1, f"record-{i}".encode() * 10) for i in range(5)]
    wal.stop()
    seg = positions[0][0]
    path = wal._path(seg)
    with open(path, "ab") as f:
        f.write(b"\x50\x00\x00\x00partial record cut by a crash")
    wal2 = Wal(str(tmp_path))
    wal2.open()
    assert [r.payload for r in wal2.read((seg, 0), 10**9, 10**9)] == [
        f"record-{i}".encode() * 10 for i in range(5)]
    assert "torn tail" in caplog.text
    wal2.stop()
    # flip a byte inside record 3: record 3 is no longer trusted (replaced by a filler record of its
    # size, its bytes kept aside), and the intact record 4 after it is kept (test_wal_damage.py)
    with open(path, "r+b") as f:
        f.seek(positions[3][1] + 20)
        b = f.read(1)
        f.seek(positions[3][1] + 20)
        f.write(bytes([b[0] ^ 0xFF]))
    wal3 = Wal(str(tmp_path))
    wal3.open()
    recs = wal3.read((seg, 0), 10**9, 10**9)
    assert [r.payload for r in recs if r.kind] == [f"record-{i}".encode() * 10 for i in (0, 1, 2, 4)]
    assert [r.pos for r in recs] == positions
    assert recs[3].kind == 0 and recs[3].items == 0
    wal3.stop()


def test_replay_of_a_batch_stored_just_before_a_crash_does_not_duplicate(chdb_store, tmp_path):
    buf = str(tmp_path)
    wal = Wal(buf)
    writer = Writer(wal, chdb_store, Registry(), Redactor(), max_age=0.05)
    wal.start()
    req, ids = traces(50)
    start = _append(wal, 1, 50, req.SerializeToString())
    writer.start()
    deadline = time.monotonic() + 20
    while writer.stored["traces"] < 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    writer.stop(2)
    wal.stop()
    assert writer.stored["traces"] == 50
    end = writer.cursor
    # The crash: the insert landed, but the checkpoint still says the batch is pending.
    Checkpoint(os.path.join(buf, "checkpoint.json")).save(start, (start, end))
    wal = Wal(buf)
    metrics = Registry()
    writer = Writer(wal, chdb_store, metrics, Redactor(), max_age=0.05)
    wal.start()
    writer.start()
    deadline = time.monotonic() + 20
    while Checkpoint(os.path.join(buf, "checkpoint.json")).load()[1] is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    writer.stop(2)
    wal.stop()
    # replayed, but the store already had that batch id: skipped
    assert writer.stored["traces"] == 0
    assert metrics.get("tracehouse_collector_writer_batches_already_stored_total") == 1
    counts = span_id_counts(chdb_store)
    assert sorted(counts) == sorted(i.hex() for i in ids) and set(counts.values()) == {1}
    # Same crash, but the insert had not happened: the replay writes it.
    chdb_store.query(f"TRUNCATE TABLE {chdb_store.db}.spans")
    Checkpoint(os.path.join(buf, "checkpoint.json")).save(start, (start, end))
    wal = Wal(buf)
    writer = Writer(wal, chdb_store, Registry(), Redactor(), max_age=0.05)
    wal.start()
    writer.start()
    deadline = time.monotonic() + 20
    while writer.stored["traces"] < 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    writer.stop(2)
    wal.stop()
    assert set(span_id_counts(chdb_store).values()) == {1} and len(span_id_counts(chdb_store)) == 50


def test_an_idle_writer_waits_instead_of_spinning(chdb_store, tmp_path):
    """After a start (or a segment roll) the log ends at offset 0 of an empty segment while the
    cursor sits at the end of the previous one: the same place. The writer must see no data and
    sleep, not poll in a loop (it once burnt a whole core while the collector was idle)."""
    buf = str(tmp_path)
    wal = Wal(buf)
    wal.start()
    req, _ = traces(20)
    end = _append(wal, 1, 20, req.SerializeToString())
    wal.stop()
    wal = Wal(buf)  # reopened: rolls to a new, empty segment
    wal.start()
    assert wal.durable_end[1] == 0 and wal.durable_end[0] > end[0]
    writer = Writer(wal, chdb_store, Registry(), Redactor(), max_age=0.05)
    writer.start()
    deadline = time.monotonic() + 20
    while writer.stored["traces"] < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.stored["traces"] == 20
    assert writer.caught_up.wait(5)
    time.sleep(0.3)  # let it settle into waiting
    t0 = time.monotonic()
    calls = {"n": 0}
    orig = wal.read

    def counting_read(*a, **k):
        calls["n"] += 1
        return orig(*a, **k)

    wal.read = counting_read
    time.sleep(1.0)
    idle_s = time.monotonic() - t0
    writer.stop(2)
    wal.stop()
    # waiting wakes every 0.2 s at most; a spinning writer reads thousands of times a second
    assert calls["n"] <= 2 * idle_s / 0.2 + 2, calls
    assert writer.caught_up.is_set()


def test_records_that_waited_in_the_log_are_not_held_another_max_age(chdb_store, tmp_path):
    """A batch closes ``max_age`` after its first record became durable, not only after the writer
    first read it: records that waited while the previous batch was being stored (here: before
    the writer started) are stored as soon as the writer has read what there is, not ``max_age``
    later (the ingest benchmark's last batch used to sit a whole second with nothing to wait for)."""
    wal = Wal(str(tmp_path))
    wal.start()
    req, ids = traces(40)
    _append(wal, 1, 40, req.SerializeToString())
    max_age = 1.0
    time.sleep(max_age)  # the record is as old as a batch may get
    writer = Writer(wal, chdb_store, Registry(), Redactor(), max_age=max_age)
    t0 = time.monotonic()
    writer.start()
    deadline = t0 + 20
    while writer.stored["traces"] < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    took = time.monotonic() - t0
    writer.stop(2)
    wal.stop()
    assert writer.stored["traces"] == 40 and len(span_id_counts(chdb_store)) == 40
    assert took < max_age / 2, took


def _records(wal: Wal) -> list:
    return wal.read((0, 0), 10**9, 10**9)


def test_a_replayed_range_of_two_batches_is_cut_where_the_first_attempt_cut_it(chdb_store, tmp_path):
    """Two batches stored side by side are pending as one range with a cut; after a crash the
    replay must rebuild the same two batches (ids and deduplication tokens derive from each
    batch's first record), not one batch under the first one's id: that one could not be
    recognised where only the second batch had landed."""
    buf = str(tmp_path)
    wal = Wal(buf)
    wal.start()
    for _ in range(4):
        _append(wal, 1, 50, traces(50)[0].SerializeToString())
    recs = _records(wal)
    wal.stop()
    start, cut, end = recs[0].pos, recs[2].pos, recs[-1].end
    Checkpoint(os.path.join(buf, "checkpoint.json")).save(start, (start, end), [cut])  # the crash
    wal = Wal(buf)
    writer = Writer(wal, chdb_store, Registry(), Redactor(), max_age=0.05)
    wal.start()
    writer.start()
    deadline = time.monotonic() + 20
    while writer.stored["traces"] < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    writer.stop(2)
    wal.stop()
    got = dict(chdb_store.query(f"SELECT batch_id, count() FROM {chdb_store.db}.spans GROUP BY batch_id").rows)
    assert got == {batch_id_for(wal.ident, start): 100, batch_id_for(wal.ident, cut): 100}
    assert Checkpoint(os.path.join(buf, "checkpoint.json")).load() == (end, None)


def test_a_backlog_is_stored_two_batches_side_by_side_exactly_once(chdb_store, tmp_path):
    """With native decoders of two lanes and a backlog behind a batch, the next batch is stored
    beside it on the second lane; every span once, the checkpoint at the end."""
    from tracehouse.collector.convert import Limits
    from tracehouse.collector.native import NativeTraces

    buf = str(tmp_path / "buffer")
    wal = Wal(buf)
    wal.start()
    ids = []
    for _ in range(8):
        req, got = traces(50)
        ids += got
        _append(wal, 1, 50, req.SerializeToString())
    end = _records(wal)[-1].end
    m = Registry()
    nt = NativeTraces(chdb_store, Redactor(), Limits(), str(tmp_path / "schemas"), lanes=2)
    writer = Writer(wal, chdb_store, m, Redactor(), max_age=0.05, native=nt, native_max_items=100,
                    native_max_bytes=40_000)
    writer.start()
    deadline = time.monotonic() + 30
    while writer.stored["traces"] < 400 and time.monotonic() < deadline:
        time.sleep(0.02)
    writer.stop(2)
    wal.stop()
    assert m.get("tracehouse_collector_writer_batches_side_by_side_total") >= 1
    counts = span_id_counts(chdb_store)
    assert sorted(counts) == sorted(i.hex() for i in ids) and set(counts.values()) == {1}
    assert Checkpoint(os.path.join(buf, "checkpoint.json")).load() == (end, None)


def test_the_ingest_lanes_setting_reaches_the_native_decoders(chdb_store, tmp_path):
    """One lane unless TRACEHOUSE_INGEST_LANES asks for two (more is cut to two: the writer
    stores at most two batches side by side)."""
    from tracehouse.collector.build import native_decoder
    from tracehouse.config import load_settings

    for env, want in (({}, 1), ({"TRACEHOUSE_INGEST_LANES": "2"}, 2), ({"TRACEHOUSE_INGEST_LANES": "9"}, 2)):
        settings = load_settings(environ={"TRACEHOUSE_BUFFER_DIR": str(tmp_path), **env})
        decoders = native_decoder(settings, chdb_store, Redactor(), None)
        assert [d.lanes for d in decoders] == [want, want], env
        assert Writer(Wal(str(tmp_path / "wal")), chdb_store, Registry(), Redactor(), native=decoders)._lanes() == want


def test_auto_stores_small_native_batches_through_python_and_large_ones_through_the_engine(chdb_store, tmp_path):
    """A native insert costs the engine a fixed ≈ 0.25 CPU-s (analysing its statements): a batch of
    fewer than ``native_min_items`` is converted by Python instead, the same rows either way; a
    larger one goes to the engine. ``decoder = auto`` sets the threshold, ``native`` does not."""
    from tracehouse.collector.build import create_collector
    from tracehouse.collector.convert import Limits
    from tracehouse.collector.native import NativeTraces
    from tracehouse.collector.writer import NATIVE_MIN_ITEMS
    from tracehouse.config import load_settings

    buf = str(tmp_path / "buffer")
    wal = Wal(buf)
    wal.start()
    m = Registry()
    nt = NativeTraces(chdb_store, Redactor(), Limits(), str(tmp_path / "schemas"))
    writer = Writer(wal, chdb_store, m, Redactor(), max_age=0.05, native=nt, native_min_items=5_000)
    small = "tracehouse_collector_native_small_batches_total"
    ids = []
    try:
        req, got = traces(300)
        ids += got
        _append(wal, 1, 300, req.SerializeToString())
        writer.start()
        deadline = time.monotonic() + 30
        while writer.stored["traces"] < 300 and time.monotonic() < deadline:
            time.sleep(0.02)
        writer.stop(5)
        assert writer.stored["traces"] == 300
        assert m.get(small, signal="traces") == 1
        for _ in range(20):  # 6,000 spans waiting when the writer starts again: one batch
            req, got = traces(300)
            ids += got
            _append(wal, 1, 300, req.SerializeToString())
        writer = Writer(wal, chdb_store, m, Redactor(), max_age=0.05, native=nt, native_min_items=5_000)
        writer.start()
        deadline = time.monotonic() + 60
        while writer.stored["traces"] < 6_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        writer.stop(5)
    finally:
        wal.stop()
    assert writer.stored["traces"] == 6_000
    assert m.get(small, signal="traces") == 1  # the large batch went to the engine
    counts = span_id_counts(chdb_store)
    assert sorted(counts) == sorted(i.hex() for i in ids) and set(counts.values()) == {1}

    for decoder, want in (("auto", NATIVE_MIN_ITEMS), ("native", 0)):
        settings = load_settings(environ={"TRACEHOUSE_BUFFER_DIR": str(tmp_path / decoder),
                                          "TRACEHOUSE_DECODER": decoder})
        assert create_collector(settings, chdb_store).writer.native_min_items == want
