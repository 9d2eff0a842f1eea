"""The OpenTelemetry JS SDK's OTLP/gRPC trace exporter (from npm, run by node) sends a trace across
three services: stored as one trace with the right parents, edges on the service map.

The npm packages live in tests/collector/js (package.json and its lockfile); .ci/run installs them
with ``npm ci``, and this module does the same when node_modules is missing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.collector import node_clients
from tests.collector.harness import run_collector
from tracehouse.config import Settings
from tracehouse.dashboard import create_app

TOKEN = "js-token"


@pytest.fixture(scope="module")
def node_project() -> Path:
    return node_clients.node_project()


def test_js_grpc_exporter_multi_service_trace(node_project, chdb_store, tmp_path):
    r = run_collector(chdb_store, str(tmp_path / "buffer"), grpc=True, ingest_tokens=[TOKEN], max_batch_age=0.2)
    try:
        out = subprocess.run(["node", str(node_project / "send_trace.js"), r.grpc_target, TOKEN],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        sent = json.loads(out.stdout.strip().splitlines()[-1])
        r.wait_stored("traces", 5)
        # a wrong token: every export fails (UNAUTHENTICATED), nothing more is stored
        bad = subprocess.run(["node", str(node_project / "send_trace.js"), r.grpc_target, "wrong"],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "UNAUTHENTICATED" in bad.stdout.upper() + bad.stderr.upper()
    finally:
        r.stop()
    assert r.collector.writer.stored["traces"] == 5
    with TestClient(create_app(Settings(), chdb_store)) as client:
        t = client.get(f"/api/traces/{sent['traceId']}").json()
        smap = client.get("/api/service-map?since=1h").json()
    assert t["span_count"] == 5 and t["services"] == ["js-cart", "js-frontend", "js-payments"]
    got = {f"{s['service']} {s['name']}": s for s in t["spans"]}
    assert set(got) == set(sent["spans"])
    for key, ids in sent["spans"].items():
        assert got[key]["span_id"] == ids["spanId"]
        assert (got[key]["parent_span_id"] or "") == ids["parentSpanId"], key
    assert got["js-cart GET /cart"]["parent_span_id"] == got["js-frontend GET /cart"]["span_id"]
    assert got["js-payments POST /pay"]["status"] == {"code": "error", "message": "declined"}
    assert got["js-payments POST /pay"]["events"][0]["name"] == "card declined"
    assert got["js-frontend GET /checkout"]["resource"]["telemetry.sdk.language"] == "nodejs"
    edges = {(e["source"], e["target"]) for e in smap["edges"]}
    assert {("js-frontend", "js-cart"), ("js-cart", "js-payments")} <= edges
