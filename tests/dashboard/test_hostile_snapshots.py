"""Snapshot records are written by whoever holds an ingest token: their bodies are hostile until
read. Found by sending such records through a running server, once: a body nested 5,000 deep, a
``\\ud800`` escape (a lone surrogate), a size that was an object and a frame line that was a list
each made the snapshot list, the flame graph and the snapshot's own page answer 500, for every
viewer, for as long as the record was in the time range."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from fastapi.testclient import TestClient

from testkit.seed import snapshot_records
from tracehouse.dashboard import create_app

SERVICE = "snapfuzz"
BODIES = {
    "deep array": "[" * 5000 + "]" * 5000,
    "deep threads": '{"kind": "threads", "threads": ' + "[" * 3000 + "]" * 3000 + "}",
    "nested 900 deep": "[" * 900 + "]" * 900,
    "lone surrogates": '{"kind": "threads", "reason": "\\ud800", "threads": [{"name": "\\udc00x", "id": 1, '
                       '"stack": [{"file": "\\ud800.py", "line": 1, "function": "\\ud800", "code": "x"}]}]}',
    "a lone surrogate in a key": '{"kind": "memory", "\\ud800": 1, "memory": {"rss": 5, "top": '
                                 '[{"file": "\\ud83d", "line": 2, "size": 3, "count": 1}]}}',
    "wrong types": '{"kind": 5, "threads": [{"name": null, "stack": [null, 1, "x", {"line": "NaN", "file": []}]}], '
                   '"memory": {"rss": "big", "top": [1, {"size": {}}]}, "groups": 7}',
    "lists and objects where numbers go": '{"kind": "threads", "threads": [{"name": [1], "stack": [{"file": "a", '
                                          '"line": [1], "function": {"x": 1}}, {"line": {"a": 1}}]}], "memory": '
                                          '{"rss": [1], "growth": [{"size_diff": "x", "count_diff": [], "line": {}}]}}',
    "a number past a double": '{"kind": "threads", "threads": [{"name": "a", "id": 1e999, "stack": '
                              '[{"file": "a", "line": 1e400, "function": "f"}]}]}',
    "a 3,000-frame stack": json.dumps({"kind": "threads", "threads": [{"name": "t", "stack": [
        {"file": f"f{i}.py", "line": i, "function": "g"} for i in range(3000)]}]}),
}


def test_no_snapshot_body_makes_a_page_answer_500(chdb_store):
    ids = dict(zip(BODIES, snapshot_records(chdb_store, time.time_ns(), SERVICE, list(BODIES.values()))))
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)
    with TestClient(app, raise_server_exceptions=False) as c:
        for path in ("/snapshots?since=1h", f"/snapshots?service={SERVICE}&since=1h",
                     f"/flamegraph?service={SERVICE}&since=1h"):
            r = c.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
        for what, sid in ids.items():
            r = c.get(f"/snapshots/{sid}")
            assert r.status_code == 200, (what, r.status_code, r.text[:300])
        # a body the page cannot read is shown as the text that was sent, with the reason
        page = c.get(f"/snapshots/{ids['lone surrogates']}").text
        assert "body is not JSON" in page and "\\ud800.py" in page
        # a body it can read but not write back out (nested past 255) is shown as sent, too
        assert "[[[[" in c.get(f"/snapshots/{ids['nested 900 deep']}").text


def test_a_snapshot_page_shows_a_bounded_part_of_a_huge_body(chdb_store):
    """A body under the collector's 1 MiB cap made a 17 MB page (200,000 one-letter frames: every
    frame listed, the whole body pretty-printed) and 2,000 distinct stacks a 10 MB one. Each stack
    now shows its innermost 256 frames, the page the 50 biggest stack groups and 256 KiB of the raw
    body, each saying what it left out."""
    bodies = [json.dumps({"kind": "threads", "threads": [{"name": "t", "stack": ["a"] * 200_000}]}),
              json.dumps({"kind": "threads", "threads": [{"name": f"w{i}", "stack": [f"f{i}"] + ["a"] * 60}
                                                         for i in range(2000)]})]
    assert all(len(b) < 1 << 20 for b in bodies)
    deep, wide = snapshot_records(chdb_store, time.time_ns(), SERVICE, bodies)
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)
    with TestClient(app, raise_server_exceptions=False) as c:
        page = c.get(f"/snapshots/{deep}")
        assert page.status_code == 200 and len(page.content) < 1_000_000, len(page.content)
        assert "outer frames not shown" in page.text and "199744 frames" in page.text
        assert 'id="raw-cut"' in page.text
        page = c.get(f"/snapshots/{wide}")
        assert page.status_code == 200 and len(page.content) < 1_000_000, len(page.content)
        assert "Threads by stack (2000 distinct)" in page.text
        assert "1950 more distinct stacks, with fewer threads each, not shown." in page.text
        flame = c.get(f"/flamegraph?service={SERVICE}&since=1h")
        assert flame.status_code == 200 and "outer frames not shown" in flame.text


def test_the_snapshot_request_api_answers_whatever_body_its_snapshots_carry(chdb_store):
    """``GET /api/snapshots/{id}`` read the bodies of the snapshots answering a request with the
    standard library's parser: a body nested 5,000 deep (RecursionError), a ``\\ud800`` escape (a
    lone surrogate the answer cannot encode) and a number past a double (inf, not JSON) each made it
    answer 500, for every viewer. A body that is not JSON the API can carry is given as sent."""
    from testkit.seed import log_row

    app = create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)
    with TestClient(app, raise_server_exceptions=False) as c:
        for what, body in {**BODIES, "nested 251 deep": "[" * 251 + "]" * 251, "nested 252 deep": "[" * 252 + "]" * 252}.items():
            r = c.post("/api/snapshots", json={"service": SERVICE, "kind": "threads"})
            assert r.status_code == 201, r.text
            rid = r.json()["id"]
            cols = chdb_store.columns_for("logs")
            log_row(cols, time.time_ns() + 1_000_000, SERVICE, "tracehouse.snapshot", body,
                    {"snapshot.kind": "threads", "snapshot.request_id": rid}, (13, "WARN"))
            chdb_store.insert("logs", cols)
            r = c.get(f"/api/snapshots/{rid}")
            assert r.status_code == 200, (what, r.status_code, r.text[:300])
            got = r.json()
            assert got["status"] == "captured" and len(got["snapshots"]) == 1, what
            snap = got["snapshots"][0]
            if what in ("deep array", "deep threads", "nested 900 deep", "nested 252 deep", "lone surrogates",
                        "a lone surrogate in a key", "a number past a double"):
                assert snap["body"] == body, what  # as sent
            else:
                assert snap["body"] == json.loads(body), what


def test_reading_a_request_back_reads_only_the_time_its_snapshots_can_have(store):
    """``GET /api/snapshots/{id}`` (and ``/snapshots/{id}``) looked for the request's snapshots from
    a minute before it up to any time: an old request's id scanned every log record stored since.
    Its snapshots are now read up to ``ANSWER_WINDOW_S`` after it: a record that claims to answer
    it a day later is not one of them (the request had expired)."""
    from testkit.seed import log_row
    from tracehouse.storage import queries_snapshots as qsnap

    ns, rid = 1_000_000_000, "0123456789abcdef" * 2
    asked = time.time_ns() - 2 * 86400 * ns
    qsnap.create_request(store, rid, SERVICE, "threads", now_ns=asked)
    cols = store.columns_for("logs")
    for at, body in ((asked + 30 * ns, "answer"), (asked + (qsnap.ANSWER_WINDOW_S - 1) * ns, "late answer"),
                     (asked + 86400 * ns, "a day later")):
        log_row(cols, at, SERVICE, "tracehouse.snapshot", json.dumps({"kind": "threads", "note": body}),
                {"snapshot.kind": "threads", "snapshot.request_id": rid}, (13, "WARN"))
    store.insert("logs", cols)
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), store)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get(f"/api/snapshots/{rid}")
        assert r.status_code == 200, r.text
        assert [s["body"]["note"] for s in r.json()["snapshots"]] == ["late answer", "answer"]
        r = c.get(f"/snapshots/{rid}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/snapshots/{asked + 30 * ns}-{SERVICE}"
