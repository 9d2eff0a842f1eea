"""A steady OTLP load from a thread that remembers which spans were acknowledged."""

from __future__ import annotations

import threading
import time

import httpx

from tests.collector.payloads import traces


class Load:
    def __init__(self, url: str, spans_per_request: int = 200, pause: float = 0.01):
        self.url = url + "/v1/traces"
        self.n = spans_per_request
        self.pause = pause
        self.acked: list[bytes] = []  # 200 OK: must be stored exactly once
        self.unknown: list[bytes] = []  # connection lost mid-request: stored at most once
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def wait_acked(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.acked)} spans acknowledged; statuses {self.statuses}")
            time.sleep(0.02)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                req, ids = traces(self.n)
                body = req.SerializeToString()
                while not self._stop.is_set():
                    try:
                        r = client.post(self.url, content=body, headers={"content-type": "application/x-protobuf"})
                    except httpx.HTTPError:
                        self.unknown.extend(ids)
                        self.statuses[0] = self.statuses.get(0, 0) + 1
                        time.sleep(0.1)
                        break
                    self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        self.acked.extend(ids)
                        break
                    if r.status_code in (429, 503):
                        assert int(r.headers["retry-after"]) >= 1
                        time.sleep(0.1)  # shorter than Retry-After, to keep the test quick
                        continue
                    raise AssertionError(f"unexpected {r.status_code}: {r.content[:200]!r}")
                time.sleep(self.pause)


def span_id_counts(store) -> dict[str, int]:
    rows = store.query(f"SELECT hex(span_id), count() FROM {store.db}.spans GROUP BY span_id").rows
    return {h.lower(): int(c) for h, c in rows}


def stored_span_counts(storage: str) -> dict[str, int]:
    """``span_id_counts`` of the store at ``storage`` (opened for it, after its collector stopped)."""
    from tracehouse.storage import Store

    store = Store.open(storage)
    try:
        return span_id_counts(store)
    finally:
        store.close()


def assert_exactly_once(store, load: Load) -> None:
    counts = span_id_counts(store)
    dup = {k: c for k, c in counts.items() if c > 1}
    assert not dup, f"{len(dup)} spans stored more than once"
    missing = [i.hex() for i in load.acked if i.hex() not in counts]
    assert not missing, f"{len(missing)} of {len(load.acked)} acknowledged spans were lost"
    allowed = {i.hex() for i in load.acked} | {i.hex() for i in load.unknown}
    assert set(counts) <= allowed
