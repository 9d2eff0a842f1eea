"""The explorer's label chips link to a filter that selects exactly that label. Found by a prober:
keys ``le<5`` and ``x>y`` linked to a 400 ("'5=a' is not a number"), key ``k=v`` to a filter on
key ``k`` (0 series), a value of 1,200 characters to a 400 (the filter length limit)."""

from __future__ import annotations

import html
import re
import time
from types import SimpleNamespace

from fastapi.testclient import TestClient

from testkit.metricgen import point
from tracehouse.dashboard import create_app

NS = 1_000_000_000
LABELS = [("le<5", "a"), ("x>y", "b"), ("k=v", "c"), ("a!b", "d"), ("t~", "e"), (" sp ", "f"), ("=[x", "]"),
          ("ok", "Z" * 1200)]


def test_every_chip_link_selects_exactly_its_label(chdb_store):
    now = time.time_ns()
    cols = chdb_store.columns_for("metric_points")
    for i, (k, v) in enumerate(LABELS):
        point(cols, now - (10 + i) * NS, "chip-demo", "chip.gauge", {k: v}, value=float(i))
    point(cols, now - 30 * NS, "chip-demo", "chip.gauge", {"k": "v=c"}, value=50.0)  # what k=v=c selected
    point(cols, now - 31 * NS, "chip-demo", "chip.gauge", {"le": "x"}, value=51.0)
    chdb_store.insert("metric_points", cols)
    with TestClient(create_app(SimpleNamespace(users={}, api_tokens=[]), chdb_store)) as c:
        page = c.get("/explore?metric=chip.gauge&since=1h&attr=service%3Dchip-demo")  # a filter in place
        assert page.status_code == 200
        chips = page.text.split('id="label-keys"', 1)[1]
        hrefs = [html.unescape(h) for h in re.findall(r'<a href="(/explore\?[^"]*)"', chips)]
        hrefs = [h for h in hrefs if not re.search(r"attr=(service|instance|service\.name)%3D", h.split("&", 3)[-1])]
        seen = []
        for href in hrefs:
            assert href.count("attr=service%3Dchip-demo") == 1  # the filter in place is kept
            r = c.get(href.replace("/explore?", "/api/metrics/explore?", 1) + "&agg=max")
            assert r.status_code == 200, (href, r.text[:200])
            series = r.json()["series"]
            assert len(series) == 1, href
            seen.append(max(p[1] for p in series[0]["points"] if p[1] is not None))
            assert c.get(href).status_code == 200
        assert len(hrefs) == len(LABELS) + 2 - 1  # every label but the 1,200-character value
        assert "Z" * 200 not in chips and 'class="nolink"' in chips  # shown as text, cut
        # each chip selects its own point, none of the others (k=v=c selected key k's 50)
        assert sorted(seen) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 50.0, 51.0]
