"""The demo's fault schedule sends its own report request into every hang window, so the
slow-request snapshot does not depend on the random traffic mix reaching a 4-second window."""

from __future__ import annotations

from tests.support.pages import serving_pages
from tracehouse.demo.chaos import CYCLE_S
from tracehouse.demo.launcher import DemoShop
from tracehouse.demo.traffic import Traffic


def test_one_report_request_in_every_hang_window(tmp_path):
    seen: list[str] = []
    with serving_pages({"/api/report": (b"{}", "application/json")}, seen) as port:
        shop = DemoShop(endpoint="http://127.0.0.1:9", data_dir=str(tmp_path))
        shop.traffic = Traffic(port)
        t0 = shop.started
        sent = [shop._report_tick(t0 + s) for s in (5, 20.5, 21.5, 23.9, 30, CYCLE_S + 20.2, CYCLE_S + 22)]
        assert [t is not None for t in sent] == [False, True, False, False, False, True, False]
        for t in sent:
            if t is not None:
                t.join(10)
        assert seen == ["/api/report", "/api/report"]
        assert shop.traffic.sent == 2 and shop.traffic.failed == 0
