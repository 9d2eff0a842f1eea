"""What the collector's non-OTLP paths let through: /metrics and the agent command channel need the
ingest token whenever one is configured (open like OTLP otherwise, which the server allows only on
loopback), and no web page can poll an agent's commands."""

from __future__ import annotations

from tests.collector.harness import run_collector
from tests.support import oneshot
from tracehouse.storage import queries_snapshots as qsnap


def test_metrics_and_commands_need_the_ingest_token_when_one_is_configured(chdb_store, tmp_path):
    r = run_collector(chdb_store, str(tmp_path / "b"), ingest_tokens=["s3cret"], max_batch_age=0.1)
    try:
        for headers in ({}, {"authorization": "Bearer wrong"}):
            assert oneshot.get(r.url + "/metrics", headers=headers).status_code == 401
            assert oneshot.get(r.url + "/v1/tracehouse/commands?service=a&instance=i", headers=headers).status_code == 401
        ok = {"authorization": "Bearer s3cret"}
        m = oneshot.get(r.url + "/metrics", headers=ok)
        assert m.status_code == 200 and "tracehouse_collector_buffer_bytes" in m.text
        assert oneshot.get(r.url + "/v1/tracehouse/commands?service=a&instance=i", headers=ok).json() == {"commands": []}
        assert oneshot.get(r.url + "/healthz").status_code == 200 and oneshot.get(r.url + "/readyz").status_code == 200
    finally:
        r.stop()
    open_ = run_collector(chdb_store, str(tmp_path / "c"), max_batch_age=0.1)
    try:  # no token configured (loopback only): open, as documented
        assert oneshot.get(open_.url + "/metrics").status_code == 200
    finally:
        open_.stop()


def test_a_web_page_cannot_take_an_agents_commands(chdb_store, tmp_path):
    qsnap.create_request(chdb_store, "req-browser", "shop", "threads", reason="test", requested_by="ed")
    r = run_collector(chdb_store, str(tmp_path / "b"), max_batch_age=0.1)
    try:
        url = r.url + "/v1/tracehouse/commands?service=shop&instance=i-1"
        for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"},
                        {"sec-fetch-site": "same-site"}):
            assert oneshot.get(url, headers=headers).status_code == 403, headers
        got = oneshot.get(url).json()["commands"]  # the agent itself still gets it, once
        assert [c["id"] for c in got] == ["req-browser"]
        assert oneshot.get(url).json()["commands"] == []
    finally:
        r.stop()
