"""Traffic for the demo shop: a few threads calling the gateway with a realistic mix."""

from __future__ import annotations

import http.client
import random
import threading

MIX = [("GET", "/api/products", 50), ("POST", "/api/orders", 35), ("GET", "/api/orders/{id}", 10),
       ("GET", "/api/report", 5)]


class Traffic:
    def __init__(self, port: int, rps: float = 12.0, threads: int = 4):
        self.port, self.rps, self.threads = port, rps, threads
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(random.Random(i),), name=f"demo-traffic-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def once(self, method: str, path: str) -> threading.Thread:
        """Sends one request on a thread of its own (the fault schedule's own calls, which must not
        depend on the random mix reaching a short window)."""
        def send() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            try:
                conn.request(method, path)
                conn.getresponse().read()
                self.sent += 1
            except (OSError, http.client.HTTPException):
                self.failed += 1
            finally:
                conn.close()

        t = threading.Thread(target=send, name="demo-traffic-scheduled", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=15)

    def _run(self, rng: random.Random) -> None:
        interval = self.threads / self.rps
        weights = [w for *_, w in MIX]
        conn = None
        while not self._stop.is_set():
            method, path, _ = rng.choices(MIX, weights)[0]
            path = path.replace("{id}", str(rng.randint(1, 500)))
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                conn.request(method, path, body=b"" if method == "POST" else None)
                conn.getresponse().read()
                self.sent += 1
            except (OSError, http.client.HTTPException):
                self.failed += 1
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.5)
            self._stop.wait(rng.expovariate(1 / interval))
        if conn is not None:
            conn.close()
