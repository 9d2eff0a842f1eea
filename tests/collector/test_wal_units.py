"""The small units the WAL and the writer are made of: positions, the checkpoint file, the retry
policy and its drop rule. Pure and fast (no store, no threads)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from tracehouse.collector.checkpoint import Checkpoint
from tracehouse.collector.retry_policy import MAX_DELAY, MAX_REJECTIONS, NATIVE_REJECTIONS, Backoff, Retries
from tracehouse.collector.wal import Wal
from tracehouse.collector.wal_format import Pos, encode, scan
from tracehouse.collector.writer import batch_id_for
from tracehouse.storage import StorageError, StorageUnavailable


def test_pos_orders_and_compares_as_the_pair_it_replaced():
    assert Pos(2, 0) > Pos(1, 10**9) and Pos(1, 5) < (1, 6) and Pos(3, 4) == (3, 4)
    assert sorted([Pos(2, 1), Pos(1, 9), Pos(2, 0)]) == [(1, 9), (2, 0), (2, 1)]
    assert hash(Pos(3, 4)) == hash((3, 4)) and {Pos(3, 4): 1}[(3, 4)] == 1
    assert Pos(3, 4).segment == 3 and Pos(3, 4).offset == 4
    seg, off = Pos(7, 8)
    assert (seg, off) == (7, 8)
    assert json.dumps(Pos(7, 8)) == "[7, 8]" and str(Pos(7, 8)) == "(7, 8)" == str((7, 8))
    # the batch id (a replay must find the same one) does not depend on the position's type
    assert batch_id_for("abc", Pos(7, 8)) == batch_id_for("abc", (7, 8))


def test_wal_positions_are_typed(tmp_path):
    wal = Wal(str(tmp_path))
    wal.start()
    done, got = threading.Event(), []
    for _ in range(2):
        wal.append(1, 1, b"x", lambda pos, err: (got.append(pos), len(got) == 2 and done.set()))
    assert done.wait(10) and all(type(p) is Pos for p in got)
    recs = wal.read((0, 0), 10, 1000)
    assert [r.pos for r in recs] == got and recs[0].end == recs[1].pos
    assert all(type(p) is Pos for r in recs for p in (r.pos, r.end))
    assert type(wal.durable_end) is Pos and type(wal.normalize((0, 0))) is Pos
    wal.stop()
    raw = encode(1, 2, b"abc") + encode(3, 4, b"") + b"\x01"
    found, valid = scan(raw)
    assert [(k, n) for _, _, k, n, _ in found] == [(1, 2), (3, 4)] and valid == len(raw) - 1


def test_checkpoint_file_format_is_unchanged(tmp_path):
    path = str(tmp_path / "checkpoint.json")
    cp = Checkpoint(path)
    assert cp.load() == ((0, 0), None)
    # a checkpoint written before positions had a type loads, as positions
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"done": [3, 120], "pending": [[3, 120], [4, 64]]}')
    done, pending = cp.load()
    assert done == Pos(3, 120) and type(done) is Pos and pending == ((3, 120), (4, 64))
    assert all(type(p) is Pos for p in pending)
    cp.save(Pos(4, 64), (Pos(4, 64), Pos(5, 0)))
    with open(path, encoding="utf-8") as f:  # the same fields, and a CRC an earlier version ignores
        assert f.read().startswith('{"done": [4, 64], "pending": [[4, 64], [5, 0]], "crc": ')
    cp.save(Pos(5, 0))
    with open(path, encoding="utf-8") as f:
        assert f.read().startswith('{"done": [5, 0], "pending": null, "crc": ')
    assert cp.load() == ((5, 0), None)


@pytest.mark.parametrize("damage", [
    lambda text: text.replace("[5, 0]", "[7, 0]", 1),  # valid JSON, a digit changed: read as done at (7, 0)
    lambda text: '{"done": [1, "x"], "pending": null}',  # not a position: TypeError further on
    lambda text: '{"done": [-1, 0], "pending": null}',
])
def test_a_checkpoint_damaged_into_other_valid_json_is_replaced_by_its_copy(tmp_path, damage):
    path = str(tmp_path / "checkpoint.json")
    cp = Checkpoint(path)
    cp.save(Pos(5, 0))
    with open(path, encoding="utf-8") as f:
        text = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(damage(text))
    assert cp.load() == ((5, 0), None)  # from the copy
    assert os.path.exists(path + ".damaged")


def test_a_missing_checkpoint_beside_its_copy_is_taken_from_the_copy(tmp_path):
    """A checkpoint.json deleted by hand: the buffer was stored again from its first record (every
    span of it twice on a server without insert deduplication); its copy holds where it was."""
    path = str(tmp_path / "checkpoint.json")
    Checkpoint(path).save(Pos(5, 0), (Pos(5, 0), Pos(6, 10)))
    os.remove(path)
    assert Checkpoint(path).load() == ((5, 0), ((5, 0), (6, 10)))
    assert os.path.exists(path)  # written again
    os.remove(path)
    os.remove(path + ".copy")
    assert Checkpoint(path).load() == ((0, 0), None)  # neither: a fresh buffer


def test_backoff_doubles_up_to_the_cap():
    b = Backoff(0.2)
    assert [b.next() for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, MAX_DELAY, MAX_DELAY]


def test_retry_policy_drop_rule():
    r = Retries(0.1)
    for _ in range(50):  # an unavailable store is waited out, never dead-lettered
        kind = r.failed(StorageUnavailable("down"))
        assert kind == "unavailable" and not r.give_up(kind) and not r.python_instead(kind)
    r.next_part()
    kinds = [r.failed(StorageError("rejected")) for _ in range(MAX_REJECTIONS)]
    assert kinds == ["rejected"] * MAX_REJECTIONS and r.give_up("rejected")
    assert not r.give_up("unavailable")
    r.next_part()  # the next part counts its own rejections
    for i in range(1, MAX_REJECTIONS):
        kind = r.failed(ValueError("bad"))
        assert not r.give_up(kind) and r.python_instead(kind) == (i >= NATIVE_REJECTIONS)
    assert r.give_up(r.failed(ValueError("bad")))
    assert r.backoff.next() == 0.1  # the wait grows only when the writer waits


def test_a_retry_checked_while_the_window_loads_waits_for_it(tmp_path):
    """After a restart the writer may journal a replayed segment (which loads the window) while a
    client's retry is checked: the retry must see the whole window, not a half-loaded one."""
    import threading

    from tracehouse.collector.dedup import RecentRequests, digest_of

    d = digest_of(1, b"a request acknowledged before the restart")
    before = RecentRequests(str(tmp_path))
    before.add(d)
    before.persist([d])
    entered, gate = threading.Event(), threading.Event()

    def wal_digests():
        entered.set()
        gate.wait(5)
        return []

    after = RecentRequests(str(tmp_path), source=wal_digests)
    journalling = threading.Thread(target=after.persist, args=([],))
    journalling.start()
    assert entered.wait(5)
    threading.Timer(0.3, gate.set).start()
    assert after.seen(d)
    journalling.join()


def test_digests_of_a_deleted_segment_stay_in_the_window_when_it_loads_then(tmp_path):
    """The WAL hands a segment's digests over (and drops them from its own list) before deleting
    it; if that is the window's first use, they must still be known afterwards."""
    from tracehouse.collector.dedup import RecentRequests, digest_of

    d = digest_of(1, b"in the first segment replayed after a restart")
    recent = RecentRequests(str(tmp_path), source=lambda: [])  # the WAL no longer lists it
    recent.persist([d])
    assert recent.seen(d)
