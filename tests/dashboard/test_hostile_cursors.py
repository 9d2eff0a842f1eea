"""The log search's ``cursor`` (``<ts_ns>-<skip>``, the ``next`` of the previous page) is the
client's to send: one the search did not make answers 400 with a reason, and a cursor's skip costs
no more than the records it skips. A skip of a billion was accepted: the page query then read and
sorted every column of every record in the range to answer an empty page."""

from __future__ import annotations

import time
from types import SimpleNamespace

from fastapi.testclient import TestClient

from testkit.seed import log_row
from tracehouse.dashboard import create_app
from tracehouse.storage import queries_logs as ql

NS = 1_000_000_000
BURST = ql.MAX_PAGE * 2 + 200  # records sharing one nanosecond: paging through them skips past a page


def _seed(store) -> int:
    ts = time.time_ns() - 30 * NS
    cols = store.columns_for("logs")
    for i in range(BURST):
        log_row(cols, ts, "burst", "", f"line {i}", {"i": i})
    for i in range(5):
        log_row(cols, ts - (i + 1) * NS, "burst", "", f"older {i}", {})
    store.insert("logs", cols)
    return ts


def test_a_cursor_skips_only_records_that_exist_at_its_time(store):
    ts = _seed(store)
    app = create_app(SimpleNamespace(users={}, api_tokens=[]), store)
    with TestClient(app, raise_server_exceptions=False) as c:
        seen, cursor, pages = [], None, 0
        while True:
            params = {"since": "5m", "service": "burst", "limit": ql.MAX_PAGE} | ({"cursor": cursor} if cursor else {})
            r = c.get("/api/logs/search", params=params)
            assert r.status_code == 200, r.text
            seen += [x["body"] for x in r.json()["logs"]]
            pages += 1
            cursor = r.json()["next"]
            if cursor is None:
                break
        assert pages == 3 and len(seen) == BURST + 5 == len(set(seen))
        assert seen[-5:] == [f"older {i}" for i in range(5)]

        for bad in (f"{ts}-999999999", f"{ts}-{BURST + 1}", f"{ts + 1}-{ql.MAX_PAGE + 1}",
                    "99999999999999999999-0", f"{2**64}-0"):
            r = c.get("/api/logs/search", params={"since": "5m", "cursor": bad})
            assert r.status_code == 400 and "bad cursor" in r.json()["error"], (bad, r.status_code, r.text)
            page = c.get("/logs", params={"since": "5m", "cursor": bad})
            assert page.status_code == 400 and "bad cursor" in page.text, (bad, page.status_code)
        # a skip of at most a page's worth is not checked (it costs no more than the page itself)
        r = c.get("/api/logs/search", params={"since": "5m", "cursor": f"{ts + 1}-{ql.MAX_PAGE}"})
        assert r.status_code == 200 and len(r.json()["logs"]) == 100
        r = c.get("/api/logs/search", params={"since": "5m", "cursor": f"{2**64 - 1}-0", "limit": 3})
        assert r.status_code == 200 and len(r.json()["logs"]) == 3
