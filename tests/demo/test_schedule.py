"""The demo's fault schedule sends its own report request into every hang window, so the
slow-request snapshot does not depend on the random traffic mix reaching a 4-second window."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tracehouse.demo.chaos import CYCLE_S
from tracehouse.demo.launcher import DemoShop
from tracehouse.demo.traffic import Traffic


def test_one_report_request_in_every_hang_window(tmp_path):
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        shop = DemoShop(endpoint="http://127.0.0.1:9", data_dir=str(tmp_path))
        shop.traffic = Traffic(server.server_address[1])
        t0 = shop.started
        sent = [shop._report_tick(t0 + s) for s in (5, 20.5, 21.5, 23.9, 30, CYCLE_S + 20.2, CYCLE_S + 22)]
        assert [t is not None for t in sent] == [False, True, False, False, False, True, False]
        for t in sent:
            if t is not None:
                t.join(10)
        assert seen == ["/api/report", "/api/report"]
        assert shop.traffic.sent == 2 and shop.traffic.failed == 0
    finally:
        server.shutdown()
        server.server_close()
