"""Hostile texts against a real ``tracehouse serve`` (embedded chDB) holding spans the OpenTelemetry
SDK sent it, as an anonymous client on loopback with httpx: patterns that cost a Python regular
expression time quadratic in their length, and values long enough that an answer quoting them whole
is mostly the value."""

from __future__ import annotations

import time

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.ops.helpers import Role


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    role = Role(tmp_path_factory.mktemp("patterns"))
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=role.endpoint + "/v1/traces",
                                                                     timeout=10)))
    tracer = provider.get_tracer("patterns")
    try:
        for i in range(20):
            with tracer.start_as_current_span("GET /cart", attributes={"request.id": f"r-{i}"}):
                pass
        provider.shutdown()
        with httpx.Client(base_url=role.api, timeout=30) as c:
            deadline = time.monotonic() + 60
            while len(c.get("/api/traces", params={"service": "checkout", "since": "1h"}).json()["traces"]) < 20:
                assert time.monotonic() < deadline, role.output()
                time.sleep(0.2)
            yield role, c
    finally:
        role.stop()


def test_a_rule_duration_of_many_digits_is_refused_at_once(served):
    """A duration text was split by ``re.findall`` over ``(\\d+(?:\\.\\d+)?)(ms|s|m|h|d|w)``, quadratic in
    a run of digits: 10,000 took 5 s and 30,000 45 s of the process's time, holding the interpreter
    that the collector and the dashboard share; a 1 MiB body would have held it for days. Before,
    this request got no answer within the client's 30 s."""
    role, c = served
    for field in ("for", "interval", "window", "keep_firing_for"):
        r = c.post("/api/alerts/rules", json={"alert": "Slow", "kind": "red", "service": "checkout",
                                              "signal": "p95", "threshold": 1, field: "1" * 100_000})
        assert r.status_code == 400, (field, r.status_code, r.text[:300])
        assert "at most 64 characters" in r.json()["error"] and len(r.content) < 1000, r.text[:300]
    assert c.get("/api/alerts/rules").status_code == 200
    found = c.get("/api/traces", params={"service": "checkout", "since": "1h", "attr": "request.id=r-3"}).json()
    assert [t["root_service"] for t in found["traces"]] == ["checkout"]


def test_error_answers_quote_a_long_value_by_its_ends(served):
    """A refused value came back whole: a 12,000-character attribute filter made a 12 kB JSON
    answer and an HTML page quoting all of it. Now the reason keeps 200 characters of each end."""
    role, c = served
    value = "k" * 6000 + "MIDDLE" + "k" * 6000
    r = c.get("/api/traces", params={"attr": value, "since": "1h"})
    assert r.status_code == 400
    reason = r.json()["error"]
    assert reason.startswith("bad attribute filter 'kkk") and "…" in reason and "MIDDLE" not in reason
    assert reason.endswith("key<n or 'key exists'") and len(reason) <= 401
    page = c.get("/traces", params={"attr": value, "since": "1h"})
    assert page.status_code == 400 and "MIDDLE" not in page.text and "k" * 201 not in page.text
    assert "bad attribute filter" in page.text
    # an HTTPException's detail (the alerts API) passes the same cut
    r = c.post("/api/alerts/rules", json={"alert": "X", "kind": "red", "signal": "s" * 20_000})
    assert r.status_code == 400 and "signal" in r.json()["error"] and len(r.content) < 1000, r.text[:300]
    # a short reason is left whole
    r = c.get("/api/traces", params={"attr": "novalue", "since": "1h"})
    assert r.status_code == 400 and "…" not in r.json()["error"] and "'novalue'" in r.json()["error"]
