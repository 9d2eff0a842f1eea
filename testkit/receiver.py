"""A real HTTP server on loopback recording the JSON bodies POSTed to it: a webhook receiver for alert
notification tests and the alert latency bench."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Receiver"]


class Receiver:
    """A real HTTP server on loopback recording JSON POSTs; ``status`` sets its answer,
    ``down()``/``up()`` close and reopen its port."""

    def __init__(self, status: int = 200, location: str = ""):
        self.bodies: list[dict] = []
        self.times: list[float] = []
        self.status, self.location = status, location
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self.up()

    def up(self) -> None:
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                if outer.status < 300:
                    outer.bodies.append(json.loads(body))
                    outer.times.append(time.monotonic())
                self.send_response(outer.status)
                if outer.location:
                    self.send_header("Location", outer.location)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"
