"""A stand-in for an external bank API (not instrumented: it is somebody else's system)."""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # health
        self._send(200, {"status": "ok"})

    def do_POST(self) -> None:  # authorise a charge
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(min(length, 65536))
        self._send(200, {"authorised": True})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    port = int(sys.argv[1])
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
